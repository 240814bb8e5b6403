"""Inside the model: one layer's hidden or cell state over a text, unit orderings that make a
heatmap readable, and the units whose activation tracks a property of the text (quotes, line
starts, spaces...), with the model's top guesses for the neuron view. Computation only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cells import CELLS, is_attention
from ..data.vocab import AnyVocab, codepoints
from ..errors import CharwiseError
from ..generation.steps import FusedLSTMStep
from ..scoring import fp32_flags, recurrence_threads


@torch.inference_mode()
def layer_states(net, ids, layer: int = -1, kind: str = "h") -> np.ndarray:
    """(T, H): one layer's h (or LSTM cell state c) after reading each character, from zeros.

    The stacked nn.LSTM returns only the top layer's h per step, so each layer is re-run alone:
    a one-layer module of the same kind gets layer k's weights and layer k-1's outputs, which
    is what the stack computes in eval mode (no dropout). c is not returned at all; it is
    read off the fused sampling step (sample.FusedLSTMStep), run one character at a time
    (meant for sentences and excerpts). tests/test_analysis.py checks both against stepping
    the model's own rnn one character at a time."""
    if is_attention(net.cfg.cell):
        raise CharwiseError("a TRANSFORMER carries no hidden state from character to character, so "
                            "it has no units to draw; its attention maps show what it reads (charwise analyze; "
                            "run.attention(text) in a notebook)")
    cfg, rnn = net.cfg, net.rnn
    if not -cfg.layers <= layer < cfg.layers:
        raise CharwiseError(f"--layer must be in 0..{cfg.layers - 1} (or -1 for the top) for this "
                            f"model, got {layer}")
    layer = layer + cfg.layers if layer < 0 else layer
    if kind not in ("h", "c"):
        raise CharwiseError(f"--state must be h or c, got {kind!r}")
    if kind not in CELLS[cfg.cell].state:
        raise CharwiseError(f"--state c: a {cfg.cell.upper()} has no cell state (use h)")
    dev = next(net.parameters()).device
    if kind == "c":
        step, state, cs = FusedLSTMStep(net), net.zero_state(1, dev), []
        for j in np.asarray(ids, np.int64).reshape(-1):
            _, state = step(np.array([j]), state)
            cs.append(state[1][layer, 0])
        return torch.stack(cs).float().cpu().numpy()                 # (T, H)
    x = net.embed(torch.as_tensor(np.asarray(ids, np.int64), device=dev)[None])   # (1, T, E)
    extra = {"nonlinearity": rnn.nonlinearity} if cfg.cell == "rnn" else {}
    for k in range(layer + 1):
        w = {n: getattr(rnn, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        single = type(rnn)(w["weight_ih"].shape[1], cfg.hidden_size, 1, batch_first=True, **extra)
        single.load_state_dict({f"{n}_l0": v for n, v in w.items()})
        # IEEE fp32 as the c path's fused step: cuDNN's RNNs default to TF32 on a GPU
        with fp32_flags(dev, "fp32"):
            out, _ = single.to(dev)(x)                              # (1, T, H)
        if k < layer:
            x = out
    return out[0].float().cpu().numpy()                             # (T, H)


def cluster_order(acts: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering of the rows of `acts` (units, chars) under
    correlation distance 1 - r: units that rise and fall together end up in adjacent rows, so
    the heatmap shows bands instead of noise. O(U^2) per merge, fine for the <= 128 rows shown."""
    U = len(acts)
    with np.errstate(invalid="ignore", divide="ignore"):
        D = 1.0 - np.nan_to_num(np.corrcoef(acts))                # (U, U); a constant row: r = 0
    np.fill_diagonal(D, np.inf)
    members = {i: [i] for i in range(U)}
    for _ in range(U - 1):
        i, j = (int(a) for a in np.unravel_index(np.argmin(D), D.shape))
        ni, nj = len(members[i]), len(members[j])
        D[i, :] = D[:, i] = (ni * D[i] + nj * D[j]) / (ni + nj)   # average linkage
        D[i, i] = np.inf
        D[j, :] = D[:, j] = np.inf                                 # j is merged into i
        members[i] = members[i] + members.pop(j)
    return np.array(next(iter(members.values())))


def order_units(acts: np.ndarray, how: str = "cluster") -> np.ndarray:
    """Row order for a (units, chars) matrix so that structure shows: 'cluster' (similar units
    together), 'variance' (most active first) or 'none' (unit index)."""
    if how not in ("cluster", "variance", "none"):
        raise CharwiseError(f"--sort must be cluster, variance or none, got {how!r}")
    if how == "none":
        return np.arange(len(acts))
    if how == "variance" or len(acts) < 3 or acts.shape[1] < 2:
        return np.argsort(-acts.var(axis=1), kind="stable")
    return cluster_order(acts)


@dataclass
class Heatmap:
    data: np.ndarray                # (units, chars): row r is unit units[r]
    units: np.ndarray               # (units,)
    chars: list[str]
    layer: int
    kind: str
    sort: str
    total_units: int
    note: str = ""


def heatmap(net, vocab: AnyVocab, sentence: str, layer: int = -1, kind: str = "h",
            sort: str = "cluster", max_units: int = 128, oov: str = "error") -> Heatmap:
    ids, skipped = vocab.encode_text(sentence, oov, what="--text")
    acts = layer_states(net, ids, layer, kind).T                    # (H, T)
    H = len(acts)
    keep = np.arange(H)
    note = f"{skipped} character(s) not in the vocabulary skipped" if skipped else ""
    if H > max_units:                        # the most active units; the rest would be a smear
        keep = np.sort(np.argsort(-acts.var(axis=1), kind="stable")[:max_units])
        note = "; ".join(filter(None, [note, f"the {max_units} most variable of {H} units"]))
    units = keep[order_units(acts[keep], sort)]
    return Heatmap(acts[units], units, [vocab.chars[i] for i in ids],
                   layer + net.cfg.layers if layer < 0 else layer, kind, sort, H, note)


# ----------------------------------------------------------------------------- selective units

def text_features(text: str) -> dict[str, np.ndarray]:
    """(T,) float indicators of what the character just read is or where it sits; features
    that are constant over this text (nothing to correlate with) are left out."""
    cp = codepoints(text)
    uniq, inv = np.unique(cp, return_inverse=True)          # per distinct char, not per position
    alpha = np.array([chr(u).isalpha() for u in uniq])[inv]
    upper = np.array([chr(u).isupper() for u in uniq])[inv]
    punct = np.array([not (chr(u).isalnum() or chr(u).isspace()) for u in uniq])[inv]
    idx = np.arange(len(cp))
    nl = cp == 10
    since_nl = idx - np.maximum.accumulate(np.where(nl, idx, -1))
    since_word = idx - np.maximum.accumulate(np.where(alpha, -1, idx))
    feats = {
        "inside double quotes": (np.cumsum(cp == 34) % 2 == 1) if (cp == 34).any() else None,
        "just read a newline (line start)": nl,
        "just read a space (word start)": cp == 32,
        "inside a word (letter)": alpha,
        "capital letter": upper,
        "punctuation": punct,
        "position in the line": since_nl if nl.any() else None,
        "position in the word": since_word,
    }
    feats = {k: v.astype(np.float64) for k, v in feats.items() if v is not None}
    return {k: v for k, v in feats.items() if np.ptp(v) > 0}


def unit_correlations(acts: np.ndarray, feats: dict[str, np.ndarray]) -> np.ndarray:
    """(H, F) Pearson correlation of each unit's activation (acts is (T, H)) with each feature."""
    def z(a):
        sd = a.std(axis=0)
        return (a - a.mean(axis=0)) / np.where(sd > 0, sd, np.inf)   # constant -> 0
    F = np.stack(list(feats.values()), axis=1) if feats else np.zeros((len(acts), 0))
    return z(acts.astype(np.float64)).T @ z(F) / len(acts)


def selective_units(acts: np.ndarray, feats: dict[str, np.ndarray], top: int = 3) -> list[dict]:
    """For each feature, the `top` units whose activation tracks it best (by |r|)."""
    r = unit_correlations(acts, feats)
    out = []
    for j, name in enumerate(feats):
        for u in np.argsort(-np.abs(r[:, j]), kind="stable")[:top]:
            out.append({"feature": name, "unit": int(u), "r": float(r[u, j])})
    return out


@torch.inference_mode()
def next_guesses(net, ids, k: int = 5, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(top ids (T, k), their probabilities (T, k)): the guesses after reading each character."""
    dev = next(net.parameters()).device
    with recurrence_threads(net, threads):
        logits, _ = net(torch.as_tensor(np.asarray(ids, np.int64), device=dev)[None])
    p, top = torch.softmax(logits[0].float(), -1).topk(min(k, logits.shape[-1]), -1)
    return top.cpu().numpy(), p.cpu().numpy()
