"""`charwise analyze`: run every analysis of analysis.py on a run, draw it (plots.py), and write
the pages: RUN/analysis/report.html (one self-contained file: images as base64 data URIs, the
neuron view inline) and neurons.html (the neuron view alone: the text coloured by single units,
top-5 guesses on hover; no JavaScript).

    OUT/per_char.csv  per_char.png  curve.png  heatmap.png  neurons.html  report.html  analysis.json

A Transformer carries no hidden state from character to character, so it has no units to draw:
in their place it gets attention.png (attention.py: every layer and head over the sentence, at
most its context) and no neuron view; the options that only mean something for units (--unit,
--state c, --sort, --max-units, --neuron-chars) are refused in one line before anything is written.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..cells import is_attention, shape_text
from ..errors import CharwiseError
from ..generation.charmodel import load
from ..guards import check_out_path, check_own_run, check_utf8_path
from ..runs import rundir
from ..runs.rundir import CURVE, atomic_write_bytes, atomic_write_json, check_run_dir, default_out, read_run
from ..scoring import eval_precision
from ..settings.commands import AnalyzeOptions
from ..settings.options import flag_name
from ..threads import check_threads
from . import analysis as A
from . import attention as ATT
from . import neurons as N
from .plots import attention_chart, heatmap_chart, per_char_chart, read_metrics, training_curve

SELECTIVITY_CHARS = 20_000          # units are ranked on this much text (one forward pass)
MIN_R = 0.3                         # a weaker correlation is not worth a coloured block
# what analyze writes in OUT (an earlier analysis's files are replaced only with --force)
PER_CHAR_CSV, PER_CHAR_PNG, HEATMAP, ATTENTION, NEURONS, REPORT, ANALYSIS_JSON = (
    "per_char.csv", "per_char.png", "heatmap.png", "attention.png", "neurons.html", "report.html",
    "analysis.json")
OUTPUTS = (PER_CHAR_CSV, PER_CHAR_PNG, CURVE, HEATMAP, ATTENTION, NEURONS, REPORT, ANALYSIS_JSON)
# the options about hidden units: refused for a transformer, which has none
RECURRENT_ONLY = ("unit", "state", "sort", "max_units", "neuron_chars")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td.l,th.l{text-align:left}img{max-width:100%}.note{color:#a05a00}
pre,.txt{white-space:pre-wrap;font-family:'DejaVu Sans Mono',monospace;background:#fafafa;
padding:.6em;border:1px solid #eee;line-height:1.5}.scroll{max-height:420px;overflow-y:auto}
.txt span{border-radius:2px}.muted{color:#777}"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _table(head: list[str], rows: list[list], left: int = 1) -> str:
    th = "<tr>" + "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>'
                          for i, h in enumerate(head)) + "</tr>" if head else ""
    trs = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>'
                                   for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{th}{trs}</table>"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


# ----------------------------------------------------------------------------- neuron view

def _coloured(chars: list[str], acts: np.ndarray, scale: float, hover: list[str]) -> str:
    """One <span> per character, red for positive and blue for negative activation."""
    out = []
    for ch, a, tip in zip(chars, acts, hover):
        alpha = min(abs(float(a)) / scale, 1.0)
        rgb = "231,76,60" if a > 0 else "52,152,219"
        shown = "\u21b5\n" if ch == "\n" else _e(ch)
        out.append(f'<span style="background:rgba({rgb},{alpha:.2f})" title="{_e(tip)}">{shown}</span>')
    return '<div class="txt">' + "".join(out) + "</div>"


def neuron_view(net, vocab, ids: np.ndarray, out_path, layer: int = -1, kind: str = "h",
                unit: int | None = None, chars: int = 1000, blocks: int = 6,
                threads: int | None = None) -> dict:
    """Write the neuron page; return the selective units and the units shown."""
    stats_ids = ids[:max(SELECTIVITY_CHARS, chars)]
    acts = N.layer_states(net, stats_ids, layer, kind)                  # (T, H)
    feats = N.text_features(vocab.decode(stats_ids))
    sel = N.selective_units(acts, feats, top=3)
    H = acts.shape[1]
    if unit is not None and not 0 <= unit < H:
        raise CharwiseError(f"--unit must be in 0..{H - 1} for this model, got {unit}")
    best = list({s["feature"]: s for s in reversed(sel)}.values())     # the top unit per feature
    best.sort(key=lambda s: -abs(s["r"]))
    shown = ([unit] if unit is not None else []) + [s["unit"] for s in best if abs(s["r"]) >= MIN_R]
    shown = list(dict.fromkeys(shown))[:blocks] or [int(np.argmax(acts.var(axis=0)))]
    n = min(chars, len(ids))
    top, p = N.next_guesses(net, ids[:n], 5, threads)                             # (n, 5)
    text = [vocab.chars[i] for i in ids[:n]]
    guesses = ["next: " + "  ".join(f"{A.visible(vocab.chars[j])} {q:.0%}" for j, q in zip(tj, pj))
               for tj, pj in zip(top, p)]
    why = {s["unit"]: s for s in reversed(best)}
    layer_n = layer + net.cfg.layers if layer < 0 else layer
    intro = ("<p>Each character is coloured by one unit's activation just after the model read it "
            "(red positive, blue negative, white near 0). Hover a character for the activation "
            "and the model's top-5 guesses for the next character. r is the correlation between the "
            f"unit and a property of the character just read (r &gt; 0: higher where it holds); units "
             f"with |r| &ge; {MIN_R} are shown.</p>")
    units = []
    for u in shown:
        a = acts[:n, u]
        scale = 1.0 if kind == "h" else float(np.abs(a).max()) or 1.0
        s = why.get(u)
        label = (f": r = {s['r']:+.2f} with <b>{_e(s['feature'])}</b>" if s and abs(s["r"]) >= MIN_R
                 else " (chosen with --unit)" if u == unit else " (the most variable unit)")
        hover = [f"{kind}[{u}] = {x:+.2f} | {g}" for x, g in zip(a, guesses)]
        units.append(f"<h3>Unit {u}{label}</h3>" + _coloured(text, a, scale, hover))
    body = [f"<h1>Neuron view: {kind} of layer {layer_n}</h1>", intro, *units,
            "<h2>Most selective units</h2><p>Pearson r between a unit's activation and a "
            f"property of the character just read, over the first {len(stats_ids):,} characters."
            "</p>" + selective_table(sel)]
    atomic_write_bytes(out_path, _page("charwise neuron view", "\n".join(body)).encode())
    # the same view, for report.html to carry inside itself (it must stand alone)
    inline = f"<h2>Neuron view: {kind} of layer {layer_n}</h2>" + intro + "\n".join(units)
    return {"selective": sel, "shown": shown, "path": str(out_path), "html": inline}


# ----------------------------------------------------------------------------- the report

def selective_table(sel: list[dict]) -> str:
    """One row per property: its best units with their r."""
    rows: dict[str, list[str]] = {}
    for s in sel:
        rows.setdefault(s["feature"], []).append(f"unit {s['unit']} ({s['r']:+.2f})")
    return _table(["property of the character just read", "best units (r)"],
                  [[k, ",  ".join(v)] for k, v in rows.items()], left=2)


def _run_section(info: dict, run: Path) -> str:
    m, t, c = info["model"], info["train"], info["corpus"]
    rows: list[list[Any]] = [
            ["run directory", run], ["status", f"{info.get('status')} ({info.get('stopped_because') or '-'})"],
            ["model", f"{shape_text(m)}, "
                      f"dropout {m['dropout']}, vocabulary {m['vocab_size']}"],
            ["parameters", f"{info.get('parameters', 0):,}"],
            ["corpus", f"{c['source']} ({c['chars']:,} chars: {c['train_chars']:,} train, {c['val_chars']:,} val)"],
            ["training", f"{info.get('step', 0):,} steps in {info.get('train_seconds', 0):.1f}s on "
                         f"{info.get('device')} {info.get('precision')}; lr {t['lr']}, batch {t['batch_size']} "
                         f"x seq_len {t['seq_len']}, patience {t.get('patience') or 'off'}"]]
    return "<h2>Run</h2>" + _table([], rows, left=2)


def write_report(path, run: Path, info: dict, res: dict, images: dict, neuron_html: str = "") -> Path:
    tab = res["per_char"]
    pl = res["plateau"]
    body = [f"<h1>charwise analysis of {_e(run.name)}</h1>",
            f"<p>Analysed text: <b>{_e(res['text']['source'])}</b> ({res['text']['chars']:,} characters)</p>"]
    if res["text"]["note"]:
        body.append(f'<p class="note">Note: {_e(res["text"]["note"])}</p>')
    body.append(_run_section(info, run))
    body.append("<h2>Training curve</h2>")
    body.append(_img(images["curve"], "training curve") if "curve" in images else
                '<p class="muted">no training steps recorded</p>')
    if pl:
        split = "validation" if pl["split"] == "val" else "whole-text"
        body.append(f"<p><b>Plateau:</b> {_e(pl['verdict'])}. Best {split} "
                    f"loss {pl['best_loss']:.4f} nats ({pl['best_loss'] / A.LN2:.3f} bits/char) "
                    f"at step {pl['best_step']}.</p>")
    body.append("<h2>Samples at different temperatures</h2><p>Mean log-likelihood of the generated "
                "characters under the model (at temperature 1); novelty of the generated characters (the "
                "prime left out) against the training text: the longest stretch copied verbatim and the "
                "share of 10- and 20-character n-grams found in it "
                "(100% = memorised, near 0 = invented).</p>")
    rows = []
    for s in res["samples"]:
        nv = s.get("novelty") or {}
        ov = nv.get("ngram_overlap", {})
        ll = "n/a" if s["loglik_nats"] is None else f"{s['loglik_nats']:.3f} ({s['loglik_bits']:.3f})"
        rows.append([s["temperature"], ll, nv.get("longest_copy_len", "n/a"), _pct(ov.get(10)), _pct(ov.get(20))])
    body.append(_table(["temperature", "mean log-likelihood, nats (bits)/char", "longest copy (chars)",
                        "10-grams copied", "20-grams copied"], rows))
    for s in res["samples"]:
        body.append(f"<h3>Temperature {s['temperature']}</h3><pre>{_e(s['text'])}</pre>")
    if res.get("novelty_note"):
        body.append(f'<p class="note">{_e(res["novelty_note"])}</p>')
    o = res["overall"]
    C = info["model"].get("context") if is_attention(info["model"]["cell"]) else None
    how = (f"One stateful pass over {o['predictions']:,} predictions, each with its full left context"
           if C is None else f"{o['predictions']:,} predictions in windows of at most {C} characters "
           f"(the context), each past the first {C // 2} seen with at least {C // 2} characters "
           "before it, as sampling sees the text")
    body.append(f"<h2>Per-character loss</h2><p>{how}: <b>{o['nats']:.4f} nats/char</b> ({o['bits']:.4f} bits/char, "
                f"perplexity {o['perplexity']:.3f}), top-1 accuracy {o['accuracy']:.1%}.</p>")
    body.append(_img(images["per_char"], "per-character loss"))
    rows = [[r["label"], f"{r['count']:,}", f"{r['mean_nats']:.4f}", f"{r['mean_bits']:.4f}",
             f"{r['accuracy']:.1%}", f"{r['share_of_loss']:.1%}"] for r in tab]
    body.append('<div class="scroll">' + _table(["char", "count", "mean nats", "mean bits",
                                                   "top-1 accuracy", "share of total loss"], rows) + "</div>")
    body.append(_inside_section(res, images, neuron_html))
    atomic_write_bytes(path, _page(f"charwise analysis: {run.name}", "\n".join(body)).encode())
    return Path(path)


def _inside_section(res: dict, images: dict, neuron_html: str) -> str:
    """The report's look inside: a recurrent model's hidden-state heatmap and selective units,
    or in their place a transformer's attention maps."""
    if "attention" in res:
        at = res["attention"]
        layers = (f"layer {at['layers'][0]}" if len(at["layers"]) == 1
                  else f"all {len(at['layers'])} layers")
        return (f"<h2>Attention over a sentence</h2><p>Attention weights of {layers}, every head, "
                f"while reading <code>{_e(at['text'])}</code> ({at['chars']} characters"
                f"{'; ' + _e(at['note']) if at['note'] else ''}). One panel per layer and head: row = "
                "the character just read (the query, which predicts the next), column = an earlier "
                "character it attends to (the key); each row sums to 1, and nothing above the "
                "diagonal is seen. A transformer carries no hidden state from character to character, "
                "so it has no units to draw.</p>" + _img(images["attention"], "attention maps"))
    hm = res["heatmap"]
    return (f"<h2>Hidden state over a sentence</h2><p>{_e(hm['kind'])} of layer {hm['layer']} while "
            f"reading <code>{_e(hm['text'])}</code>; units sorted by {_e(hm['sort'])}"
            f"{'; ' + _e(hm['note']) if hm['note'] else ''}.</p>" + _img(images["heatmap"], "heatmap")
            + '<h2>Selective units</h2><p>Correlation r of single units with properties of the '
            'character just read; the text coloured by these units follows (also in '
            "neurons.html beside this file).</p>" + selective_table(res["neurons"]["selective"])
            + neuron_html)


