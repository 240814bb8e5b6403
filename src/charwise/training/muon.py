"""--optimizer muon: a transformer's block matrices by Muon, everything else by AdamW.

Muon (Keller Jordan, 2024; torch.optim.Muon) steps a weight matrix along its momentum made
orthogonal: the update U S' V^T keeps the momentum's singular vectors and sets every singular
value to about 1, so no few directions dominate a step. Within the transformer preset's 180 s
budget it learns more per step than AdamW, for a dearer step (benchmarks/README.md, section
11, "Muon").

Why not torch.optim.Muon itself: it runs its Newton-Schulz iteration in bf16, which a CPU
without AVX512-BF16 or AMX (most laptops) emulates, at many times the cost of the whole
training step (measured in the same section). The update below is torch's (momentum 0.95,
Nesterov, the quintic iteration's coefficients, its "original" lr scale, decoupled weight
decay) with the iteration in fp32, which every CPU runs at its matmul rate.

The embedding, head, biases and LayerNorms stay with AdamW (Muon is for hidden matrices only);
`MuonAdamW` steps both, and looks to the trainer and to a checkpoint like one optimizer.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..guards import ADAMW_STATE

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)     # torch.optim.Muon's (and Keller Jordan's)
NS_STEPS = 5
MOMENTUM = 0.95


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """g (A, B) -> about U V^T of its SVD U S V^T (singular values land in ~[0.5, 1.5], which
    trains as well as exactly 1): the quintic Newton-Schulz iteration, in g's dtype."""
    a, b, c = NS_COEFFICIENTS
    wide = g.shape[0] <= g.shape[1]
    x = g if wide else g.T                        # (r, s), r <= s: the Gram matrix is r x r
    x = x / x.norm().clamp(min=eps)               # Frobenius norm >= spectral norm: S <= 1
    for _ in range(steps):
        gram = x @ x.T                                              # (r, r)
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters: W <- (1 - lr wd) W - lr sqrt(max(1, A/B)) orthogonalize(nesterov(m)),
    the weight decay decoupled as AdamW's."""

    def __init__(self, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = MOMENTUM):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:   # type: ignore[override]
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mu)                           # m = mu m + (1 - mu) g
                update = orthogonalize(p.grad.lerp(buf, mu))        # Nesterov: look ahead
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * math.sqrt(max(1.0, p.shape[0] / p.shape[1])))


class MuonAdamW:
    """Muon for `matrices`, AdamW (its param groups given) for the rest, as one optimizer: the
    groups side by side (AdamW's first), one step, one zero_grad, and one state_dict indexed
    over all parameters in that order (what last.safetensors saves). The trainer sets each
    group's "lr" to the schedule's AdamW rate; Muon's groups step at that times
    muon_lr / lr, so both follow the same warmup and decay."""

    defaults: dict[str, Any] = {}                 # not fused: the trainer skips a bad step itself

    def __init__(self, matrices: Sequence[torch.Tensor], adamw: torch.optim.AdamW, lr: float,
                 muon_lr: float, weight_decay: float):
        self.adamw, self.muon = adamw, Muon(matrices, lr=muon_lr, weight_decay=weight_decay)
        self.ratio = muon_lr / lr

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        # read afresh: load_state_dict gives each optimizer new group dicts
        return self.adamw.param_groups + self.muon.param_groups

    def _parts(self) -> list[tuple[torch.optim.Optimizer, int]]:
        """Each optimizer with the index its parameters start at in the joint numbering."""
        n = sum(len(g["params"]) for g in self.adamw.param_groups)
        return [(self.adamw, 0), (self.muon, n)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

    def step(self) -> None:
        for g in self.muon.param_groups:
            g["lr"] = self.adamw.param_groups[0]["lr"] * self.ratio
        self.adamw.step()
        self.muon.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        for opt, start in self._parts():
            state.update({start + i: s for i, s in opt.state_dict()["state"].items()})
        return {"state": state, "param_groups": []}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for opt, start in self._parts():
            own = opt.state_dict()
            n = sum(len(g["params"]) for g in own["param_groups"])
            own["state"] = {i: sd["state"][start + i] for i in range(n) if start + i in sd["state"]}
            opt.load_state_dict(own)

    def layout(self) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
        """Each parameter's shape and the state tensors a checkpoint holds for it (in order)."""
        return [(tuple(p.shape), names) for opt, names in
                ((self.adamw, ADAMW_STATE), (self.muon, ("momentum_buffer",)))
                for g in opt.param_groups for p in g["params"]]
