"""A transformer's sampling step in NumPy, for the CPU: the same maths as CharTransformer.step
(KV cache, the window sliding by re-encoding its last context // 2 characters), with float32
copies of the weights and no torch dispatch. A character of a small model is a few dozen tiny
products and element-wise calls, so what it costs is mostly the calls themselves: NumPy's are
cheaper than torch's, and one stream (what `charwise sample` runs) has a path of its own that
makes as few as it can (`_one`: 1-D rows, buffers made once, biases as a last row of their
matrix; benchmarks/README.md, section 11). Its logits equal the torch step's to float32
rounding (tests/test_transformer_runs.py).

The state is a `NumpyKV`: per block the keys and values (S, context, width) -- one window slot
a contiguous row, heads side by side in it --, the tokens in the window (S, context), and the
window's start and length (shared by the streams). `NumpyKVStep.begin` turns the torch step's
KVState (what priming in torch leaves) into one.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

# _one's unshifted softmax may overflow exp before it checks and shifts (_one): not news to a user
warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning, r"charwise\.generation\.kvstep")

LN_EPS = 1e-5                      # torch.nn.LayerNorm's
GELU_C = math.sqrt(2.0 / math.pi)
# GELU (tanh form) of f is 0.5 f (1 + tanh(C f + K f^3)). With a = GAMMA f and GAMMA^3 = K the
# argument is a (C / GAMMA + a^2): GAMMA scales the MLP's first product and 1 / (2 GAMMA) its
# second, and the GELU costs one NumPy call fewer (_gelu_scaled).
GELU_K = 0.044715 * GELU_C
GAMMA = GELU_K ** (1.0 / 3.0)


class NumpyKV:
    """The NumPy step's cache: keys[k], values[k] (S, C, W), tokens (S, C), start, n."""

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


def _fold(w: np.ndarray, b: np.ndarray, mat: np.ndarray, bias: np.ndarray, scale: float = 1.0,
          center: bool = False) -> np.ndarray:
    """LayerNorm's gain w and bias b folded into the product after it, (n * w + b) @ mat + bias
    = n @ (w[:, None] * mat) + (b @ mat + bias), as one (in + 1, out) matrix whose last row is
    the bias: [n, 1] @ it is the whole product (one call fewer on the one-stream path), and
    the batch path uses its two parts. `scale` multiplies the matrix rows only. `center`
    (after a LayerNorm): each column minus its mean, so x @ it = (x - mean(x)) @ the matrix
    and the one-stream path need not subtract the mean itself (a normalized input, centered
    already, gives the same product)."""
    m = w[:, None] * mat * scale
    if center:
        m = m - m.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(np.vstack([m, (b @ mat + bias)[None, :]]), dtype=np.float32)


def _product(x: np.ndarray, aug: np.ndarray) -> np.ndarray:
    """x (..., in) @ the matrix part of `aug` + its bias row."""
    y = x @ aug[:-1]
    y += aug[-1]
    return y


