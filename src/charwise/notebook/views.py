"""How a notebook shows what a Run computes: HTML that renders inline (and prints as text
elsewhere), the samples side by side, the selective neurons as a table, the training-curve
figures, and inline PNGs for matplotlib Figures without pyplot. Nothing here needs IPython."""
from __future__ import annotations

import base64
import html
import io
import sys
from pathlib import Path

import numpy as np

from ..errors import CharwiseError
from ..inspect.analysis import visible
from ..inspect.plots import moving_average, read_metrics

COLOURS = ("#3498db", "#e74c3c", "#27ae60", "#8e44ad", "#f39c12", "#7f8c8d")


class HTML:
    """HTML that a notebook renders (IPython calls _repr_html_); prints as plain text elsewhere."""

    def __init__(self, html_text: str, text: str = ""):
        self.data, self.text = html_text, text

    def _repr_html_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        return self.text or self.data


def escape(x) -> str:
    return html.escape(str(x), quote=True)


def png_base64(fig, dpi: int = 80) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def table_html(rows) -> str:
    td = 'style="text-align:left;padding:1px 8px;vertical-align:top"'
    return ("<table>" + "".join(f"<tr><td {td}><b>{escape(k)}</b></td><td {td}>{escape(v)}</td></tr>"
                                for k, v in rows) + "</table>")


def card_html(rows, fig=None) -> str:
    """A run's card: its summary rows as a table, beside its training-curve thumbnail."""
    img = (f'<img alt="training curve" style="margin-left:1em" '
           f'src="data:image/png;base64,{png_base64(fig, dpi=90)}">' if fig is not None else "")
    return (f'<div style="display:flex;align-items:flex-start;flex-wrap:wrap">'
            f"<div>{table_html(rows)}</div>{img}</div>")


def unit_html(chars, ids, a, top, p, name: str, title: str, label: str, where: str,
              scale: float | None = 1.0) -> HTML:
    """Text (ids into `chars`) coloured by one unit's activation `a` after each character (red
    positive, blue negative, full colour at |a| = scale; None: the largest |a|); hovering a
    character shows `name` = its activation and the top guesses (`top` ids, `p` probabilities)
    for the next character."""
    scale = scale or float(np.abs(a).max()) or 1.0
    shown_chars = [chars[i] for i in ids]
    spans = []
    for ch, x, tj, pj in zip(shown_chars, a, top, p):
        guess = "  ".join(f"{visible(chars[j])} {q:.0%}" for j, q in zip(tj, pj))
        alpha = min(abs(float(x)) / scale, 1.0)
        rgb = "231,76,60" if x > 0 else "52,152,219"
        shown = "\u21b5\n" if ch == "\n" else escape(ch)
        spans.append(f'<span style="background:rgba({rgb},{alpha:.2f});border-radius:2px" '
                     f'title="{escape(f"{name} = {x:+.2f} | next: {guess}")}">{shown}</span>')
    head = (f"<b>{title}</b>{': ' + escape(label) if label else ''} "
            f'<span style="color:#777">({escape(where)}; red positive, blue negative; hover for '
            "the next-character guesses)</span>")
    body = ('<div style="white-space:pre-wrap;font-family:\'DejaVu Sans Mono\',monospace;'
            'line-height:1.5;padding:.4em;border:1px solid #eee;color:#222;background:#fff">'
            + "".join(spans) + "</div>")
    text_view = "".join(shown_chars)
    return HTML(f"<div>{head}{body}</div>", f"{title.lower()}: {text_view[:80]!r}...")


class Samples(list):
    """temperature_sweep's results (dicts: temperature, prime, text, loglik_nats...; a "label"
    heads a column in place of its temperature), shown as columns side by side in a notebook."""

    def _repr_html_(self) -> str:
        cols = []
        for s in self:
            ll = ("" if s["loglik_nats"] is None
                  else f"<br><small>mean log-likelihood {s['loglik_nats']:.3f} nats/char</small>")
            prime = escape(s["prime"])
            rest = escape(s["text"][len(s["prime"]):])
            head = escape(s.get("label") or f"temperature {s['temperature']:g}")
            cols.append(f'<div style="flex:1;min-width:14em"><b>{head}</b>{ll}'
                        f'<pre style="white-space:pre-wrap;font-size:0.85em;background:#fafafa;'
                        f'padding:.5em;border:1px solid #eee"><b>{prime}</b>{rest}</pre></div>')
        return f'<div style="display:flex;gap:1em">{"".join(cols)}</div>'

    def __repr__(self) -> str:
        return "\n\n".join(f"{s.get('label') or 'temperature ' + format(s['temperature'], 'g')}:\n"
                           f"{s['text']}" for s in self)

    @property
    def texts(self) -> dict:
        return {s["temperature"]: s["text"] for s in self}


