"""The learning-rate schedule: a warmup, then a decay over the run's budget."""
from __future__ import annotations

import math

from ..settings.train import TrainConfig


def learning_rate(tcfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps` -- or, with a time budget, over `warmup_fraction` of
    it if that ends first (a slow machine must not spend its budget warming up) -- then cosine
    or linear decay to lr*min_lr_ratio as progress -> 1."""
    if step < tcfg.warmup_steps:
        warm = (step + 1) / tcfg.warmup_steps
        if tcfg.max_time and tcfg.warmup_fraction:
            warm = max(warm, progress / tcfg.warmup_fraction)
        if warm <= 1:
            return tcfg.lr * warm
    p = min(max(progress, 0.0), 1.0)
    left = 1 - p if tcfg.decay == "linear" else 0.5 * (1 + math.cos(math.pi * p))
    return tcfg.lr * (tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * left)
