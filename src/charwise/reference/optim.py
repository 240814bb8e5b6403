"""Adam / AdamW and global-norm gradient clipping, with torch.optim's exact arithmetic.

Parameters are a dict name -> ndarray (a CharLSTM's `params`); updates happen in place, so the
model sees them without copying back. Gradients are a dict with the same names.

One AdamW step at step count t (torch.optim.AdamW, amsgrad off):
    p <- p * (1 - lr * wd)                      decoupled weight decay (AdamW only)
    m <- m + (1 - b1) * (g - m)                 = b1 m + (1 - b1) g   (torch writes it as a lerp)
    v <- b2 * v + (1 - b2) * g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
Plain Adam instead adds wd * p to the gradient first (L2 regularisation coupled with the
adaptive scaling, which is what AdamW's decoupling avoids).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def decay_matrices(name: str, p: np.ndarray) -> bool:
    """Default weight-decay selector, the torch trainer's: weight matrices decay; biases and the
    embedding table do not (shrinking rarely seen characters' rows towards 0 helps nothing)."""
    return p.ndim >= 2 and not name.startswith("embed")


class AdamW:
    """torch.optim.AdamW on a dict of NumPy arrays (decoupled=False gives torch.optim.Adam).

    decay(name, array) -> bool chooses which parameters get weight decay, like putting them in
    a torch param group with weight_decay=wd and the rest in one with 0."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = True,
                 decay: Callable[[str, np.ndarray], bool] = decay_matrices):
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.decays = {k: bool(decay(k, p)) for k, p in params.items()}
        self.t = 0                                                     # steps taken
        self.m = {k: np.zeros_like(p) for k, p in params.items()}     # first moment
        self.v = {k: np.zeros_like(p) for k, p in params.items()}     # second moment

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        bc1 = 1 - b1 ** self.t                          # bias corrections: m and v start at 0,
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)          # so early averages are scaled back up
        step_size = lr / bc1
        for k, p in self.params.items():
            g = grads[k]
            wd = self.weight_decay if self.decays[k] else 0.0
            if wd:
                if self.decoupled:
                    p *= 1 - lr * wd                     # AdamW: shrink the weights directly
                else:
                    g = g + wd * p                       # Adam: L2 term added to the gradient
            m, v = self.m[k], self.v[k]
            m += (1 - b1) * (g - m)                      # m = b1 m + (1 - b1) g
            v *= b2
            v += (1 - b2) * (g * g)                      # v = b2 v + (1 - b2) g^2
            p -= step_size * (m / (np.sqrt(v) / bc2_sqrt + self.eps))

    def state(self) -> dict:
        """Everything needed to resume: step count and both moments (copies)."""
        return {"step": self.t, "lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay,
                "exp_avg": {k: a.copy() for k, a in self.m.items()},
                "exp_avg_sq": {k: a.copy() for k, a in self.v.items()}}

    def load_state(self, st: dict) -> None:
        self.t = int(st["step"])
        for k in self.params:
            self.m[k][...] = st["exp_avg"][k]
            self.v[k][...] = st["exp_avg_sq"][k]


def Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw) -> AdamW:
    """torch.optim.Adam semantics: weight decay as an L2 term in the gradient."""
    return AdamW(params, lr, betas, eps, weight_decay, decoupled=False, **kw)


def clip_grad_norm_(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm.

    Same rule as torch.nn.utils.clip_grad_norm_: coef = min(max_norm / (norm + 1e-6), 1).
    Returns the norm before clipping (useful to log; inf/nan means the step should be skipped)."""
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return total
