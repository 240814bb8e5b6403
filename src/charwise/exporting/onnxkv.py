"""The Transformer's ONNX sampling step (`charwise export --format onnx` of a --cell transformer
run): one character in, its logits out, with the KV cache passed in and out explicitly, so a
caller outside Python samples exactly as CharTransformer.step does, sliding window included.

The inputs are CharTransformer.new_cache's layout (transformer.py), the batch first everywhere;
L = blocks, C = context, d = width / heads:

    inputs   x            int64  (batch, 1)               the next character's id
             k0, v0, ..., k{L-1}, v{L-1}
                          float  (batch, heads, C, d)     block k's keys and values
             tokens       int64  (batch, C)               the ids in the window's slots
             window       int64  (batch, 2)               [start, length], the same in every row
    outputs  logits       float  (batch, V)               scores for the character after x
             k0_out, ..., tokens_out, window_out          the cache to feed back

How a caller uses it: start with every cache input zero (window [0, 0]); per character run the
graph and feed every *_out back as the input of the same name; to prime, feed the prime's
characters one by one and keep the last logits. Nothing else: the slide happens inside the graph
(an ONNX If). When a character arrives and all C slots are full, the last keep = C // 2 chars
(charwise.keep in the metadata) are re-encoded at window positions 0..keep-1 and the new one
follows, exactly as CharTransformer.step with its default keep; so the logits for the char at
absolute index p are forward(text[s_p : p + 1])[-1] with s_p as in transformer.py's docstring.
All streams of a batch advance together (the If tests row 0's window).

Why not the model's own step: it slices the cache at a Python int (where the window ends), which
a graph cannot hold. Here the write position is the tensor window[:, 1] and the write a
`where` over the slots, so every shape is static (but the batch) and one graph serves every
position. Everything around that write is the model's own code: each block's norm, projections
and rotation (`Block.heads_of`) and its output and MLP (`Block.after_attention`); the slide
branch calls the model's `_extend` (its positions are constants).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..transformer import Block, CharTransformer, rope_tables


def kv_io_names(layers: int) -> tuple[list[str], list[str]]:
    """The graph's inputs and outputs (the module docstring's table)."""
    cache = [f"{a}{k}" for k in range(layers) for a in "kv"] + ["tokens", "window"]
    return ["x", *cache], ["logits", *(f"{s}_out" for s in cache)]


class KVStepGraph(torch.nn.Module):
    """CharTransformer.step for one character, the cache as plain tensors in and out."""

    def __init__(self, net: CharTransformer):
        super().__init__()
        self.net = net
        self.C, self.keep = net.context, net.context // 2       # CharTransformer.step's default

    def forward(self, x: torch.Tensor, *cache: torch.Tensor):
        """x (B, 1) int64, cache (2L + 2 tensors) -> (logits (B, V), *new cache)."""
        full = cache[-1][0, 1] == self.C
        cache = tuple(torch.cond(full, self._slide, self._same, tuple(cache)))
        return self._append(x, cache)

    @staticmethod
    def _same(*cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.clone() for t in cache)        # a branch must not return its inputs

    def _slide(self, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The window is full: re-encode its last `keep` chars into slots 0..keep-1."""
        C, keep = self.C, self.keep
        cache = tuple(t.clone() for t in cache)
        if keep:
            self.net._extend(cache[-2][:, C - keep:].clone(), cache, 0)   # writes the clones
        w = cache[-1]
        window = torch.stack([w[:, 0] + (C - keep), torch.full_like(w[:, 1], keep)], dim=1)
        return (*cache[:-1], window)

    def _append(self, x: torch.Tensor, cache: tuple[torch.Tensor, ...]):
        """x (B, 1) into slot n = window[:, 1] (< C here), attending over slots 0..n."""
        net = self.net
        window = cache[-1]
        n = window[:, 1:2]                                           # (B, 1)
        slots = torch.arange(self.C, device=x.device)
        at = slots[None, :] == n                                     # (B, C): the slot written
        tokens = torch.where(at, x, cache[-2])                       # (B, C)
        h = net.embed(x)                                             # (B, 1, W)
        rope = None
        if net.pos is not None:
            h = h + net.pos(n)                                       # (B, 1, W)
        else:
            cos, sin = rope_tables(n[:, 0], net.head_dim, h.dtype)   # (B, d)
            rope = cos[:, None, None, :], sin[:, None, None, :]      # (B, 1, 1, d)
        seen = (slots[None, :] <= n)[:, None, None, :]               # (B, 1, 1, C)
        put = at[:, None, :, None]                                   # (B, 1, C, 1)
        new = []
        for k, b in enumerate(net.blocks):
            assert isinstance(b, Block)
            q, kk, v = b.heads_of(h, rope)                           # each (B, heads, 1, d)
            kc = torch.where(put, kk, cache[2 * k])                  # (B, heads, C, d)
            vc = torch.where(put, v, cache[2 * k + 1])
            new += [kc, vc]
            y = F.scaled_dot_product_attention(q, kc, vc, attn_mask=seen)   # (B, heads, 1, d)
            h = b.after_attention(h, y)
        logits = net.head(net.ln_f(h))[:, 0]                         # (B, V)
        return (logits, *new, tokens, torch.cat([window[:, :1], n + 1], dim=1))


