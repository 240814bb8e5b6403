"""Runs in a notebook: `charwise.open_run(path)` gives a Run that shows itself as a card
(settings, best loss, a curve thumbnail) and draws its pictures inline.

    import charwise
    run = charwise.open_run("runs/x")       # or Run.from_result(charwise.train(...))
    run                                     # the card
    run.plot_curve()                        # matplotlib Figures: they render inline
    run.samples(temperatures=(0.5, 1.0, 1.5))
    run.per_char(); run.heatmap("Mr Bennet replied that he had not.")
    run.neurons(); run.show_unit(17)        # selective units; text coloured by one unit

Every method returns an object (a Figure, or something with _repr_html_) rather than writing
files, and nothing here needs IPython: outside a notebook the objects print as text. It uses the
same computations as `charwise analyze` (analysis, neurons, plots), only drawn for a notebook.
"""
from __future__ import annotations

import base64
import html
import io
import math
import sys
from pathlib import Path

import numpy as np

# The core modules this view is drawn from (one place to change if they move).
from .errors import CharwiseError
from .inspect import analysis as A
from .inspect import neurons as N
from .inspect.plots import curve_figure, heatmap_figure, moving_average, per_char_figure, read_metrics
from .scoring import LN2

__all__ = ["Run", "open_run", "compare_curves", "Samples", "Neurons", "HTML"]

COLOURS = ("#3498db", "#e74c3c", "#27ae60", "#8e44ad", "#f39c12", "#7f8c8d")


def open_run(path, which: str = "best") -> "Run":
    """A run directory made by `charwise train`, for a notebook (see Run)."""
    return Run(path, which)


class HTML:
    """HTML that a notebook renders (IPython calls _repr_html_); prints as plain text elsewhere."""

    def __init__(self, html_text: str, text: str = ""):
        self.data, self.text = html_text, text

    def _repr_html_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        return self.text or self.data


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _png_base64(fig, dpi: int = 80) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(rows) -> str:
    td = 'style="text-align:left;padding:1px 8px;vertical-align:top"'
    return ("<table>" + "".join(f"<tr><td {td}><b>{_e(k)}</b></td><td {td}>{_e(v)}</td></tr>"
                                for k, v in rows) + "</table>")


