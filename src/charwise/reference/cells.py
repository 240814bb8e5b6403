"""One recurrent layer, run over a whole (B, T) batch: forward and hand-written backward (BPTT).

Every cell has the same interface, so the model stacks layers without caring which cell it is:

    forward(X, s0, p)        -> hs, sT, cache
        X   (B, T, In)   the layer's input sequence (embeddings, or the layer below's h)
        s0  tuple of (B, H) initial state: (h0, c0) for the LSTM, (h0,) for GRU / RNN
        p   dict with 'weight_ih' (G*H, In), 'weight_hh' (G*H, H), 'bias_ih', 'bias_hh' (G*H,)
        hs  (B, T, H)    the hidden state at every step (the layer's output)
        sT  tuple of (B, H) final state
    backward(dhs, dsT, cache, p) -> dX, ds0, dp
        dhs (B, T, H)    dLoss/dhs coming from above (the head or the next layer)
        dsT tuple of (B, H) dLoss/d(final state) (zeros when the loss ignores the final state)
        dX  (B, T, In), ds0 like s0, dp like p

Weights are in PyTorch's layout and gate order, so a torch checkpoint loads without reshuffling:
    LSTM  gates i, f, g, o     GRU  gates r, z, n     RNN  one tanh block
Row-vector convention: a batch of inputs x (B, In) is multiplied as x @ W.T, as torch does.

Why the input projection is done for all T steps at once: X @ W_ih.T does not depend on the
recurrence, so one big matrix product replaces T small ones. Only h @ W_hh.T must be sequential.
Likewise the weight gradients are sums over time, so they are one product after the time loop.
"""
from __future__ import annotations

import numpy as np


def sigmoid(z):
    # 1/(1+exp(-z)) overflows exp() for large negative z (and warns); the tanh form never does
    # and is the same function: sigmoid(z) = (1 + tanh(z/2)) / 2.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _shifted(h0, hs):
    """(B, T, H): the state each step started from, h_{t-1}, i.e. [h0, h_1, ..., h_{T-1}]."""
    return np.concatenate([h0[:, None, :], hs[:, :-1, :]], axis=1)


def _weight_grads(da_ih, da_hh, X, Hprev):
    """Gradients of the four weight arrays, summed over batch and time in one product each.

    The pre-activation is a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, so
    dW_ih = sum_t da_t^T x_t, dW_hh = sum_t da_t^T h_{t-1}, db_ih = db_hh = sum_t da_t.
    (The GRU passes a different da for the hh side because its n gate scales W_hn h by r.)
    """
    G = da_ih.shape[-1]
    return {
        "weight_ih": da_ih.reshape(-1, G).T @ X.reshape(-1, X.shape[-1]),          # (G*H, In)
        "weight_hh": da_hh.reshape(-1, G).T @ Hprev.reshape(-1, Hprev.shape[-1]),  # (G*H, H)
        "bias_ih": da_ih.sum(axis=(0, 1)),                                         # (G*H,)
        "bias_hh": da_hh.sum(axis=(0, 1)),                                         # (G*H,)
    }


# --------------------------------------------------------------------------------------------
# LSTM (torch gate order i, f, g, o)
#   a = x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh              (B, 4H)
#   i = sig(a_i)  f = sig(a_f)  g = tanh(a_g)  o = sig(a_o)
#   c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)
# --------------------------------------------------------------------------------------------

def lstm_forward(X, s0, p):
    h, c = s0                                                       # (B, H) each
    B, T, _ = X.shape
    H = h.shape[-1]
    # Both biases are plain additions here, so fold them into the precomputed input projection.
    xp = X @ p["weight_ih"].T + (p["bias_ih"] + p["bias_hh"])      # (B, T, 4H)
    acts = np.empty((B, T, 4 * H), dtype=X.dtype)                   # i, f, g, o after nonlinearity
    cs = np.empty((B, T, H), dtype=X.dtype)                         # c_t
    tcs = np.empty((B, T, H), dtype=X.dtype)                        # tanh(c_t)
    hs = np.empty((B, T, H), dtype=X.dtype)                         # h_t
    Whh_T = p["weight_hh"].T                                        # (H, 4H)
    for t in range(T):
        a = xp[:, t] + h @ Whh_T                                    # (B, 4H)
        act = sigmoid(a)                                            # i, f, o are sigmoids ...
        act[:, 2 * H:3 * H] = np.tanh(a[:, 2 * H:3 * H])            # ... g is a tanh
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        c = f * c + i * g                                           # (B, H)
        tc = np.tanh(c)
        h = o * tc                                                  # (B, H)
        acts[:, t], cs[:, t], tcs[:, t], hs[:, t] = act, c, tc, h
    cache = (X, s0, acts, cs, tcs, hs)
    return hs, (h, c), cache


