"""CharTransformer's forward pass in float64 NumPy: the readable twin of charwise.transformer.

    forward(params, x, heads)          x (B, T) ints -> logits (B, T, V)
    forward(..., return_attention=True)  -> logits, attention weights (B, L, heads, T, T)
    attention_maps(params, x, heads)   one sequence x (T,) -> (L, heads, T, T)

`params` maps the torch model's state_dict names to arrays (anything np.asarray takes, e.g. CPU
tensors); they are read as float64. Everything else is read off the arrays: the vocabulary and
width from embed.weight, the number of blocks from the blocks.{k}.* names, learned positions
from the presence of pos.weight (rotary otherwise), a tied head from head.weight being absent
or equal to embed.weight. Only the number of heads is not in the shapes, so it is an argument.

Every step is written out: LayerNorm over the last axis (biased variance, eps 1e-5), q/k/v as
one product split head-major, RoPE "rotate half" at positions 0..T-1, softmax of the scaled
scores with -inf above the diagonal, tanh-GELU MLP. No dropout: this is inference. It never
imports torch.
"""
from __future__ import annotations

import math
import re

import numpy as np

EPS = 1e-5   # torch.nn.LayerNorm's default


def layer_norm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)            # biased, as torch
    return (x - mu) / np.sqrt(var + EPS) * w + b


def gelu(x):
    """GELU, tanh approximation (GPT-2's; torch's approximate="tanh")."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))   # shifted: exp never overflows; exp(-inf) = 0
    return e / e.sum(axis=axis, keepdims=True)


def rope(x):
    """Rotate x (B, heads, T, d) at positions 0..T-1: dimension i pairs with i + d/2, and the pair
    turns by the angle t * 10000^(-2i/d)."""
    T, d = x.shape[-2], x.shape[-1]
    inv = 10000.0 ** (-np.arange(0, d, 2, dtype=np.float64) / d)    # (d/2,)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]    # (T, d/2)
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention(q, k, v):
    """Causal attention of q, k, v (B, heads, T, d) -> output (B, heads, T, d), weights (B, heads, T, T)."""
    T, d = q.shape[-2], q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)              # (B, heads, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)              # key after the query
    w = softmax(np.where(future, -np.inf, scores))
    return w @ v, w


def block(p, k, h, heads, rotary):
    """Block k: h (B, T, W) -> h (B, T, W), attention weights (B, heads, T, T)."""
    B, T, W = h.shape
    g = lambda name: p[f"blocks.{k}.{name}"]
    a = layer_norm(h, g("ln1.weight"), g("ln1.bias"))
    qkv = (a @ g("qkv.weight").T + g("qkv.bias")).reshape(B, T, 3, heads, W // heads)
    q, kk, v = (np.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))   # (B, heads, T, d)
    if rotary:
        q, kk = rope(q), rope(kk)
    y, w = attention(q, kk, v)
    y = np.transpose(y, (0, 2, 1, 3)).reshape(B, T, W)              # heads side by side
    h = h + y @ g("attn_out.weight").T + g("attn_out.bias")
    m = gelu(layer_norm(h, g("ln2.weight"), g("ln2.bias")) @ g("fc.weight").T + g("fc.bias"))
    return h + m @ g("mlp_out.weight").T + g("mlp_out.bias"), w


def num_layers(params) -> int:
    found = {int(m.group(1)) for name in params if (m := re.fullmatch(r"blocks\.(\d+)\.ln1\.weight", name))}
    if found != set(range(len(found))) or not found:
        raise KeyError(f"blocks must be numbered 0..L-1, found {sorted(found)}")
    return len(found)


def forward(params, x, heads: int, return_attention: bool = False):
    """x (B, T) ints -> logits (B, T, V) [, attention weights (B, L, heads, T, T)]."""
    p = {name: np.asarray(v, dtype=np.float64) for name, v in params.items()}
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x must be a (B, T) integer array, got {x.dtype} {x.shape}")
    V, W = p["embed.weight"].shape
    if W % heads:
        raise ValueError(f"width {W} is not divisible by heads {heads}")
    if x.size and (x.min() < 0 or x.max() >= V):   # NumPy would wrap a negative id silently
        raise ValueError(f"token ids must lie in [0, {V})")
    T = x.shape[1]
    h = p["embed.weight"][x]                                        # (B, T, W)
    rotary = "pos.weight" not in p
    if not rotary:
        if T > p["pos.weight"].shape[0]:
            raise ValueError(f"{T} chars do not fit the context of {p['pos.weight'].shape[0]}")
        h = h + p["pos.weight"][:T]
    maps = []
    for k in range(num_layers(p)):
        h, w = block(p, k, h, heads, rotary)
        maps.append(w)
    h = layer_norm(h, p["ln_f.weight"], p["ln_f.bias"])
    logits = h @ p.get("head.weight", p["embed.weight"]).T + p["head.bias"]   # (B, T, V)
    return (logits, np.stack(maps, axis=1)) if return_attention else logits


def attention_maps(params, x, heads: int):
    """One sequence x (T,) or (1, T) -> attention weights (L, heads, T, T)."""
    x = np.asarray(x).reshape(1, -1)
    return forward(params, x, heads, return_attention=True)[1][0]
