"""`charwise info RUN_DIR`: what a run is, read from its run.json alone (no weights loaded)."""
from __future__ import annotations

import math

from ..cells import shape_text
from ..settings.options import LN2, config_fields
from ..settings.train import ModelConfig, TrainConfig
from .rundir import BEST, LAST, check_run_dir, read_run


def describe(run_dir) -> dict:
    """The facts `charwise info` prints, as a JSON-able dict: a number that is not finite
    (run.json may hold NaN or Infinity, which JSON has not) is None, JSON's null."""
    return _finite(_describe(run_dir))


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _describe(run_dir) -> dict:
    run = check_run_dir(run_dir)
    info = read_run(run)
    best = info.get("best") or None
    hist = info.get("history") or []
    corpus = info.get("corpus") or {}
    return {
        "run_dir": str(run),
        "status": info.get("status"),
        "stopped_because": info.get("stopped_because"),
        "charwise_version": info.get("charwise_version"),
        "model": {k: v for k, v in info["model"].items()},
        "parameters": info.get("parameters"),
        "vocab": info["vocab"],
        "corpus": {k: corpus.get(k) for k in ("source", "sha256", "chars", "train_chars", "val_chars")},
        "train": info["train"],
        "steps": info.get("step"),
        "train_seconds": info.get("train_seconds"),
        "device": info.get("device"),
        "precision": info.get("precision"),
        "best_val_loss": best["val_loss"] if best else None,
        "best_step": best["step"] if best else None,
        "eval_split": hist[-1].get("eval_split") if hist else None,
        "last_train_loss": hist[-1].get("train_loss") if hist else None,
        "weights": ([f"{run.name} (packed)"] if run.is_file()
                    else [f for f in (BEST, LAST) if (run / f).is_file()]),
        "model_card": info.get("model_card"),
    }


def _n(v) -> str:
    """A count as info prints it (1,234); whatever else run.json holds there, as it is."""
    if v is None:
        return "?"
    return f"{v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _duration(seconds) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "?" if seconds is None else str(seconds)
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def _vocab_line(chars: list[str], limit: int = 120) -> str:
    shown = "".join({"\n": "⏎", " ": "␣", "\t": "⇥"}.get(c, c) for c in chars)
    return shown if len(shown) <= limit else shown[:limit] + f"… (+{len(shown) - limit})"


def format_info(d: dict) -> str:
    m, t = d["model"], d["train"]
    lines = [f"run          {d['run_dir']}  ({d['status'] or '?'}"
             + (f", stopped: {d['stopped_because']}" if d.get("stopped_because") else "") + ")"]
    lines.append(f"model        {shape_text(m)}, dropout "
                 f"{m.get('dropout')}: {_n(d['parameters'])} parameters" if d["parameters"] is not None
                 else "model        ?")
    if t.get("vocab") == "bytes":
        lines.append("vocabulary   UTF-8 bytes: 256 symbols + the end-of-item symbol (--vocab bytes)")
    else:
        lines.append(f"vocabulary   {len(d['vocab'])} characters: {_vocab_line(d['vocab'])}")
    if t.get("line_mode"):
        lines.append("line mode    each line one item, ended by an end-of-item symbol (--line-mode)")
    c = d["corpus"]
    if c.get("source"):
        lines.append(f"corpus       {c['source']}  ({_n(c['chars'] or 0)} chars: {_n(c['train_chars'] or 0)} "
                     f"train / {_n(c['val_chars'] or 0)} validation; sha256 {str(c['sha256'])[:12]}…)")
    lines.append(f"training     {_n(d['steps'] or 0)} steps in {_duration(d['train_seconds'])} on "
                 f"{d['device'] or '?'} ({d['precision'] or '?'})")
    if d["best_val_loss"] is not None:
        v = d["best_val_loss"]
        split = "training text" if d["eval_split"] == "train" else "validation split"
        lines.append(f"best loss    {v:.4f} nats/char = {v / LN2:.3f} bits/char "
                     f"(perplexity {math.exp(v):.2f}) on the {split}, step {d['best_step']}")
    else:
        lines.append("best loss    none yet (no evaluation finished)")
    lines.append(f"weights      {', '.join(d['weights']) or 'none yet'}")
    names = [f.name for cls in (ModelConfig, TrainConfig) for f in config_fields(cls)]
    shown = [f"{n.replace('_', '-')}={t[n]}" for n in names if n in t and t[n] is not None]
    lines.append("settings     " + _wrap(shown, 13))
    return "\n".join(lines)


def _wrap(items: list[str], indent: int, width: int = 96) -> str:
    out, line = [], ""
    for it in items:
        if line and len(line) + 1 + len(it) > width - indent:
            out.append(line)
            line = it
        else:
            line = f"{line} {it}" if line else it
    out.append(line)
    return ("\n" + " " * indent).join(out)