def lstm_backward(dhs, dsT, cache, p):
    X, (h0, c0), acts, cs, tcs, hs = cache
    B, T, H = hs.shape
    dh_next, dc_next = dsT                                          # dL/dh_T, dL/dc_T  (B, H)
    da = np.empty_like(acts)                                        # dL/da_t for every t (B, T, 4H)
    W_hh = p["weight_hh"]                                           # (4H, H)
    for t in reversed(range(T)):
        act = acts[:, t]
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        tc = tcs[:, t]
        c_prev = cs[:, t - 1] if t > 0 else c0
        dh = dhs[:, t] + dh_next                        # h_t feeds the layer above and step t+1
        do = dh * tc                                    # h = o * tanh(c)  =>  dL/do = dh * tanh(c)
        dc = dc_next + dh * o * (1.0 - tc * tc)         # ... and dL/dc += dh * o * (1 - tanh^2 c)
        di = dc * g                                     # c = f*c_prev + i*g  =>  dL/di = dc * g
        df = dc * c_prev                                #                        dL/df = dc * c_prev
        dg = dc * i                                     #                        dL/dg = dc * i
        dc_next = dc * f                                #                   dL/dc_prev = dc * f
        da_t = da[:, t]                                 # view into da, filled gate by gate:
        da_t[:, :H] = di * i * (1.0 - i)                # i = sig(a_i):   sig' = i (1 - i)
        da_t[:, H:2 * H] = df * f * (1.0 - f)           # f = sig(a_f)
        da_t[:, 2 * H:3 * H] = dg * (1.0 - g * g)       # g = tanh(a_g):  tanh' = 1 - g^2
        da_t[:, 3 * H:] = do * o * (1.0 - o)            # o = sig(a_o)
        dh_next = da_t @ W_hh                           # a = ... + h_prev W_hh^T  =>  dh_prev = da W_hh
    dp = _weight_grads(da, da, X, _shifted(h0, hs))     # sums over t of da^T x, da^T h_prev, da
    dX = da @ p["weight_ih"]                            # a = x W_ih^T + ...  =>  dx = da W_ih  (B, T, In)
    return dX, (dh_next, dc_next), dp


# --------------------------------------------------------------------------------------------
# GRU (torch's formulation, gate order r, z, n)
#   gi = x W_ih^T + b_ih     gh = h_{t-1} W_hh^T + b_hh       (B, 3H) each, split into r, z, n
#   r = sig(gi_r + gh_r)     z = sig(gi_z + gh_z)     n = tanh(gi_n + r * gh_n)
#   h_t = (1 - z) * n + z * h_{t-1}
# The reset gate multiplies gh_n *including* its bias b_hn, so the two biases cannot be merged.
# --------------------------------------------------------------------------------------------

def gru_forward(X, s0, p):
    (h,) = s0                                                       # (B, H)
    B, T, _ = X.shape
    H = h.shape[-1]
    gi = X @ p["weight_ih"].T + p["bias_ih"]                        # (B, T, 3H)
    rz = np.empty((B, T, 2 * H), dtype=X.dtype)                     # r, z
    ns = np.empty((B, T, H), dtype=X.dtype)                         # n
    ghn = np.empty((B, T, H), dtype=X.dtype)                        # gh_n = W_hn h + b_hn
    hs = np.empty((B, T, H), dtype=X.dtype)
    Whh_T, b_hh = p["weight_hh"].T, p["bias_hh"]
    for t in range(T):
        gh = h @ Whh_T + b_hh                                       # (B, 3H)
        rz_t = sigmoid(gi[:, t, :2 * H] + gh[:, :2 * H])            # (B, 2H)
        r, z = rz_t[:, :H], rz_t[:, H:]
        n = np.tanh(gi[:, t, 2 * H:] + r * gh[:, 2 * H:])           # (B, H)
        h = (1.0 - z) * n + z * h
        rz[:, t], ns[:, t], ghn[:, t], hs[:, t] = rz_t, n, gh[:, 2 * H:], h
    return hs, (h,), (X, s0, rz, ns, ghn, hs)


