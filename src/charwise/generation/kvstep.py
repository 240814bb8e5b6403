"""A transformer's sampling step in NumPy, for the CPU: the same maths as CharTransformer.step
(KV cache, the window sliding by re-encoding its last context // 2 characters), with float32
copies of the weights and no torch dispatch. One character of a small model is ~100 tiny
products; NumPy's call into BLAS costs a fraction of torch's per-operation overhead there, so
this step samples several times faster than the torch one (benchmarks/README.md, section 11).
Its logits equal the torch step's to float32 rounding (tests/test_transformer_runs.py).

The state is a `NumpyKV`: per block the keys and values (S, heads, context, head_dim), the
tokens in the window (S, context), and the window's start and length (shared by the streams).
`NumpyKVStep.begin` turns the torch step's KVState (what priming in torch leaves) into one.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

LN_EPS = 1e-5                      # torch.nn.LayerNorm's
GELU_C = math.sqrt(2.0 / math.pi)


class NumpyKV:
    """The NumPy step's cache: keys[k], values[k] (S, heads, C, d), tokens (S, C), start, n."""

    def __init__(self, keys: list[np.ndarray], values: list[np.ndarray], tokens: np.ndarray,
                 start: int, n: int):
        self.keys, self.values, self.tokens, self.start, self.n = keys, values, tokens, start, n

    def take(self, rows: np.ndarray) -> NumpyKV:
        """Streams `rows` (repeats allowed: a beam search's reordering), as new arrays."""
        return NumpyKV([k[rows] for k in self.keys], [v[rows] for v in self.values],
                       self.tokens[rows], self.start, self.n)