class Run:
    """A trained (or training) run directory with its best weights loaded.

    info is run.json (settings, vocabulary, history); model is the CharModel that
    `charwise.load` returns (generate, stream, evaluate)."""

    def __init__(self, path, which: str = "best"):
        from .api import load
        self.path = Path(path)
        self.which = which
        self.model = load(self.path, which=which)
        self.info = self.model.info
        self._texts: dict = {}

    @classmethod
    def from_result(cls, result, which: str = "best") -> "Run":
        """The Run of what `charwise.train(...)` returned (its TrainResult)."""
        return cls(result.run_dir, which)

    # ------------------------------------------------------------------------- numbers

    @property
    def vocab(self):
        return self.model.vocab

    @property
    def net(self):
        return self.model.net

    @property
    def config(self) -> dict:
        """The settings the run was trained with: {"model": {...}, "train": {...}}."""
        return {"model": dict(self.info["model"]), "train": dict(self.info["train"])}

    @property
    def best_loss(self) -> float | None:
        """Best evaluation loss (nats/char): the validation split's, or the whole text's when
        the run has no split (the spec preset)."""
        best = self.info.get("best") or {}
        return best.get("val_loss")

    @property
    def best_step(self) -> int | None:
        return (self.info.get("best") or {}).get("step")

    @property
    def eval_split(self) -> str:
        hist = self.info.get("history") or []
        return hist[-1].get("eval_split", "val") if hist else "val"

    def parameters(self) -> dict:
        """Parameter count per part: embedding, recurrent layers, output head, total."""
        net = self.net
        parts = {"embedding": net.embed.weight.numel(),
                 net.cfg.cell.upper(): sum(p.numel() for p in net.rnn.parameters()),
                 "output head": sum(p.numel() for p in net.head.parameters())}
        parts["total"] = sum(parts.values())
        return parts

    def plateau(self, tol: float = 0.01) -> dict | None:
        """When the evaluation loss stopped improving (see charwise.analysis.plateau)."""
        return A.plateau(self.info, tol)

    def generate(self, prime: str = "", n: int = 200, temperature: float = 1.0, **kw) -> str:
        return self.model.generate(prime, n, temperature, **kw)

    def evaluate(self, text: str, oov: str = "error") -> dict:
        """Exact loss of `text` (nats/char, bits/char, perplexity) in one stateful pass."""
        return self.model.evaluate(text, oov=oov)

    # ------------------------------------------------------------------------- the card

    def _summary_rows(self) -> list[tuple[str, str]]:
        m, t, c = self.info["model"], self.info["train"], self.info.get("corpus", {})
        V = len(self.vocab)
        rows = [("run", str(self.path)),
                ("model", f"{m['cell'].upper()} {m['layers']}\u00d7{m['hidden_size']}, embedding "
                          f"{m['embed_dim']}, dropout {m['dropout']}"),
                ("parameters", f"{self.info.get('parameters', 0):,}"),
                ("vocabulary", f"{V} characters (uniform guessing: ln {V} = {math.log(V):.3f} nats/char)"),
                ("corpus", f"{Path(str(c.get('source', '?'))).name}: {c.get('chars', 0):,} chars "
                           f"({c.get('train_chars', 0):,} train, {c.get('val_chars', 0):,} validation)"),
                ("training", f"{self.info.get('step', 0):,} steps in {self.info.get('train_seconds', 0):.1f} s; "
                             f"windows {t['seq_len']} \u00d7 {t['batch_size']} streams, lr {t['lr']}; "
                             f"{self.info.get('status')} ({self.info.get('stopped_because') or '-'})")]
        if self.best_loss is not None:
            where = "validation" if self.eval_split == "val" else "whole training text"
            rows.append(("best loss", f"{self.best_loss:.4f} nats/char ({self.best_loss / LN2:.3f} "
                                      f"bits/char) on the {where}, step {self.best_step}"))
        return rows

    def thumbnail(self):
        """A small training curve (Figure) for the card, or None before the first step."""
        steps, evals = read_metrics(self.path)
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

    def _repr_html_(self) -> str:
        fig = self.thumbnail()
        img = (f'<img alt="training curve" style="margin-left:1em" '
               f'src="data:image/png;base64,{_png_base64(fig, dpi=90)}">' if fig is not None else "")
        return (f'<div style="display:flex;align-items:flex-start;flex-wrap:wrap">'
                f"<div>{_table(self._summary_rows())}</div>{img}</div>")

    def __repr__(self) -> str:
        return "\n".join(f"{k:<11} {v}" for k, v in self._summary_rows())

    # ------------------------------------------------------------------------- pictures

    def plot_curve(self, window: int = 10, title: str | None = None):
        """The training curve: raw loss, its moving average, evaluations, best step (a Figure)."""
        return curve_figure(self.path, window, title)

    def _text(self, text=None, oov: str = "error"):
        """(ids, description) of `text`, or of the run's own analysis text when None (its
        validation split, or the training text when it has none)."""
        if text is not None:
            ids, skipped = self.vocab.encode_text(text, oov, what="text")
            return np.asarray(ids, np.int64), ("the given text" + (f" ({skipped} characters skipped)"
                                                                    if skipped else ""))
        if None not in self._texts:
            t = A.analysis_text(self.path, self.info, self.vocab)
            self._texts[None] = (t.ids, t.source)
        return self._texts[None]

    def losses(self, text=None, window: int | None = None, oov: str = "error") -> np.ndarray:
        """Loss (nats) of each prediction of `text` (None: the run's analysis text); entry i
        predicts character i+1. window None: one pass with the state carried through the whole
        text; window T: each T-character window scored from a zero state, as the chapter does
        (the same predictions, less context)."""
        ids, _ = self._text(text, oov)
        if window is None:
            return A.position_losses(self.net, ids)[0]
        if window < 1:
            raise CharwiseError(f"window must be >= 1, got {window}")
        parts = [A.position_losses(self.net, ids[k:k + window + 1])[0]
                 for k in range(0, len(ids) - 1, window)]
        return np.concatenate(parts)

    def per_char_table(self, text=None, oov: str = "error"):
        """Loss per target character, hardest first (a CharTable), from one stateful pass."""
        key = ("table", text, oov)
        if key not in self._texts:
            ids, _ = self._text(text, oov)
            self._texts[key] = A.char_table(self.vocab, ids, *A.position_losses(self.net, ids))
        return self._texts[key]

    def per_char(self, text=None, k: int = 15, oov: str = "error"):
        """Chart of the k hardest characters to predict (a Figure); text None: the run's
        validation split (the training text for a run without one)."""
        _, source = self._text(text, oov)
        return per_char_figure(self.per_char_table(text, oov), k,
                               title=f"Per-character average loss (hardest to predict): {source}")

    def default_sentence(self) -> str:
        """The chapter's heatmap sentence if the model knows its characters, else the first
        line of the run's analysis text."""
        if not self.vocab.unknown(A.SPEC_SENTENCE):
            return A.SPEC_SENTENCE
        ids, _ = self._text()
        first = next((ln for ln in self.vocab.decode(ids[:500]).split("\n") if ln.strip()), "")
        return first[:60]

    def heatmap(self, text: str | None = None, layer: int = -1, state: str = "h",
                sort: str = "cluster", max_units: int = 128, oov: str = "error"):
        """Hidden (or cell) state of one layer while reading `text`: units x characters (a Figure)."""
        hm = N.heatmap(self.net, self.vocab, text or self.default_sentence(), layer, state, sort,
                       max_units, oov)
        return heatmap_figure(hm)

    def samples(self, prime: str | None = None, temperatures=(0.5, 1.0, 1.5), n: int = 200,
                seed: int = 1) -> "Samples":
        """One sample per temperature from the same prime and seed, shown side by side, with the
        mean log-likelihood of each sample's generated characters under the model."""
        if prime is None:
            prime = A.SPEC_PRIME if not self.vocab.unknown(A.SPEC_PRIME) else ""
        return Samples(A.temperature_sweep(self.model, prime, temperatures, n, seed))

    # ------------------------------------------------------------------------- neurons

    def neurons(self, text=None, chars: int = 20_000, top: int = 3, layer: int = -1,
                state: str = "h") -> "Neurons":
        """For each property of the character just read (inside quotes, line start, word start,
        capital...), the `top` units whose activation correlates with it most (Pearson r) over
        the first `chars` characters of `text` (None: the run's analysis text)."""
        ids, source = self._text(text)
        ids = ids[:chars]
        acts = N.layer_states(self.net, ids, layer, state)
        feats = N.text_features(self.vocab.decode(ids))
        return Neurons(N.selective_units(acts, feats, top), len(ids), source)

    def show_unit(self, unit: int, text=None, chars: int = 600, layer: int = -1,
                  state: str = "h", label: str = "") -> HTML:
        """The text coloured by one unit's activation just after each character is read (red
        positive, blue negative); hover a character for the activation and the model's top-5
        guesses for the next one. Without a text: the run's analysis text, from its first line start."""
        ids, source = self._text(text)
        if text is None:
            nl = np.flatnonzero(ids[:200] == self.vocab.chars.index("\n")) if "\n" in self.vocab.chars else []
            ids = ids[nl[0] + 1:] if len(nl) else ids
        ids = ids[:chars]
        acts = N.layer_states(self.net, ids, layer, state)
        if not 0 <= unit < acts.shape[1]:
            raise CharwiseError(f"unit must be in 0..{acts.shape[1] - 1} for this model, got {unit}")
        a = acts[:, unit]
        top, p = N.next_guesses(self.net, ids, 5)
        chars_ = [self.vocab.chars[i] for i in ids]
        scale = 1.0 if state == "h" else float(np.abs(a).max()) or 1.0
        spans = []
        for ch, x, tj, pj in zip(chars_, a, top, p):
            guess = "  ".join(f"{A.visible(self.vocab.chars[j])} {q:.0%}" for j, q in zip(tj, pj))
            alpha = min(abs(float(x)) / scale, 1.0)
            rgb = "231,76,60" if x > 0 else "52,152,219"
            shown = "\u21b5\n" if ch == "\n" else _e(ch)
            spans.append(f'<span style="background:rgba({rgb},{alpha:.2f});border-radius:2px" '
                         f'title="{_e(f"{state}[{unit}] = {x:+.2f} | next: {guess}")}">{shown}</span>')
        head = (f"<b>Unit {unit}</b>{': ' + _e(label) if label else ''} "
                f'<span style="color:#777">({state} of layer '
                f"{layer + self.net.cfg.layers if layer < 0 else layer}, {len(ids)} characters of "
                f"{_e(source)}; red positive, blue negative; hover for the next-character guesses)</span>")
        body = ('<div style="white-space:pre-wrap;font-family:\'DejaVu Sans Mono\',monospace;'
                'line-height:1.5;padding:.4em;border:1px solid #eee;color:#222;background:#fff">'
                + "".join(spans) + "</div>")
        text_view = "".join(ch for ch in chars_)
        return HTML(f"<div>{head}{body}</div>", f"unit {unit}: {text_view[:80]!r}...")


