"""Figures. matplotlib is imported inside each function (lazily, with the Agg backend), so
importing charwise never pays for it and headless machines need no display."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .checkpoint import METRICS, atomic_writer

BLUE, RED, GREEN, GREY = "#3498db", "#e74c3c", "#27ae60", "#7f8c8d"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=120)
    _plt().close(fig)
    return path


def read_metrics(run_dir) -> tuple[list[dict], list[dict]]:
    """(per-step records, evaluation records) from RUN/metrics.jsonl; tolerates a cut last line,
    so it works while a run is still writing."""
    steps, evals = [], []
    path = Path(run_dir) / METRICS
    if not path.exists():
        return steps, evals
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        (evals if rec.get("event") == "eval" else steps if "loss" in rec and "event" not in rec else []).append(rec)
    return steps, evals


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """The spec's smoothing: np.convolve(..., mode='valid'), aligned to the window's last step."""
    if len(x) < window:
        return np.array([])
    return np.convolve(x, np.ones(window) / window, mode="valid")


def training_curve(run_dir, out_path, window: int = 10, title: str | None = None) -> Path:
    """Raw training loss, its `window`-step moving average (as the spec draws it), the
    evaluation points, the best step, and a bits/char axis on the right."""
    plt = _plt()
    steps, evals = read_metrics(run_dir)
    if not steps:
        from .config import CharwiseError
        raise CharwiseError(f"{run_dir}: no training steps recorded yet in {METRICS}")
    s = np.array([r["step"] for r in steps])
    loss = np.array([r["loss"] for r in steps])
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(s, loss, alpha=0.3, color=BLUE, lw=1, label="training loss")
    ma = moving_average(loss, window)
    if len(ma):
        ax.plot(s[window - 1:], ma, color=RED, lw=2, label=f"{window}-step average")
    if evals:
        split = evals[-1].get("eval_split", "val")
        es = [e["step"] for e in evals]
        ev = [e["val_loss"] for e in evals]
        ax.plot(es, ev, "o-", color=GREEN, ms=4, lw=1.2,
                label="validation loss" if split == "val" else "loss on the whole text")
        best = min(range(len(ev)), key=ev.__getitem__)
        ax.axvline(es[best], color=GREY, ls="--", lw=1)
        right_half = es[best] > 0.6 * max(s[-1], es[-1])
        ax.annotate(f"best {ev[best]:.3f} @ step {es[best]}", (es[best], ev[best]),
                    textcoords="offset points", xytext=(-6 if right_half else 6, 12),
                    ha="right" if right_half else "left", color=GREY, fontsize=9)
    ax.set_title(title or "Character-level LM training loss")
    ax.set_xlabel("Step")
    ax.set_ylabel("Cross-entropy (nats/char)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper right")
    right = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    right.set_ylabel("bits/char")
    fig.tight_layout()
    return _save(fig, out_path)
