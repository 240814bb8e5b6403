"""Convert between the spec's LSTM parameter layout and torch's (the one charwise stores).

Spec (ch336):  embed (V, E), W (4H, E+H) acting on concat[x, h_prev], gate blocks i, f, o, g,
               one bias b (4H,), W_out (V, H), b_out (V,)
torch:         embed.weight (V, E), rnn.weight_ih_l0 (4H, E), rnn.weight_hh_l0 (4H, H),
               gate blocks i, f, g, o, two biases rnn.bias_ih_l0 + rnn.bias_hh_l0 (4H,) each,
               head.weight (V, H), head.bias (V,)

W @ [x; h] = W[:, :E] @ x + W[:, E:] @ h, so splitting the columns gives weight_ih and
weight_hh; the only other differences are the order of the g and o blocks and that torch adds
two biases where the spec has one.
"""
from __future__ import annotations

import numpy as np

# Block permutation between i,f,o,g and i,f,g,o. Swapping blocks 2 and 3 is its own inverse,
# so the same list converts in both directions.
_SWAP_G_O = [0, 1, 3, 2]


def _reorder(a: np.ndarray) -> np.ndarray:
    """Permute the 4 gate blocks along axis 0 (rows of a matrix, or entries of a bias)."""
    H = a.shape[0] // 4
    return np.concatenate([a[j * H:(j + 1) * H] for j in _SWAP_G_O], axis=0)


def from_spec_layout(embed, W, b, W_out, b_out) -> dict[str, np.ndarray]:
    """Spec arrays -> a one-layer LSTM state dict in torch names (loads into CharLSTM).

    The whole bias goes into bias_ih and bias_hh is zero: their sum is what the cell sees."""
    embed, W, b = np.asarray(embed), np.asarray(W), np.asarray(b)
    E = embed.shape[1]
    if W.shape[0] % 4 or W.shape[1] != E + W.shape[0] // 4:
        raise ValueError(f"W must be (4H, E+H) with E={E}; got {W.shape}")
    W = _reorder(W)                                                   # gate order i,f,g,o
    return {
        "embed.weight": embed.copy(),
        "rnn.weight_ih_l0": W[:, :E].copy(),                          # (4H, E): acts on x
        "rnn.weight_hh_l0": W[:, E:].copy(),                          # (4H, H): acts on h_prev
        "rnn.bias_ih_l0": _reorder(b),
        "rnn.bias_hh_l0": np.zeros_like(b),
        "head.weight": np.array(W_out, copy=True),
        "head.bias": np.array(b_out, copy=True),
    }


def to_spec_layout(state_dict):
    """A one-layer LSTM state dict (torch names) -> (embed, W, b, W_out, b_out) as in the spec."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    if "rnn.weight_hh_l1" in sd:
        raise ValueError("the spec's layout has one LSTM layer; this state dict has more")
    W_ih, W_hh = sd["rnn.weight_ih_l0"], sd["rnn.weight_hh_l0"]
    if W_ih.shape[0] != 4 * W_hh.shape[1]:
        raise ValueError("not an LSTM state dict (weight_hh_l0 must have 4H rows)")
    W = _reorder(np.concatenate([W_ih, W_hh], axis=1))               # (4H, E+H), order i,f,o,g
    b = _reorder(sd["rnn.bias_ih_l0"] + sd["rnn.bias_hh_l0"])        # one bias = their sum
    return sd["embed.weight"].copy(), W, b, sd["head.weight"].copy(), sd["head.bias"].copy()