def _normalize(x: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """LayerNorm without its gain and bias (those are folded into the product that follows):
    (x - mean) / sqrt(biased variance + eps) over the last axis. The means are products with
    `avg` (W, 1) = 1/W: one BLAS call each, cheaper than ndarray.mean's Python layers."""
    xc = x - x @ avg
    var = (xc * xc) @ avg
    var += LN_EPS
    xc /= np.sqrt(var)
    return xc


def _fold(w: np.ndarray, b: np.ndarray, mat: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm's gain w and bias b folded into the product after it: (n * w + b) @ mat + bias
    = n @ (w[:, None] * mat) + (b @ mat + bias)."""
    return np.ascontiguousarray(w[:, None] * mat, dtype=np.float32), (b @ mat + bias).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    """tanh-approximated GELU (torch's approximate="tanh"), in place where it can be."""
    t = x * x
    t *= 0.044715 * x
    t += x
    t *= GELU_C
    np.tanh(t, out=t)
    t += 1.0
    t *= 0.5 * x
    return t


class NumpyKVStep:
    """CharTransformer's step with float32 NumPy copies of its weights (module docstring)."""

    def __init__(self, net: Any):
        f32 = lambda t: t.detach().cpu().float().numpy().copy()         # noqa: E731
        sd = {k: f32(v) for k, v in net.state_dict().items()}
        self.C, self.heads, self.d = net.context, net.heads, net.head_dim
        self.keep = self.C // 2
        self.embed, self.pos = sd["embed.weight"], sd.get("pos.weight")     # (V, W), (C, W)
        W = self.embed.shape[1]
        self.avg = np.full((W, 1), 1.0 / W, dtype=np.float32)
        rotate = None
        self.cos = self.sin = None
        if self.pos is None:                                 # rotary: angles as transformer.rope_tables
            inv = 10000.0 ** (-np.arange(0, self.d, 2, dtype=np.float32) / self.d)
            ang = np.arange(self.C, dtype=np.float32)[:, None] * inv[None, :]
            ang = np.concatenate([ang, ang], axis=-1)                      # (C, d)
            # tiled over the queries' and the keys' heads: (C, 2W), one row per window position
            self.cos, self.sin = np.tile(np.cos(ang), 2 * self.heads), np.tile(np.sin(ang), 2 * self.heads)
            # rotate-half as a product, x @ rotate = concat(-x[half:], x[:half]) per head (2W, 2W)
            eye = np.eye(self.d // 2, dtype=np.float32)
            one = np.block([[0 * eye, eye], [-eye, 0 * eye]])
            rotate = np.kron(np.eye(2 * self.heads, dtype=np.float32), one).astype(np.float32)
        self.blocks = []
        for k in range(net.layers):
            g = lambda name: sd[f"blocks.{k}.{name}"]                       # noqa: E731
            wqkv, bqkv = _fold(g("ln1.weight"), g("ln1.bias"), g("qkv.weight").T, g("qkv.bias"))
            # 1/sqrt(d) of the attention scores folded into the queries' columns, and for rotary
            # positions the rotated queries and keys as 2W more columns: one product per block
            # gives q, k, v and rotate-half(q, k); rotating is then two products with the tables
            wqkv[:, :W] /= math.sqrt(self.d)
            bqkv[:W] /= math.sqrt(self.d)
            if rotate is not None:
                wqkv = np.ascontiguousarray(np.concatenate([wqkv, wqkv[:, :2 * W] @ rotate], axis=1))
                bqkv = np.concatenate([bqkv, bqkv[:2 * W] @ rotate])
            wfc, bfc = _fold(g("ln2.weight"), g("ln2.bias"), g("fc.weight").T, g("fc.bias"))
            self.blocks.append((wqkv, bqkv, g("attn_out.weight").T.copy(), g("attn_out.bias"),
                                wfc, bfc, g("mlp_out.weight").T.copy(), g("mlp_out.bias")))
        # (W, V), (V,): the head with ln_f folded in
        self.head_w, self.head_b = _fold(sd["ln_f.weight"], sd["ln_f.bias"], sd["head.weight"].T, sd["head.bias"])

    def begin(self, state: Any) -> NumpyKV:
        """The torch KVState (after priming) as NumPy arrays."""
        cache = [t.detach().cpu().numpy() for t in state.cache]
        L = len(self.blocks)
        keys = [cache[2 * k].astype(np.float32) for k in range(L)]
        values = [cache[2 * k + 1].astype(np.float32) for k in range(L)]
        start, n = (int(v) for v in cache[-1][0])
        return NumpyKV(keys, values, cache[-2].copy(), start, n)

    def __call__(self, ids: np.ndarray, state: NumpyKV):
        if state.n == self.C:
            # Full: keep the last `keep` chars, re-encoded from window position 0.
            kept = state.tokens[:, self.C - self.keep:].copy()
            state = NumpyKV(state.keys, state.values, state.tokens, state.start + self.C - self.keep, 0)
            if self.keep:
                self._extend(kept, state)
        x = np.asarray(ids, dtype=np.int64)[:, None]                           # (S, 1)
        h = self._extend(x, state)                                            # (S, 1, W)
        logits = _normalize(h[:, 0], self.avg) @ self.head_w
        logits += self.head_b
        return logits, state

    def _extend(self, x: np.ndarray, st: NumpyKV) -> np.ndarray:
        """Encode x (S, T) into window slots n..n+T-1 -> the residual stream (S, T, W) (before
        ln_f, which the head holds folded in)."""
        S, T = x.shape
        n, W = st.n, self.heads * self.d
        st.tokens[:, n:n + T] = x
        h = self.embed[x]                                                      # (S, T, W)
        if self.pos is not None:
            h = h + self.pos[n:n + T]
        mask = None
        if T > 1:          # query i (slot n + i) sees slots 0..n + i
            mask = np.arange(n + T)[None, :] > (n + np.arange(T))[:, None]     # (T, n + T)
        for k, (wqkv, bqkv, wo, bo, wfc, bfc, wm, bm) in enumerate(self.blocks):
            qkv = _normalize(h, self.avg) @ wqkv               # (S, T, 3W), rotary: + 2W rotated
            qkv += bqkv
            qk = qkv[..., :2 * W]
            if self.cos is not None and self.sin is not None:  # rotate q, k at slots n..n+T-1
                qk = qk * self.cos[n:n + T]
                qk += qkv[..., 3 * W:] * self.sin[n:n + T]
            qk = qk.reshape(S, T, 2, self.heads, self.d).transpose(2, 0, 3, 1, 4)   # (2, S, heads, T, d)
            q, kk = qk[0], qk[1]
            st.keys[k][:, :, n:n + T] = kk
            v = qkv[..., 2 * W:3 * W].reshape(S, T, self.heads, self.d)
            st.values[k][:, :, n:n + T] = v.transpose(0, 2, 1, 3)
            scores = q @ st.keys[k][:, :, :n + T].transpose(0, 1, 3, 2)        # (S, heads, T, n + T)
            if mask is not None:
                scores[..., mask] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            y = (scores @ st.values[k][:, :, :n + T]).transpose(0, 2, 1, 3).reshape(S, T, -1)
            h = h + y @ wo
            h += bo
            m = _normalize(h, self.avg) @ wfc
            m += bfc
            h += _gelu(m) @ wm
            h += bm
        st.n = n + T
        return h
