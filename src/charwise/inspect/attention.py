"""Inside a Transformer: its attention weights over a short text. Computation only.

A Transformer carries no hidden state from character to character, so the LSTM's pictures (a
layer's h over a sentence, units that track the text) have nothing to show; what it does have is,
for every layer and head, which earlier characters each position draws on. Those weights come
from the model itself (CharTransformer.attention_maps: the softmax of the scaled scores, causal,
dropout off), for one window of at most `context` characters: a longer text is cut, and the cut
is said in the note. plots.attention_figure draws them; report.py and the notebook's Run use them
where they would show hidden units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cells import is_attention
from ..data.vocab import AnyVocab
from ..errors import CharwiseError


@dataclass
class AttentionMaps:
    weights: np.ndarray             # (layers shown, heads, T, T): row t is query t over keys 0..t
    layers: list[int]               # the model's index of each layer shown
    chars: list[str]                # (T,) the characters read, in order
    context: int                    # the model's context: the most characters one map can hold
    note: str = ""                  # a cut text, skipped characters: said out loud

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def text(self) -> str:
        return "".join(self.chars)


def check_transformer(net, what: str, instead: str = "the heatmap and the neuron view") -> None:
    """`what` (attention maps) needs a Transformer: a recurrent model is told what it has instead."""
    if not is_attention(net.cfg.cell):
        raise CharwiseError(f"{what}: a {net.cfg.cell.upper()} has no attention; its hidden units "
                            f"are drawn by {instead}")


def pick_layers(layer: int | None, layers: int) -> list[int]:
    """None: every layer; k (-layers..layers-1, -1 the top): that layer alone."""
    if layer is None:
        return list(range(layers))
    if not -layers <= layer < layers:
        raise CharwiseError(f"--layer must be in 0..{layers - 1} (or -1 for the top) for this "
                            f"model, got {layer}")
    return [layer + layers if layer < 0 else layer]


@torch.inference_mode()
def attention(net, vocab: AnyVocab, text: str, layer: int | None = None,
              oov: str = "error", what: str = "--text") -> AttentionMaps:
    """The attention weights of `net` (a CharTransformer) while reading `text`: every layer
    (layer None) or one, every head. At most `context` characters fit one map; a longer text is
    cut to its first `context` characters and the note says so."""
    check_transformer(net, "attention maps")
    layers = pick_layers(layer, net.cfg.layers)
    ids, skipped = vocab.encode_text(text, oov, what=what)
    notes = [f"{skipped} character(s) not in the vocabulary skipped"] if skipped else []
    C = int(net.context)
    if len(ids) > C:
        notes.append(f"cut to its first {C} of {len(ids)} characters: the model's context")
        ids = ids[:C]
    dev = next(net.parameters()).device
    x = torch.as_tensor(np.asarray(ids, np.int64), device=dev)               # (T,)
    maps = net.attention_maps(x)                                              # (L, heads, T, T)
    weights = maps[layers].float().cpu().numpy()                             # (layers shown, heads, T, T)
    return AttentionMaps(weights, layers, [vocab.chars[i] for i in ids], C, "; ".join(notes))