# ----------------------------------------------------------------------------- orchestration

def check_cell_options(net, o: AnalyzeOptions) -> None:
    """--unit in range for a recurrent model; for a transformer, which has no units, the options
    about units refused in one line rather than silently ignored."""
    if not is_attention(net.cfg.cell):
        if o.unit is not None and not 0 <= o.unit < net.cfg.hidden_size:
            raise CharwiseError(f"--unit must be in 0..{net.cfg.hidden_size - 1} for this model, got {o.unit}")
        return
    for f in dataclasses.fields(o):
        if f.name in RECURRENT_ONLY and getattr(o, f.name) != f.default:
            raise CharwiseError(f"{flag_name(f)} {getattr(o, f.name)}: a transformer has no hidden "
                                "units (no cell state, no neuron view); analyze draws its attention "
                                "maps instead (--text, --layer)")


def _look_inside(net, vocab, o: AnalyzeOptions, sentence: str):
    """The heatmap (a recurrent model) or the attention maps (a transformer) of `sentence`: cheap,
    so computed before the long pass, which a bad --text or --layer then never starts."""
    if is_attention(net.cfg.cell):
        return ATT.attention(net, vocab, sentence, o.layer, o.oov)
    return N.heatmap(net, vocab, sentence, -1 if o.layer is None else o.layer, o.state, o.sort,
                     o.max_units, o.oov)


