"""Figures. matplotlib is imported inside each function (lazily), and figures are made without
pyplot, so importing charwise never pays for it, headless machines need no display, and in a
notebook the *_figure functions return Figures that draw inline (the others write PNGs)."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np

from ..errors import CharwiseError
from ..files import MAX_METRICS_BYTES, read_utf8
from ..guards import check_metric_record, check_out_path
from ..runs.bundled import is_bundled
from ..runs.rundir import CURVE, METRICS, atomic_writer, check_run_dir
from ..scoring import LN2
from ..settings.commands import PlotOptions
from . import fonts
from .analysis import visible

BLUE, RED, GREEN, GREY = "#3498db", "#e74c3c", "#27ae60", "#7f8c8d"
CAPTION_CHARS = 110        # a 9-point caption line that fits a 10-inch figure with its margins


def _figure(figsize):
    """(Figure, Axes) without pyplot: no backend is chosen or switched (a notebook keeps its
    inline one), nothing is kept in pyplot's list of open figures, and no display is needed."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f, fonts.quiet_glyphs():
        fig.savefig(f, format="png", dpi=120)
    return path


def _layout(fig):
    with fonts.quiet_glyphs():          # a glyph no font has: fonts.for_labels said so once
        fig.tight_layout()
    return fig


def read_metrics(run_dir) -> tuple[list[dict], list[dict]]:
    """(per-step records, evaluation records) from RUN/metrics.jsonl; tolerates a cut last line,
    so it works while a run is still writing."""
    steps: list[dict] = []
    evals: list[dict] = []
    path = Path(run_dir) / METRICS
    if not os.path.lexists(path):
        return steps, evals
    for lineno, line in enumerate(read_utf8(path, MAX_METRICS_BYTES, "metrics file").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        check_metric_record(path, lineno, rec)
        (evals if rec.get("event") == "eval" else steps if "loss" in rec and "event" not in rec else []).append(rec)
    return steps, evals


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """The spec's smoothing: np.convolve(..., mode='valid'), aligned to the window's last step."""
    if len(x) < window:
        return np.array([])
    return np.convolve(x, np.ones(window) / window, mode="valid")


def plot(run_dir, out=None, options: PlotOptions | None = None, **kw) -> Path:
    """What `charwise plot` writes: the training curve as a PNG at `out` (default:
    RUN_DIR/curve.png, this command's own file, replaced). An `out` given is never an existing
    file without force, a run's own file, a file in another run's directory or a non-regular
    file. Options: PlotOptions (window, force), or its fields as keyword arguments."""
    o = PlotOptions.make(options, **kw)
    run = check_run_dir(run_dir)
    if run.is_file() or not (run / METRICS).is_file():
        what = ("a packed model" if run.is_file() else "a bundled model" if is_bundled(run_dir)
                else f"a run directory without {METRICS}")
        raise CharwiseError(f"{run_dir}: {what}, with no training curve to plot (plot reads a run "
                            f"directory's {METRICS}; `charwise info` shows what a model has)")
    path = check_out_path(out if out else run / CURVE, o.force or not out, protect=run)
    return training_curve(run, path, window=o.window)


def training_curve(run_dir, out_path, window: int = 10, title: str | None = None) -> Path:
    """The training curve (curve_figure) as a PNG file."""
    return _save(curve_figure(run_dir, window, title), out_path)


def curve_figure(run_dir, window: int = 10, title: str | None = None):
    """Raw training loss, its `window`-step moving average (as the spec draws it), the
    evaluation points, the best step, and a bits/char axis on the right: a Figure."""
    steps, evals = read_metrics(run_dir)
    if not steps:
        raise CharwiseError(f"{run_dir}: no training steps recorded yet in {METRICS}")
    s = np.array([r["step"] for r in steps])
    loss = np.array([r["loss"] for r in steps])
    fig, ax = _figure((10, 4))
    ax.plot(s, loss, alpha=0.3, color=BLUE, lw=1, label="training loss")
    ma = moving_average(loss, window)
    if len(ma):
        ax.plot(s[window - 1:], ma, color=RED, lw=2, label=f"{window}-step average")
    if evals:
        split = evals[-1].get("eval_split", "val")
        es = [e["step"] for e in evals]
        ev = [e["val_loss"] for e in evals]
        ax.plot(es, ev, "o-", color=GREEN, ms=4, lw=1.2,
                label="validation loss" if split == "val" else "loss on the whole training text (one pass)")
        best = min(range(len(ev)), key=ev.__getitem__)
        ax.axvline(es[best], color=GREY, ls="--", lw=1)
        ax.plot([es[best]], [ev[best]], "*", color=GREEN, ms=13, mec="white", zorder=5)
        right_half = es[best] > 0.6 * max(s[-1], es[-1])
        # a white box so the label stays legible where it crosses the loss curves
        ax.annotate(f"best {ev[best]:.3f} @ step {es[best]}", (es[best], ev[best]),
                    textcoords="offset points", xytext=(-8 if right_half else 8, 14),
                    ha="right" if right_half else "left", color="#555555", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85))
    ax.set_title(title or "Character-level LM training loss")
    ax.set_xlabel("Step")
    ax.set_ylabel("Cross-entropy (nats/char)")
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.12)    # headroom: labels stay under the title
    ax.grid(alpha=0.25)
    ax.legend(loc="upper right")
    _bits_axis(ax)
    return _layout(fig)