def gru_backward(dhs, dsT, cache, p):
    X, (h0,), rz, ns, ghn, hs = cache
    B, T, H = hs.shape
    (dh_next,) = dsT
    dgi = np.empty((B, T, 3 * H), dtype=hs.dtype)                   # dL/d(gi) per step
    dgh = np.empty((B, T, 3 * H), dtype=hs.dtype)                   # dL/d(gh) per step
    W_hh = p["weight_hh"]                                           # (3H, H)
    for t in reversed(range(T)):
        r, z, n = rz[:, t, :H], rz[:, t, H:], ns[:, t]
        h_prev = hs[:, t - 1] if t > 0 else h0
        dh = dhs[:, t] + dh_next                        # h_t feeds the layer above and step t+1
        dn = dh * (1.0 - z)                             # h = (1-z) n + z h_prev  =>  dL/dn = dh (1-z)
        dz = dh * (h_prev - n)                          #                            dL/dz = dh (h_prev - n)
        dh_prev = dh * z                                #      direct path:      dL/dh_prev = dh z
        dan = dn * (1.0 - n * n)                        # n = tanh(a_n): dL/da_n = dn (1 - n^2)
        dr = dan * ghn[:, t]                            # a_n = gi_n + r gh_n  =>  dL/dr = da_n gh_n
        dgi_t, dgh_t = dgi[:, t], dgh[:, t]             # views, filled block by block:
        dgi_t[:, :H] = dgh_t[:, :H] = dr * r * (1.0 - r)            # r = sig(gi_r + gh_r)
        dgi_t[:, H:2 * H] = dgh_t[:, H:2 * H] = dz * z * (1.0 - z)  # z = sig(gi_z + gh_z)
        dgi_t[:, 2 * H:] = dan                          # dL/dgi_n = da_n
        dgh_t[:, 2 * H:] = dan * r                      # dL/dgh_n = da_n r   (the reset gate)
        dh_next = dh_prev + dgh_t @ W_hh                # gh = h_prev W_hh^T + b_hh  =>  += dgh W_hh
    dp = _weight_grads(dgi, dgh, X, _shifted(h0, hs))
    dX = dgi @ p["weight_ih"]                           # gi = x W_ih^T + b_ih  =>  dx = dgi W_ih
    return dX, (dh_next,), dp


# --------------------------------------------------------------------------------------------
# Vanilla RNN (tanh):  h_t = tanh(x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)
# --------------------------------------------------------------------------------------------

def rnn_forward(X, s0, p):
    (h,) = s0
    B, T, _ = X.shape
    xp = X @ p["weight_ih"].T + (p["bias_ih"] + p["bias_hh"])      # (B, T, H)
    hs = np.empty((B, T, h.shape[-1]), dtype=X.dtype)
    Whh_T = p["weight_hh"].T
    for t in range(T):
        h = np.tanh(xp[:, t] + h @ Whh_T)                           # (B, H)
        hs[:, t] = h
    return hs, (h,), (X, s0, hs)


def rnn_backward(dhs, dsT, cache, p):
    X, (h0,), hs = cache
    (dh_next,) = dsT
    da = np.empty_like(hs)                                          # dL/da_t  (B, T, H)
    W_hh = p["weight_hh"]
    for t in reversed(range(hs.shape[1])):
        h = hs[:, t]
        dh = dhs[:, t] + dh_next                        # h_t feeds the layer above and step t+1
        da[:, t] = dh * (1.0 - h * h)                   # h = tanh(a):  dL/da = dh (1 - h^2)
        dh_next = da[:, t] @ W_hh                       # a = ... + h_prev W_hh^T  =>  dh_prev = da W_hh
    dp = _weight_grads(da, da, X, _shifted(h0, hs))
    dX = da @ p["weight_ih"]                            # dx = da W_ih
    return dX, (dh_next,), dp


# name -> (forward, backward); each cell's gate count and state arity are charwise.cells's
CELLS = {
    "lstm": (lstm_forward, lstm_backward),
    "gru": (gru_forward, gru_backward),
    "rnn": (rnn_forward, rnn_backward),
}