def _draw_inside(inside, net, vocab, ids, sentence: str, out: Path, o: AnalyzeOptions,
                 threads) -> tuple[dict, dict, str]:
    """(images, analysis.json's entries, the neuron view's html for the report) of _look_inside's
    result: attention.png, or heatmap.png with the neuron view (neurons.html)."""
    if isinstance(inside, ATT.AttentionMaps):
        return ({"attention": attention_chart(inside, out / ATTENTION)},
                {"attention": {"text": inside.text, "chars": len(inside.chars), "layers": inside.layers,
                               "heads": inside.heads, "context": inside.context, "note": inside.note}}, "")
    hm = inside
    layer = -1 if o.layer is None else o.layer
    images = {"heatmap": heatmap_chart(hm, out / HEATMAP)}
    neurons = neuron_view(net, vocab, ids, out / NEURONS, layer, o.state, o.unit, o.neuron_chars,
                          threads=threads)
    entries = {"heatmap": {"text": sentence, "layer": hm.layer, "kind": hm.kind,
                           "sort": hm.sort, "units": hm.units.tolist(), "note": hm.note},
               "neurons": neurons}
    return images, entries, neurons.pop("html")


def _hardest(tab, k: int = 15) -> dict:
    """The chart's ranking: highest mean loss among characters seen often enough to trust it."""
    top, min_count, rare = tab.hardest(k)
    return {"min_count": min_count, "left_out": rare, "rows": top.rows()}