def _gelu_scaled(a: np.ndarray, t: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """2 GAMMA GELU(a / GAMMA), tanh form (torch's approximate="tanh"): a (1 + tanh(a (C /
    GAMMA + a^2))), GAMMA as above. `t`, `out`: buffers to reuse."""
    t = np.multiply(a, a, t)
    t += GELU_C / GAMMA
    t *= a
    np.tanh(t, t)
    t += 1.0
    return np.multiply(t, a, t if out is None else out)


class NumpyKVStep:
    """CharTransformer's step with float32 NumPy copies of its weights (module docstring)."""

    def __init__(self, net: Any):
        f32 = lambda t: t.detach().cpu().float().numpy().copy()         # noqa: E731
        sd = {k: f32(v) for k, v in net.state_dict().items()}
        self.C, self.heads, self.d = net.context, net.heads, net.head_dim
        self.keep = self.C // 2
        self.embed, self.pos = sd["embed.weight"], sd.get("pos.weight")     # (V, W), (C, W)
        self.W = W = self.embed.shape[1]
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
        self.blocks = []                   # per block: qkv, attn_out, fc, mlp_out as _fold's matrices
        ident = lambda n: (np.ones(n, np.float32), np.zeros(n, np.float32))  # noqa: E731  (no LayerNorm before)
        for k in range(net.layers):
            g = lambda name: sd[f"blocks.{k}.{name}"]                       # noqa: E731
            # 1/sqrt(d) of the attention scores folded into the queries' columns, and for rotary
            # positions the rotated queries and keys as 2W more columns: one product per block
            # gives q, k, v and rotate-half(q, k); rotating is then two products with the tables
            wqkv = _fold(g("ln1.weight"), g("ln1.bias"), g("qkv.weight").T, g("qkv.bias"), center=True)
            wqkv[:, :W] /= math.sqrt(self.d)
            if rotate is not None:
                wqkv = np.ascontiguousarray(np.concatenate([wqkv, wqkv[:, :2 * W] @ rotate], axis=1))
            self.blocks.append((wqkv, _fold(*ident(W), g("attn_out.weight").T, g("attn_out.bias")),
                                GAMMA * _fold(g("ln2.weight"), g("ln2.bias"), g("fc.weight").T, g("fc.bias"),
                                              center=True),
                                _fold(*ident(g("fc.weight").shape[0]), g("mlp_out.weight").T, g("mlp_out.bias"),
                                      0.5 / GAMMA)))
        # the last block's keys, values (and rotated keys): all a slide needs of it (_last_keys)
        last_qkv = self.blocks[-1][0]
        cols = [slice(W, 3 * W)] + ([slice(4 * W, 5 * W)] if rotate is not None else [])
        self.kv_last = np.ascontiguousarray(np.concatenate([last_qkv[:, c] for c in cols], axis=1))
        # (W + 1, V): the head with ln_f folded in
        self.head = _fold(sd["ln_f.weight"], sd["ln_f.bias"], sd["head.weight"].T, sd["head.bias"], center=True)
        # Rotary positions: the first block's q, k, v (and rotated q, k) depend on the character
        # alone, so they are a table (V, 5W) looked up as the LSTM looks up its input product.
        self.table = None
        if self.pos is None:
            self.table = np.ascontiguousarray(_product(_normalize(self.embed, self.avg), self.blocks[0][0]))
        self._one_setup()

    def begin(self, state: Any) -> NumpyKV:
        """The torch KVState (after priming) as NumPy arrays, the heads side by side."""
        cache = [t.detach().cpu().numpy() for t in state.cache]
        S, L, C = cache[0].shape[0], len(self.blocks), self.C
        rows = lambda a: np.ascontiguousarray(a.transpose(0, 2, 1, 3).reshape(S, C, self.W), dtype=np.float32)  # noqa: E731
        start, n = (int(v) for v in cache[-1][0])
        return NumpyKV([rows(cache[2 * k]) for k in range(L)], [rows(cache[2 * k + 1]) for k in range(L)],
                       cache[-2].copy(), start, n)

    def __call__(self, ids: np.ndarray, state: NumpyKV):
        if state.n == self.C:
            # Full: keep the last `keep` chars, re-encoded from window position 0.
            kept = state.tokens[:, self.C - self.keep:].copy()
            state = NumpyKV(state.keys, state.values, state.tokens, state.start + self.C - self.keep, 0)
            if self.keep:
                self._extend(kept, state, keys_only=True)
        if len(ids) == 1:
            return self._one(int(ids[0]), state)[None, :], state
        x = np.asarray(ids, dtype=np.int64)[:, None]                           # (S, 1)
        h = self._extend(x, state)                                            # (S, 1, W)
        assert h is not None                                                  # (not keys_only)
        return _product(_normalize(h[:, 0], self.avg), self.head), state

    def _extend(self, x: np.ndarray, st: NumpyKV, keys_only: bool = False) -> np.ndarray | None:
        """Encode x (S, T) into window slots n..n+T-1 -> the residual stream (S, T, W) (before
        ln_f, which the head holds folded in). keys_only (a slide, whose characters' outputs
        nobody reads): the last block only writes its keys and values, and None is returned --
        its attention and MLP would only feed those outputs (~40 % of a slide's products)."""
        S, T = x.shape
        n, W, H, d = st.n, self.W, self.heads, self.d
        st.tokens[:, n:n + T] = x
        h = self.embed[x]                                                      # (S, T, W)
        if self.pos is not None:
            h = h + self.pos[n:n + T]
        mask = None
        if T > 1:          # query i (slot n + i) sees slots 0..n + i
            mask = np.arange(n + T)[None, :] > (n + np.arange(T))[:, None]     # (T, n + T)
        for k, (wqkv, wo, wfc, wm) in enumerate(self.blocks):
            if keys_only and k == len(self.blocks) - 1:
                self._last_keys(h, st, n, T)
                return None
            if k == 0 and self.table is not None:
                qkv = self.table[x]                            # (S, T, 5W)
            else:                                              # (S, T, 3W), rotary: + 2W rotated
                qkv = _product(_normalize(h, self.avg), wqkv)
            qk = qkv[..., :2 * W]
            if self.cos is not None and self.sin is not None:  # rotate q, k at slots n..n+T-1
                qk = qk * self.cos[n:n + T]
                qk += qkv[..., 3 * W:] * self.sin[n:n + T]
            keys, values = st.keys[k], st.values[k]                            # (S, C, W)
            keys[:, n:n + T] = qk[..., W:]
            values[:, n:n + T] = qkv[..., 2 * W:3 * W]
            q = qk[..., :W].reshape(S, T, H, d).transpose(0, 2, 1, 3)          # (S, H, T, d)
            kt = keys[:, :n + T].reshape(S, n + T, H, d).transpose(0, 2, 3, 1)  # (S, H, d, n + T)
            scores = q @ kt                                                     # (S, H, T, n + T)
            if mask is not None:
                scores[..., mask] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            v = values[:, :n + T].reshape(S, n + T, H, d).transpose(0, 2, 1, 3)  # (S, H, n + T, d)
            y = (scores @ v).transpose(0, 2, 1, 3).reshape(S, T, W)
            h = h + _product(y, wo)
            h += _product(_gelu_scaled(_product(_normalize(h, self.avg), wfc)), wm)
        st.n = n + T
        return h

    def _last_keys(self, h: np.ndarray, st: NumpyKV, n: int, T: int) -> None:
        """A slide's last block: only its keys and values at slots n..n+T-1 (kv_last's columns)."""
        W = self.W
        kv = _product(_normalize(h, self.avg), self.kv_last)       # (S, T, 2W), rotary: + W rotated
        key = kv[..., :W]
        if self.cos is not None and self.sin is not None:
            key = key * self.cos[n:n + T, W:]
            key += kv[..., 2 * W:] * self.sin[n:n + T, W:]
        st.keys[-1][:, n:n + T] = key
        st.values[-1][:, n:n + T] = kv[..., W:2 * W]
        st.n = n + T

    def _one_setup(self) -> None:
        """The one-stream path's buffers, made once (so a step object serves one generation at
        a time: CharModel makes one per call)."""
        f32, W, H, d = np.float32, self.W, self.heads, self.d
        F = self.blocks[0][2].shape[1]
        # rows with a 1 after them (the bias's row): the normalized stream, the attention's
        # output, the MLP's GELU
        self.xn, self.y, self.g = np.ones(W + 1, f32), np.ones(W + 1, f32), np.ones(F + 1, f32)
        self.qk, self.rot, self.t = (np.empty(n, f32) for n in (2 * W, 2 * W, F))
        # [ones; the residual row]: one product gives the row's sum and sum of squares
        self.hh = np.ones((2, W), f32)
        # q's heads on a block diagonal (H, W): one product scores every head against the
        # window's keys (C, W); qdiag is the diagonal's (H, d) view, written with one copy
        self.qmat = np.zeros((H, W), f32)
        self.qdiag = np.lib.stride_tricks.as_strided(self.qmat, (H, d), (4 * (W + d), 4))
        # p @ values gives every head's weights against every column (H, W); the head's own
        # columns are its diagonal blocks, the (H, d) view ydiag
        self.ys = np.empty((H, W), f32)
        self.ydiag = np.lib.stride_tricks.as_strided(self.ys, (H, d), (4 * (W + d), 4))
        self.q_heads, self.y_heads = self.qk[:W].reshape(H, d), self.y[:W].reshape(H, d)
        self.xn_row, self.g_row, self.k_row, self.h_row = self.xn[:W], self.g[:-1], self.qk[W:], self.hh[1]

    def _norm(self) -> np.ndarray:
        """LayerNorm of the residual row h (self.h_row, which is self.hh[1]) into self.xn, but
        for its centering (the products after it center their input: _fold's `center`):
        h / sqrt(var(h) + eps), the variance as E[h^2] - E[h]^2 from one product, hh @ h =
        [sum, sum of squares]. Where that cancels (every unit offset by many times their
        spread, so the centering product would cancel too) the row is centered first, as the
        batch path does."""
        W, h = self.W, self.h_row
        total, squares = np.dot(self.hh, h).tolist()
        mean = total / W
        var = squares / W - mean * mean
        if mean * mean > 64.0 * var:                 # > ~2 of float32's ~7 digits cancelled
            h = h - mean
            var = float(np.dot(h, h)) / W
        np.multiply(h, 1.0 / math.sqrt(var + LN_EPS), self.xn_row)
        return self.xn

    def _one(self, x: int, st: NumpyKV) -> np.ndarray:
        """One stream, one character: `_extend`'s maths on 1-D rows in as few NumPy calls as
        it takes -> the logits (V,). (NumPy's functions and the buffers are bound to local
        names and outputs passed by position: at ~70 calls a character, lookups and keyword
        parsing are a measurable part of its time.)"""
        n, W, W2 = st.n, self.W, 2 * self.W
        dot, mul, exp, norm = np.dot, np.multiply, np.exp, self._norm
        qk, rot, t, g, y = self.qk, self.rot, self.t, self.g, self.y
        h_row, k_row, g_row = self.h_row, self.k_row, self.g_row
        qmat, qdiag, q_heads = self.qmat, self.qdiag, self.q_heads
        ys, ydiag, y_heads = self.ys, self.ydiag, self.y_heads
        cos, sin, table = self.cos, self.sin, self.table
        st.tokens[0, n] = x
        h = self.embed[x]                       # (W,), read-only: the first write makes it h_row
        if self.pos is not None:
            h = np.add(h, self.pos[n], h_row)
        for k, (wqkv, wo, wfc, wm) in enumerate(self.blocks):
            qkv = table[x] if k == 0 and table is not None else dot(norm(), wqkv)
            if cos is not None and sin is not None:            # rotary: q, k at slot n
                mul(qkv[:W2], cos[n], qk)
                qk += mul(qkv[3 * W:], sin[n], rot)
            else:
                np.copyto(qk, qkv[:W2])
            keys, values = st.keys[k][0], st.values[k][0]                      # (C, W)
            keys[n] = k_row
            values[n] = qkv[W2:3 * W]
            np.copyto(qdiag, q_heads)
            p = exp(dot(qmat, keys[:n + 1].T))                                 # (H, n + 1)
            total = np.add.reduce(p, 1, keepdims=True)
            sums = total.ravel().tolist()
            # Not shifted by each head's largest score (two calls saved), which is exact while
            # every head's sum lies in [1e-30, 1e30]: no score above ~69, none lost below
            # float32's normal range. Otherwise shift, as softmax usually does.
            if not (min(sums) > 1e-30 and max(sums) < 1e30):
                p = dot(qmat, keys[:n + 1].T)
                p -= np.maximum.reduce(p, 1, keepdims=True)
                exp(p, p)
                total = np.add.reduce(p, 1, keepdims=True)
            dot(p, values[:n + 1], ys)                                         # (H, W)
            np.divide(ydiag, total, y_heads)
            h = np.add(h, dot(y, wo), h_row)                                   # the residual row
            _gelu_scaled(dot(norm(), wfc), t, g_row)                           # (F,)
            h += dot(g, wm)
        st.n = n + 1
        return dot(norm(), self.head)