class Neurons(list):
    """selective_units's results (dicts: feature, unit, r), shown as a table in a notebook."""

    def __init__(self, rows, chars: int = 0, source: str = ""):
        super().__init__(rows)
        self.chars, self.source = chars, source

    def best(self, feature: str) -> dict:
        """The most selective unit for a feature (the start of its name is enough)."""
        rows = [r for r in self if r["feature"].startswith(feature)]
        if not rows:
            raise CharwiseError(f"no feature starting with {feature!r}; features: "
                                  + ", ".join(dict.fromkeys(r["feature"] for r in self)))
        return max(rows, key=lambda r: abs(r["r"]))

    def _grouped(self) -> dict:
        out: dict = {}
        for r in self:
            out.setdefault(r["feature"], []).append(r)
        return out

    def _repr_html_(self) -> str:
        rows = [(f, ",  ".join(f"unit {r['unit']} ({r['r']:+.2f})" for r in rs))
                for f, rs in self._grouped().items()]
        return (f"<p>Pearson r between a unit's activation and a property of the character just "
                f"read, over {self.chars:,} characters of {escape(self.source)}:</p>" + table_html(rows))

    def __repr__(self) -> str:
        return "\n".join(f"{f:<34} " + ", ".join(f"{r['unit']} ({r['r']:+.2f})" for r in rs)
                         for f, rs in self._grouped().items())


def thumbnail(path):
    """A small training curve (Figure) of the run in `path`, or None before its first step."""
    steps, evals = read_metrics(path)
    if not steps:
        return None
    from matplotlib.figure import Figure
    fig = Figure(figsize=(3.6, 1.8))
    ax = fig.subplots()
    s = np.array([r["step"] for r in steps])
    loss = np.array([r["loss"] for r in steps])
    ax.plot(s, loss, color=COLOURS[0], alpha=0.3, lw=0.8)
    ma = moving_average(loss, 10)
    if len(ma):
        ax.plot(s[9:], ma, color=COLOURS[1], lw=1.2)
    if evals:
        ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-",
                color=COLOURS[2], ms=2.5, lw=0.8)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("step", fontsize=6)
    ax.set_ylabel("nats/char", fontsize=6)
    ax.grid(alpha=0.25)
    fig.tight_layout(pad=0.3)
    return fig


def compare_samples(runs, labels=None, prime: str = "", temperature: float = 1.0, n: int = 200,
                    seed: int = 1) -> Samples:
    """One sample from each run (Run objects), the same prime, temperature and seed, shown side by
    side: a column per run, headed by its label."""
    out = Samples()
    for i, run in enumerate(runs):
        s = run.samples(prime, (temperature,), n, seed)[0]
        s["label"] = f"{labels[i] if labels else run.path.name} (temperature {temperature:g})"
        out.append(s)
    return out


def _curve_xs(path, records, key: str, x: str) -> np.ndarray:
    """The x of each metrics record: its step, or (x "time") its seconds of training."""
    if x == "step":
        return np.array([r["step"] for r in records])
    if any(key not in r for r in records):
        raise CharwiseError(f"{path}: its metrics carry no training times; use x='step'")
    return np.array([r[key] for r in records])


def compare_curves(runs, labels=None, window: int = 10, title: str = "Training curves compared",
                   x: str = "step"):
    """Several runs on one chart: each one's `window`-step average training loss (line) and
    its evaluations (dots), against the step or (x "time") the seconds of training, the fair
    axis for runs of one time budget. runs: Run objects or run directories. A Figure."""
    if x not in ("step", "time"):
        raise CharwiseError(f"x must be 'step' or 'time', got {x!r}")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        path = Path(getattr(run, "path", run))        # a Run, or a run directory
        label = labels[i] if labels else path.name
        steps, evals = read_metrics(path)
        colour = COLOURS[i % len(COLOURS)]
        s = _curve_xs(path, steps, "t", x)
        loss = np.array([r["loss"] for r in steps])
        ma = moving_average(loss, window)
        if len(ma):
            ax.plot(s[window - 1:], ma, color=colour, lw=1.5, label=f"{label}: training ({window}-step average)")
        if evals:
            ax.plot(_curve_xs(path, evals, "time", x), [e["val_loss"] for e in evals], "o--",
                    color=colour, ms=4, lw=0.8, label=f"{label}: evaluation")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Step" if x == "step" else "Seconds of training")
    ax.set_ylabel("Cross-entropy (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_figures_inline() -> None:
    """In IPython, draw a returned matplotlib Figure as a PNG even if pyplot (which installs the
    inline backend's formatter) was never imported; a no-op elsewhere or once registered."""
    ipython = sys.modules.get("IPython")
    ip = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if ip is None:
        return
    from matplotlib.figure import Figure
    fmt = ip.display_formatter.formatters["image/png"]
    try:
        fmt.lookup_by_type(Figure)
        return
    except KeyError:
        pass
    from IPython.core.pylabtools import print_figure
    fmt.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))