def _default(vocab, preferred: str, fallback: str) -> str:
    """The spec's sentence/prime when the model knows all its characters, else `fallback`."""
    return preferred if not vocab.unknown(preferred) else fallback


def check_outputs(out: Path, run: Path, force: bool) -> Path:
    """The directory analyze may write OUTPUTS into, or a one-line reason why not; nothing is
    touched. A missing directory is made later; in an existing one an earlier analysis's files
    are replaced only with `force`. Never in another run's directory, never over a
    non-regular file (guards.check_out_path)."""
    out = check_utf8_path(out)
    if out.exists() and not out.is_dir():
        raise CharwiseError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        check_own_run(out / REPORT, run)
    for name in OUTPUTS if out.is_dir() else ():
        check_out_path(out / name, force, protect=run)
    return out


def _novelty(samples: list[dict], run: Path, info: dict, prime: str, vocab, log) -> str:
    """Each sample's novelty against the training text (in place); a note when it cannot be."""
    try:
        ref = vocab.decode(A.run_split(run, info)[0])
    except CharwiseError as e:
        log(f"note: novelty not computed: {e}")
        return f"novelty not computed: {e}"
    for s in samples:               # the generated part only: the prime is not the model's
        s["novelty"] = A.novelty(s["text"][len(prime):], ref)
    return ""


