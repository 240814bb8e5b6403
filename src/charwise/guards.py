"""Checks that turn damaged or dangerous input into one-line errors naming the file.

    check_finite       weights with NaN/Inf are refused on load
    check_json_depth   JSON nested deeper than any charwise file (RecursionError otherwise)
    check_out_path     an --out that would replace a user's file, a run's own file, anything
                       inside another run's directory, or something that is not a regular
                       file (a device, a FIFO, a link)
    check_own_run      an output inside a run directory other than the one being read
    check_utf8_path    a path whose name is not valid UTF-8 (JSON and safetensors cannot hold it)
    run_holding        the run directory (a run.json beside it or above) that a path lies in
    clean_orphans      temporary files (.NAME.*.tmp) left behind by a killed write

Torch-free except `check_finite`, which only touches the tensors it is given.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import NoReturn, TypeGuard

from .errors import CharwiseError
from .runs.bundled import RUN_JSON

PREPARED_JSON = "prepared.json"     # a prepared corpus's manifest (data/corpus.py's META)

MAX_JSON_DEPTH = 64                 # run.json is 4 deep; this is for foreign or tampered files
RUN_FILES = ("run.json", "model.safetensors", "last.safetensors", "metrics.jsonl", "config.toml",
             ".lock")


# What AdamW keeps for each parameter: the state a checkpoint must hold to resume it exactly.
ADAMW_STATE = ("exp_avg", "exp_avg_sq", "step")


def check_finite(path, tensors: dict) -> None:
    """Refuse floating-point tensors holding NaN or Inf, naming the file and the first one."""
    import torch
    for name, t in tensors.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CharwiseError(f"{path}: {name} holds {bad:,} non-finite value(s) (NaN/Inf); "
                                "these weights are damaged (a diverged or corrupted run)")


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the nesting of `text` (outside strings) stays within `limit`, found in one pass
    without parsing (json.loads recurses and raises RecursionError on deep input)."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def check_json_depth(path, text: str, limit: int = MAX_JSON_DEPTH) -> None:
    if not json_depth_ok(text, limit):
        raise CharwiseError(f"{path}: JSON nested more than {limit} levels deep; not a charwise file")


def check_utf8_path(path: str | os.PathLike) -> Path:
    """`path`, or a one-line refusal when its name (or its absolute form: the working
    directory's name counts too) is not valid UTF-8. Such names are legal on Linux, but a run
    records its paths in JSON and opens its weights through safetensors, which take text only:
    refused before anything is written, rather than a run that crashes half made or can never be
    loaded."""
    text = os.fsdecode(os.fspath(path))
    try:
        os.path.abspath(text).encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise CharwiseError(f"{shown}: the path is not valid UTF-8; charwise records paths as text "
                            "and cannot use it (rename it, or the directory it is in)") from None
    return Path(text)


def run_holding(path: str | os.PathLike) -> Path | None:
    """The nearest directory holding a run.json among the directories `path` lies in (its
    parent, then theirs), symbolic links resolved; None when there is none."""
    for d in (Path(path).parent.resolve(), *Path(path).parent.resolve().parents):
        if (d / RUN_JSON).is_file():
            return d
    return None


def check_not_prepared(path: str | os.PathLike) -> None:
    """Refuse an output `path` in a prepared corpus's directory (one holding PREPARED_JSON),
    --force or not: its tokens.bin and prepared.json are `charwise prepare`'s to replace."""
    d = Path(path).parent.resolve()
    if (d / PREPARED_JSON).is_file():
        raise CharwiseError(f"{path}: lies in the prepared corpus {d} (it holds {PREPARED_JSON}); "
                            "refusing to write there (--force or not)")


def check_own_run(path: str | os.PathLike, protect: str | os.PathLike | None) -> Path | None:
    """Refuse an output `path` that lies in a run directory other than `protect` (the run a
    command reads), --force or not: another run's weights, records and analyses are not a
    command's to replace. Returns the run directory `path` lies in (None: none)."""
    owner = run_holding(path)
    if owner is not None and (protect is None or owner != Path(protect).resolve()):
        raise CharwiseError(f"{path}: lies in the run directory {owner} (it holds {RUN_JSON}); "
                            "refusing to write there (--force or not)")
    return owner


def check_out_path(path: str | os.PathLike, force: bool = False,
                   protect: str | os.PathLike | None = None) -> Path:
    """An output path that may be written: its directory exists; nothing is there yet, or a
    regular file and `force` is given. Never inside a run directory other than `protect` (the
    run being read), never one of `protect`'s own files, and never anything that is not a
    regular file (device, FIFO, socket, symbolic link, directory), --force or not. Writers then
    go through a temp file + rename."""
    if os.fsdecode(os.fspath(path)).endswith(os.sep):
        raise CharwiseError(f"{os.fsdecode(os.fspath(path))}: names a directory; give a file name")
    p = check_utf8_path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise CharwiseError(f"{p}: cannot check the output path ({e.strerror})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise CharwiseError(f"{p}: is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise CharwiseError(f"{p}: is {kind}; refusing to replace it (--force or not)")
    owner = check_own_run(p, protect)
    check_not_prepared(p)
    if st is not None:
        if owner is not None and p.name in RUN_FILES and p.resolve().parent == owner:
            raise CharwiseError(f"{p}: is one of the run's own files; refusing to replace it")
        if not force:
            raise CharwiseError(f"{p}: exists; use --force to replace it")
    if not p.parent.is_dir():
        raise CharwiseError(f"{p.parent}: no such directory")
    return p


def clean_orphans(run_dir: str | os.PathLike, older_than: float = 0.0) -> list[Path]:
    """Delete `.NAME.*.tmp` files (atomic writes cut by a kill) in `run_dir`; returns them.
    Call it with the run directory's lock held: no other writer can own one then."""
    removed = []
    now = time.time()
    for p in Path(run_dir).glob(".*.tmp"):
        try:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


# ----------------------------------------------------------------------------- run records

def _is_num(v: object) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def check_best(path, best) -> None:
    """`best` is None or {"step": int >= 0, "val_loss": number}."""
    if best is None:
        return
    if not isinstance(best, dict) or not _is_int(best.get("step")) or best["step"] < 0 \
            or not _is_num(best.get("val_loss")):
        raise CharwiseError(f"{path}: damaged 'best' entry (expected step and val_loss), got {_brief(best)}")


def check_history(path, history) -> None:
    """A list of evaluation records, each an object with an integer step and numeric losses."""
    if not isinstance(history, list):
        raise CharwiseError(f"{path}: damaged 'history' (expected a list), got {_brief(history)}")
    for i, rec in enumerate(history):
        if not isinstance(rec, dict) or not _is_int(rec.get("step")) or \
                not all(_is_num(rec[k]) for k in ("val_loss", "train_loss") if k in rec):
            raise CharwiseError(f"{path}: damaged history entry {i} (expected an object with a "
                                f"step and numeric losses), got {_brief(rec)}")


MAX_COUNT = 2 ** 63                 # a symbol's count in a training text (int64)


def check_char_counts(path, counts, size) -> None:
    """`char_counts` (each symbol's count in the training text; a sample without a prime draws
    its first character from them): absent, or one count in 0..2**63 per symbol of the `size`
    symbols (the model's vocab_size, when that is an integer)."""
    if counts is None:
        return
    if not isinstance(counts, list) or not all(_is_num(c) and 0 <= c <= MAX_COUNT for c in counts):
        raise CharwiseError(f"{path}: damaged 'char_counts' (expected a list of counts >= 0), "
                            f"got {_brief(counts)}")
    if _is_int(size) and len(counts) != size:
        raise CharwiseError(f"{path}: damaged 'char_counts': {len(counts)} counts for a "
                            f"vocabulary of {size} symbols")


def check_metric_record(path, lineno: int, rec) -> None:
    """One line of metrics.jsonl: a step record {"step", "loss", ...} or an event record."""
    ok = isinstance(rec, dict) and _is_int(rec.get("step"))
    if ok and rec.get("event") == "eval":
        ok = _is_num(rec.get("val_loss"))
    elif ok and "event" not in rec:
        ok = _is_num(rec.get("loss"))
    if not ok:
        raise CharwiseError(f"{path}: line {lineno} is not a charwise metrics record: {_brief(rec)}")


def _brief(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def check_resume_state(path, tensors: dict, meta: dict,
                       param_state: list[tuple[tuple[int, ...], tuple[str, ...]]],
                       model_shapes: dict[str, tuple[int, ...]], state_shape: tuple[int, ...],
                       n_state: int, rng_len: int) -> None:
    """Everything last.safetensors must hold for an exact resume, checked before any of it is
    used: the step and time, the RNG states, the weights, the optimizer moments (shape and
    finiteness) and the carried state. One line naming the file and the first problem.
    `param_state`: each parameter's shape and the state its optimizer keeps for it ("step" a
    scalar count, the others tensors of the parameter's shape), in the optimizer's order."""
    import random

    import numpy as np
    import torch

    def bad(what: str) -> NoReturn:
        raise CharwiseError(f"{path}: {what}; cannot resume from it")

    if not isinstance(meta, dict):
        bad("damaged metadata")
    step, secs = meta.get("step"), meta.get("train_seconds")
    if not _is_int(step) or step < 0:
        bad(f"step must be an integer >= 0, got {_brief(step)}")
    if not _is_num(secs) or not 0 <= secs < float("inf"):
        bad(f"train_seconds must be a number >= 0, got {_brief(secs)}")
    try:
        np.random.default_rng().bit_generator.state = meta["numpy_rng"]
    except (KeyError, TypeError, ValueError, OverflowError):
        bad("damaged NumPy RNG state")
    try:
        st = meta["python_rng"]
        random.Random().setstate((st[0], tuple(st[1]), st[2]))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        bad("damaged Python RNG state")
    for key in ("since_best", "faults", "last_eval_step"):
        if key in meta and not _is_int(meta[key]):
            bad(f"{key} must be an integer, got {_brief(meta[key])}")
    if "loss" in meta and not _is_num(meta["loss"]):
        bad(f"loss must be a number, got {_brief(meta['loss'])}")
    check_best(path, meta.get("best"))
    check_history(path, meta.get("history", []))
    for k, shape in model_shapes.items():
        t = tensors.get(f"model/{k}")
        if t is None:
            bad(f"weights missing for {k}")
        if tuple(t.shape) != shape:
            bad(f"{k} has shape {tuple(t.shape)}, expected {shape}")
    for i, (shape, names) in enumerate(param_state):
        for name in names:
            t = tensors.get(f"optim/{i}/{name}")
            if name == "step":                  # a count: a scalar, whatever the parameter
                if t is None or t.numel() != 1:
                    bad(f"optimizer tensor optim/{i}/step is missing or not a scalar")
                continue
            if t is None:
                bad(f"optimizer tensor optim/{i}/{name} is missing")
            if tuple(t.shape) != shape:
                bad(f"optimizer tensor optim/{i}/{name} has shape {tuple(t.shape)}, expected {shape}")
    unknown = [k for k in tensors if k.startswith("optim/") and
               not (len(k.split("/")) == 3 and k.split("/")[1].isdigit()
                    and int(k.split("/")[1]) < len(param_state))]
    if unknown:
        bad(f"unexpected optimizer tensor {unknown[0]}")
    saved = sorted(k for k in tensors if k.startswith("state/"))
    if saved and saved != sorted(f"state/{j}" for j in range(n_state)):
        bad(f"carried state tensors {', '.join(saved)}; expected state/0..{n_state - 1}")
    for k in saved:
        if tuple(tensors[k].shape) != state_shape:
            bad(f"carried state {k} has shape {tuple(tensors[k].shape)}, expected {state_shape}")
    rng = tensors.get("rng/torch")
    if rng is None or rng.dtype != torch.uint8 or rng.dim() != 2 or rng.shape[1] != rng_len:
        bad("damaged torch RNG state (rng/torch)")
    cuda_rng = tensors.get("rng/cuda")
    if cuda_rng is not None and (cuda_rng.dtype != torch.uint8 or cuda_rng.dim() != 2
                                 or cuda_rng.shape[0] != rng.shape[0]):
        bad("damaged CUDA RNG state (rng/cuda)")
    check_finite(path, {k: v for k, v in tensors.items() if not k.startswith("rng/")})
