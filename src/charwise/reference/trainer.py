"""Training step for the NumPy model: truncated BPTT over consecutive windows, AdamW, clipping.

The charwise train loop feeds (B, T) windows cut from B contiguous streams of text, window n+1
continuing where window n stopped. The trainer therefore carries the final hidden state of
one window into the next (so the model sees context longer than T) but, as truncated BPTT
does, never propagates gradient past the window: backward() simply stops at the window's
initial state, which enters as a constant.
"""
from __future__ import annotations

import math

import numpy as np

from .engine import CharLSTM
from .optim import AdamW, clip_grad_norm_


class ReferenceTrainer:
    def __init__(self, model: CharLSTM, lr: float, weight_decay: float = 0.0,
                 grad_clip: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if model.cfg.dropout > 0:
            raise NotImplementedError("the NumPy reference engine has no dropout; "
                                      "train with dropout=0 (or use the torch engine)")
        self.model = model
        # Weight decay on weight matrices only (not biases, not the embedding), as charwise.train does.
        self.opt = AdamW(model.params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.state: tuple | None = None  # carried hidden state, tuple of (L, B, H), or None
        self.last_grad_norm = math.nan  # global gradient norm of the last step, before clipping

    def reset_state(self, batch_size: int | None = None) -> None:
        """Forget the carried state: zeros of batch size B, or None (zeros on the next step)."""
        self.state = None if batch_size is None else self.model.zero_state(batch_size)

    def step(self, x, y, lr: float | None = None) -> float:
        """One optimizer step on the window x -> y (both (B, T) ints); returns its mean loss."""
        x = np.asarray(x)
        if self.state is None or self.state[0].shape[1] != x.shape[0]:
            self.reset_state(x.shape[0])  # first window, or the batch size changed
        loss, grads, _, new_state = self.model.loss_and_grads(x, y, self.state)
        self.state = new_state           # carried forward as a constant: no gradient flows back
        if self.grad_clip and self.grad_clip > 0:
            self.last_grad_norm = clip_grad_norm_(grads, self.grad_clip)
        else:
            self.last_grad_norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        if not math.isfinite(self.last_grad_norm):
            # A non-finite gradient would poison Adam's moments for good; skip this update.
            return loss
        self.opt.step(grads, lr=lr)
        return loss

    def optimizer_state(self) -> dict:
        """AdamW's step count, hyper-parameters and moment arrays (copies), by parameter name."""
        return self.opt.state()

    def load_optimizer_state(self, st: dict) -> None:
        self.opt.load_state(st)