class Samples(list):
    """temperature_sweep's results (dicts: temperature, prime, text, loglik_nats...), shown as
    columns side by side in a notebook."""

    def _repr_html_(self) -> str:
        cols = []
        for s in self:
            ll = ("" if s["loglik_nats"] is None
                  else f"<br><small>mean log-likelihood {s['loglik_nats']:.3f} nats/char</small>")
            prime = _e(s["prime"])
            rest = _e(s["text"][len(s["prime"]):])
            cols.append(f'<div style="flex:1;min-width:14em"><b>temperature {s["temperature"]:g}</b>{ll}'
                        f'<pre style="white-space:pre-wrap;font-size:0.85em;background:#fafafa;'
                        f'padding:.5em;border:1px solid #eee"><b>{prime}</b>{rest}</pre></div>')
        return f'<div style="display:flex;gap:1em">{"".join(cols)}</div>'

    def __repr__(self) -> str:
        return "\n\n".join(f"temperature {s['temperature']:g}:\n{s['text']}" for s in self)

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
                f"read, over {self.chars:,} characters of {_e(self.source)}:</p>" + _table(rows))

    def __repr__(self) -> str:
        return "\n".join(f"{f:<34} " + ", ".join(f"{r['unit']} ({r['r']:+.2f})" for r in rs)
                         for f, rs in self._grouped().items())


def compare_curves(runs, labels=None, window: int = 10, title: str = "Training curves compared"):
    """Several runs on one chart: each one's `window`-step average training loss (line) and
    its evaluations (dots). runs: Run objects or run directories. A Figure."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        path = run.path if isinstance(run, Run) else Path(run)
        label = labels[i] if labels else path.name
        steps, evals = read_metrics(path)
        colour = COLOURS[i % len(COLOURS)]
        s = np.array([r["step"] for r in steps])
        loss = np.array([r["loss"] for r in steps])
        ma = moving_average(loss, window)
        if len(ma):
            ax.plot(s[window - 1:], ma, color=colour, lw=1.5, label=f"{label}: training ({window}-step average)")
        if evals:
            ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o--", color=colour,
                    ms=4, lw=0.8, label=f"{label}: evaluation")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Step")
    ax.set_ylabel("Cross-entropy (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _show_figures_inline() -> None:
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


_show_figures_inline()