def kv_example(net: CharTransformer, batch: int = 2):
    """(example inputs, dynamic shapes) for torch.onnx.export: only the batch varies."""
    dim = torch.export.Dim("batch", min=1, max=65536)
    cache = net.new_cache(batch)
    example = (torch.zeros(batch, 1, dtype=torch.long), *cache)
    return example, {"x": {0: dim}, "cache": tuple({0: dim} for _ in cache)}


def kv_meta(net: CharTransformer) -> dict[str, str]:
    """What a caller needs besides the io names: the cache's shape and the slide."""
    return {"charwise.width": str(net.width), "charwise.heads": str(net.heads),
            "charwise.head_dim": str(net.head_dim), "charwise.context": str(net.context),
            "charwise.keep": str(net.context // 2), "charwise.positions": net.positions}


def kv_doc(net: CharTransformer) -> str:
    return (f"charwise TRANSFORMER {net.layers} blocks x {net.width} wide, {net.heads} heads, "
            f"{net.positions} positions, context {net.context}: one sampling step with its KV cache. "
            f"Start with every cache input zero (k*/v* float (batch, {net.heads}, {net.context}, "
            f"{net.head_dim}), tokens int64 (batch, {net.context}), window int64 (batch, 2)); per "
            "character feed x (batch, 1) and every *_out back as its input; the window slides "
            f"inside the graph (keep {net.context // 2}). Ids: metadata charwise.vocab")


def strip_node_metadata(graph) -> None:
    """In place: drop the exporter's per-node debug metadata (stack traces, fx names), in the
    If's branches too. They are ~5 kB a node, so for a small model most of the file."""
    for node in graph.node:
        del node.metadata_props[:]
        for a in node.attribute:
            if a.HasField("g"):
                strip_node_metadata(a.g)


def zero_cache(net: CharTransformer, batch: int) -> list[np.ndarray]:
    """The cache inputs of a first step, as NumPy arrays."""
    return [t.numpy() for t in net.new_cache(batch)]


@torch.inference_mode()
def check_kv_against_torch(sess, net: CharTransformer, steps: int = 64, batch: int = 3,
                           seed: int = 0) -> tuple[float, int]:
    """Random characters through CharTransformer.step and the graph, far enough to slide at
    least twice -> (max |logit difference|, steps)."""
    steps = max(steps, 2 * net.context + 1)
    ins, _ = kv_io_names(net.layers)
    rng = np.random.default_rng(seed)
    cache, feed = net.new_cache(batch), zero_cache(net, batch)
    worst = 0.0
    for p in range(steps):
        x = rng.integers(0, net.vocab_size, size=(batch, 1)).astype(np.int64)
        logits, cache = net.step(torch.from_numpy(x), cache, p)
        got = sess.run(None, dict(zip(ins, [x, *feed])))
        feed = got[1:]
        worst = max(worst, float(np.abs(got[0] - logits[:, 0].numpy()).max()))
    return worst, steps