def _bits_axis(ax):
    ax.secondary_yaxis("right", functions=(lambda n: n / LN2, lambda b: b * LN2)
                       ).set_ylabel("bits/char")


def per_char_chart(table, out_path, k: int = 15, title: str | None = None) -> Path:
    """The per-character loss chart (per_char_figure) as a PNG file."""
    return _save(per_char_figure(table, k, title), out_path)


def per_char_figure(table, k: int = 15, title: str | None = None):
    """The spec's bar chart of the k hardest characters (highest mean loss among characters
    seen at least `table.min_count()` times: a mean over a few occurrences is noise), with
    readable labels (a space is \u2423, a newline \u21b5), each bar's count, and the mean over
    all characters."""
    top, min_count, rare = table.hardest(k)
    labels = [visible(c) for c in top.chars]
    fig, ax = _figure((10, 4.2))
    x = np.arange(len(labels))
    bars = ax.bar(x, top.mean_nats, color=BLUE, alpha=0.85)
    ax.set_xticks(x, labels, fontsize=13, family=fonts.for_labels(labels))
    for b, n, acc in zip(bars, top.count, top.accuracy):
        ax.annotate(f"n={n:,}\n{acc:.0%}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                    fontsize=7.5, color=GREY)
    ax.axhline(table.overall_nats, color=RED, ls="--", lw=1.2,
               label=f"mean over all {table.total:,} predictions: {table.overall_nats:.3f}")
    ax.set_ylim(0, max(float(top.mean_nats.max()), table.overall_nats) * 1.22 or 1)
    ax.set_title(title or "Per-character average loss (hardest to predict)")
    left_out = f"; {rare} character(s) seen fewer than {min_count} times left out" if rare else ""
    caption = (f"Character (\u2423 space, \u21b5 newline), ranked among those seen \u2265 {min_count} "
               f"times{left_out}; above each bar: count, top-1 accuracy")
    ax.set_xlabel("\n".join(textwrap.wrap(caption, CAPTION_CHARS)), fontsize=9)
    ax.set_ylabel("Cross-entropy (nats/char)")
    ax.grid(axis="y", alpha=0.25)
    ax.legend(loc="upper right", fontsize=9)
    _bits_axis(ax)
    return _layout(fig)


def heatmap_chart(hm, out_path, title: str | None = None) -> Path:
    """The hidden-state heatmap (heatmap_figure) as a PNG file."""
    return _save(heatmap_figure(hm, title), out_path)


def heatmap_figure(hm, title: str | None = None):
    """Units x characters, the characters as x tick labels. h is tanh-bounded, so its colour
    scale is fixed at [-1, 1] (comparable between pictures); c is scaled to its largest value."""
    U, T = hm.data.shape
    fig, ax = _figure((min(4 + 0.32 * T, 24), min(3 + 0.055 * U, 12)))
    lim = 1.0 if hm.kind == "h" else float(np.abs(hm.data).max()) or 1.0
    im = ax.imshow(hm.data, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    labels = [visible(c) for c in hm.chars]
    ax.set_xticks(np.arange(T), labels, fontsize=10, family=fonts.for_labels(labels))
    ax.tick_params(axis="x", length=0)
    stride = max(1, int(np.ceil(U / 32)))              # at most ~32 unit labels stay legible
    ax.set_yticks(np.arange(0, U, stride), [str(u) for u in hm.units[::stride]], fontsize=7)
    ax.set_ylabel(f"unit (sorted by {hm.sort})")
    ax.set_xlabel("character just read")
    name = "hidden state h" if hm.kind == "h" else "cell state c"
    shown = f"{U} units" + (f" ({hm.note})" if hm.note else "")
    ax.set_title(title or f"{name}, layer {hm.layer}: {shown} \u00d7 {T} characters")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01).set_label(f"{hm.kind} (layer {hm.layer})")
    return _layout(fig)


def attention_chart(am, out_path, title: str | None = None) -> Path:
    """The attention maps (attention_figure) as a PNG file."""
    return _save(attention_figure(am, title), out_path)


def attention_figure(am, title: str | None = None):
    """A Transformer's attention while reading a text: one panel per layer (rows) and head
    (columns), row t of a panel the weights query t (the character just read, predicting the
    next) puts on keys 0..t (earlier characters and itself). The weights are probabilities, so
    the colour scale is fixed at [0, 1] (comparable between panels and pictures), square-root
    so that the small weights of a long row still show; above the diagonal, the future, they are
    0. Characters label the outer panels' axes."""
    L, heads, T, _ = am.weights.shape
    panel = min(max(2.0, 0.11 * T + 0.8), 5.0, 22.0 / heads, 22.0 / L)        # inches per panel
    slot = panel * 72 / T                                                     # points per character
    fontsize = min(10.0, max(3.0, 0.8 * slot))
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    fig = Figure(figsize=(heads * panel + 1.6, L * panel + 1.4))
    axes = fig.subplots(L, heads, squeeze=False, sharex=True, sharey=True)
    labels = [visible(c) for c in am.chars]
    family = fonts.for_labels(labels)
    ims = []
    for r, layer in enumerate(am.layers):
        for h in range(heads):
            ax = axes[r, h]
            ims.append(ax.imshow(am.weights[r, h], cmap="Blues", interpolation="nearest",
                                 norm=PowerNorm(0.5, vmin=0.0, vmax=1.0)))
            ax.set_title(f"layer {layer}, head {h}", fontsize=9)
            ax.tick_params(length=0)
            if r == L - 1:
                ax.set_xticks(np.arange(T), labels, fontsize=fontsize, family=family)
            if h == 0:
                ax.set_yticks(np.arange(T), labels, fontsize=fontsize, family=family)
                ax.set_ylabel("character just read (query)", fontsize=8)
            if r == L - 1:
                ax.set_xlabel("earlier character attended to (key)", fontsize=8)
    shown = f"{T} characters" + (f" ({am.note})" if am.note else "")
    fig.suptitle(title or f"attention weights, {L} layer(s) \u00d7 {heads} heads: {shown}")
    fig.colorbar(ims[0], ax=axes, fraction=0.025, pad=0.01).set_label("attention weight (each row sums to 1; "
                                                              "square-root colour scale)")
    with fonts.quiet_glyphs():
        fig.set_layout_engine("constrained")
    return fig