def analyze(run_dir, textfile=None, out=None, options: AnalyzeOptions | None = None, *,
            log=print, **kw) -> dict:
    """Everything `charwise analyze` does; returns the numbers (also in OUT/analysis.json).
    `textfile`: the text to score (default: the run's validation split); `out`: the directory
    (default: RUN_DIR/analysis), whose earlier analysis is replaced only with force. Options:
    AnalyzeOptions, or its fields as keyword arguments."""
    o = AnalyzeOptions.make(options, **kw)
    t0 = time.perf_counter()
    run = check_run_dir(run_dir)
    info = read_run(run)
    if out is None:                         # a bundled or packed model's: beside it, named after it
        out = default_out(run_dir, run, rundir.ANALYSIS_DIR, "-analysis")
    out = check_outputs(Path(out), run, o.force)        # before the long pass: fail fast
    if textfile is not None:
        check_utf8_path(textfile)                       # analysis.json records its name
    model = load(run, which=o.which, device=o.device)
    net, vocab = model.net, model.vocab
    if info.get("vocab_kind", "chars") != "chars" or model.line_mode:
        kind = "a byte-level run" if info.get("vocab_kind") == "bytes" else "a line-mode run"
        raise CharwiseError(f"charwise analyze reads code-point runs trained as one text; {run} is "
                            f"{kind} (use charwise eval and sample for it)")
    # the cheap checks of the arguments first, before the long pass over the text
    check_cell_options(net, o)
    prime = o.prime if o.prime is not None else _default(vocab, A.SPEC_PRIME, "")
    if prime:
        vocab.encode_text(prime, "error", "--prime")
    has_steps = bool(read_metrics(run)[0])     # a damaged metrics.jsonl: refused before writing
    txt = A.analysis_text(run, info, vocab, textfile, o.oov, o.encoding)
    first_line = next((ln for ln in vocab.decode(txt.ids[:500]).split("\n") if ln.strip()), "")
    sentence = o.text if o.text is not None else _default(vocab, A.SPEC_SENTENCE, first_line[:60])
    inside = _look_inside(net, vocab, o, sentence)
    if isinstance(inside, ATT.AttentionMaps) and inside.note:
        log(f"note: the attention maps' text: {inside.note}")
    if txt.note:
        log(f"note: {txt.note}")
    precision = eval_precision(net, o.precision, info.get("precision"))
    threads = check_threads(o.threads)
    losses, correct = A.position_losses(net, txt.ids, precision=precision, threads=threads)
    tab = A.char_table(vocab, txt.ids, losses, correct)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / PER_CHAR_CSV, tab.csv().encode())
    images = {"per_char": per_char_chart(tab, out / PER_CHAR_PNG,
                                         title=f"Per-character average loss (hardest to predict): {txt.source}")}
    if has_steps:
        images["curve"] = training_curve(run, out / CURVE)
    plat = A.plateau(info)
    inside_images, inside_res, neuron_html = _draw_inside(inside, net, vocab, txt.ids, sentence, out,
                                                         o, threads)
    images.update(inside_images)
    samples = A.temperature_sweep(model, prime, list(o.temperatures), o.n, o.seed, threads)
    nov_note = _novelty(samples, run, info, prime, vocab, log)
    res: dict[str, Any] = {"run_dir": str(run), "which": o.which,
           "text": {"source": txt.source, "chars": int(len(txt.ids)), "note": txt.note, "skipped": txt.skipped},
           "overall": {"predictions": tab.total, "nats": tab.overall_nats, "bits": tab.overall_nats / A.LN2,
                       "perplexity": math.exp(tab.overall_nats), "accuracy": float(correct.mean()),
                       "precision": precision},
           "per_char": tab.rows(), "hardest": _hardest(tab), "plateau": plat, "samples": samples,
           "novelty_note": nov_note, **inside_res}
    report = write_report(out / REPORT, run, info, res, images, neuron_html)
    pages = {"neurons": out / NEURONS} if "neurons" in res else {}
    res["files"] = {k: str(v) for k, v in {**images, "per_char_csv": out / PER_CHAR_CSV,
                                            **pages, "report": report}.items()}
    res["seconds"] = round(time.perf_counter() - t0, 3)
    _drop_stale(out, {Path(v).name for v in res["files"].values()})
    atomic_write_json(out / ANALYSIS_JSON, res)
    return res


def _drop_stale(out: Path, written: set[str]) -> None:
    """An earlier analysis's files this one did not write (an LSTM's heatmap beside a
    transformer's attention maps): deleted, so OUT holds one analysis. check_outputs allowed
    replacing them (--force) and checked that each is a regular file."""
    for name in OUTPUTS:
        old = out / name
        if name != ANALYSIS_JSON and name not in written and old.is_file() and not old.is_symlink():
            old.unlink()
