"""`charwise pack RUN -o model.charwise`: a run as one file to share, its model card inside.

The file is a safetensors file: the run's best weights (float32, named as in model.safetensors)
and, in its header's metadata, run.json whole and a model card (`model_card`) -- what text the
model learned (its name, sha256 and size), how long it trained, and its held-out loss. No code
is stored and none runs when it is read (nothing is unpickled). `sample`, `eval`, `serve`,
`export`, `info`, `analyze` and `train --init-from` take the file wherever they take a run
directory (rundir.check_run_dir and read_run read it, sample.load_model its weights).

The weights are loaded and checked as `charwise sample` would load them before anything is
written, and the file is written to a temporary file beside `out`, then renamed into place.
"""
from __future__ import annotations

import json
from pathlib import Path

from .cells import shape_text
from .errors import CharwiseError
from .guards import check_out_path
from .runs import bundled
from .runs.checkpoint import load_model
from .runs.rundir import (
    FORMAT_VERSION,
    PACK_CARD,
    PACK_KEY,
    PACK_RUN,
    PACK_SUFFIX,
    PACK_VERSION,
    atomic_write_bytes,
    check_run_dir,
    read_run,
)
from .settings.commands import PackOptions
from .settings.options import LN2

SPLITS = {"val": "validation split", "train": "training text (no validation split)"}


def model_card(info: dict, name: str, which: str) -> dict:
    """What a reader of the file needs to know: the model, the text, the training, the loss."""
    m, corpus = info["model"], info.get("corpus") or {}
    hist = info.get("history") or []
    scored = (info.get("best") or None) if which == "best" else (hist[-1] if hist else None)
    split = hist[-1].get("eval_split") if hist else None
    loss = scored.get("val_loss") if scored else None
    start = info.get("init_from") or {}
    return {
        "name": name,
        "model": f"{shape_text(m)}, {info.get('parameters') or 0:,} parameters",
        "vocabulary": {"kind": info.get("vocab_kind", "chars"), "size": len(info["vocab"]),
                       "line_mode": bool(info.get("line_mode"))},
        "text": {"name": Path(str(corpus.get("source", "?"))).name, "sha256": corpus.get("sha256"),
                 "chars": corpus.get("chars"), "train_chars": corpus.get("train_chars"),
                 "val_chars": corpus.get("val_chars")},
        "training": {"steps": info.get("step"), "seconds": info.get("train_seconds"),
                     "stopped_because": info.get("stopped_because"), "device": info.get("device"),
                     "precision": info.get("precision"), "started_from": start.get("name"),
                     "charwise_version": info.get("charwise_version")},
        "held_out": {"split": SPLITS.get(split, split) if isinstance(split, str) else split,
                     "step": scored.get("step") if scored else None,
                     "loss_nats_per_char": loss,
                     "bits_per_char": loss / LN2 if loss is not None else None},
        "weights": which,
    }


def pack(run_dir, out=None, options: PackOptions | None = None, **kw) -> dict:
    """Write RUN_DIR (or a bundled model's name) as one file at `out` (default: the run
    directory's name + .charwise, beside it; NAME.charwise here for a bundled model). An existing
    `out` is replaced only with `force`. Options: PackOptions (which, force). Returns the path,
    its size and the model card."""
    o = PackOptions.make(options, **kw)
    run = check_run_dir(run_dir)
    if run.is_file():
        raise CharwiseError(f"{run}: is a packed model already (share it as it is)")
    here = run if run.name else run.resolve()          # "." has no name
    name = str(run_dir) if bundled.is_bundled(run_dir) else here.name
    if out is None:                 # beside the run directory; a bundled model's, here
        out = Path(f"{run_dir}{PACK_SUFFIX}") if bundled.is_bundled(run_dir) else \
            here.with_name(here.name + PACK_SUFFIX)
    out = check_out_path(out, o.force, protect=run)
    net, _, _ = load_model(run, o.which)              # checked as `charwise sample` loads it
    info = read_run(run)
    card = model_card(info, name, o.which)
    from safetensors.torch import save
    best = info.get("best") or {}
    meta = {"format_version": str(FORMAT_VERSION), PACK_KEY: PACK_VERSION,
            "charwise": json.dumps({"step": best.get("step"), "val_loss": best.get("val_loss")}),
            PACK_RUN: json.dumps(info, ensure_ascii=False),
            PACK_CARD: json.dumps(card, ensure_ascii=False)}
    tensors = {k: v.detach().to("cpu").float().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(out, save(tensors, metadata=meta))
    return {"path": str(out), "bytes": out.stat().st_size, "model_card": card}


def summary_line(res: dict) -> str:
    c = res["model_card"]
    t, h = c["training"], c["held_out"]
    loss = (f"held-out loss {h['loss_nats_per_char']:.4f} nats/char on the {h['split']}"
            if h["loss_nats_per_char"] is not None else "no held-out loss yet")
    size = res["bytes"]
    human = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    return (f"wrote {res['path']} ({human}): {c['model']}, trained {t['steps'] or 0:,} steps "
            f"({t['seconds'] or 0:.0f} s) on {c['text']['name']}; {loss}")
