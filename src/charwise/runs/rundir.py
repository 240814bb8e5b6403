"""Run directories: every file name of a run, weights in safetensors, everything else in JSON,
every write atomic, and the format of the state an exact resume needs.

    RUN/run.json           format_version, model and training config, vocabulary, corpus,
                           best step and validation loss, evaluation history, status
    RUN/model.safetensors  the best weights by validation loss (what `sample` uses)
    RUN/last.safetensors   the latest weights plus what an exact resume needs: optimizer
                           moments, the carried hidden state, RNG states (JSON in its header)
    RUN/metrics.jsonl      one JSON line per training step and per evaluation
    RUN/config.toml        the fully resolved settings (`charwise train --config` reruns them)
    RUN/curve.png          the training curve; RUN/cache/ the encoded corpus;
    RUN/tensorboard/       TensorBoard event files (--tensorboard)

A run may also be one file, `charwise pack`'s (pack.py): a safetensors file of the best weights
whose header metadata holds run.json and a model card. Wherever a run directory is read, such
a file is too: check_run_dir accepts it, read_run reads its run.json from the header, and
sample.load_model its weights from the file itself.

Nothing here unpickles: safetensors holds raw tensors and a JSON header, and JSON holds the rest.
A write goes to a temporary file in the same directory, is fsync'ed, then renamed over the old
one, so a crash mid-write leaves the previous file whole.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import CharwiseError
from ..settings.toml import config_text
from ..files import MAX_JSON_BYTES, MAX_METRICS_BYTES, MAX_WEIGHTS_BYTES, check_regular, open_regular, read_utf8
from ..guards import (
    check_best,
    check_char_counts,
    check_history,
    check_json_depth,
    check_metric_record,
    check_not_prepared,
    check_own_run,
    check_utf8_path,
    json_depth_ok,
)
from . import bundled
from .runlock import LOCK

FORMAT_VERSION = 1
RUN_JSON, BEST, LAST, METRICS = "run.json", "model.safetensors", "last.safetensors", "metrics.jsonl"
CONFIG_TOML, CURVE, CACHE, TB_DIR = "config.toml", "curve.png", "cache", "tensorboard"
# what `charwise train --force` may delete in a run directory (plus ckpt-*.safetensors): the
# run's own files, and what export and analyze write into it by default (model<suffix> for each
# of exporting/formats.py's formats, analysis/): the old model's, stale beside a new one
RUN_FILES = (RUN_JSON, BEST, LAST, METRICS, CURVE, CACHE, CONFIG_TOML, TB_DIR)
ANALYSIS_DIR = "analysis"
DERIVED = ("model.onnx", "model.html", ANALYSIS_DIR)
ASIDE = ".replaced-"        # + pid: where --force keeps the old run's files until the new one starts
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
# A packed model (`charwise pack`): the header metadata key that marks it, and its version
PACK_KEY, PACK_VERSION, PACK_SUFFIX = "charwise_pack", "1", ".charwise"
PACK_RUN, PACK_CARD = "run.json", "model_card"          # the metadata keys of run.json and the card


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Write to a temp file beside `path`; on success fsync and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; the result should be a normal file
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise CharwiseError(f"{path}: disk full while writing; the previous file is intact") from None
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_json(path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


def read_json(path: Path) -> Any:
    text = read_utf8(path, MAX_JSON_BYTES, "charwise JSON file")
    check_json_depth(path, text)                 # json.loads would recurse into a RecursionError
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CharwiseError(f"{path}: damaged JSON ({e.__class__.__name__}: {e})") from None


def save_tensors(path, tensors: dict, meta: dict | None = None) -> None:
    """Tensors (contiguous, CPU) -> safetensors file; `meta` rides along as JSON in the header."""
    # torch and safetensors are imported lazily here and below: `charwise prepare` and the data
    # layer use this module's JSON helpers and should not pay for loading torch.
    from safetensors.torch import save
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # a tensor under two names (a tied head: head.weight is embed.weight) is written twice, so
    # that every name loads on its own; safetensors refuses to write shared memory
    seen: set[int] = set()
    for k, v in tensors.items():
        if v.data_ptr() in seen:
            tensors[k] = v.clone()
        seen.add(v.data_ptr())
    header = {"charwise": json.dumps(meta or {}), "format_version": str(FORMAT_VERSION)}
    atomic_write_bytes(path, save(tensors, metadata=header))


def load_tensors(path: str | os.PathLike) -> tuple[dict, dict]:
    """safetensors file -> (tensors, meta). Damaged or foreign files give a CharwiseError."""
    from safetensors import SafetensorError, safe_open  # lazy: see save_tensors
    # readable, regular and bounded first: safetensors reports any failure to open as "No such
    # file or directory", and would map /dev/zero; and a path it can take (text only)
    path = check_regular(check_utf8_path(path), MAX_WEIGHTS_BYTES, "weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CharwiseError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None
    version = header.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CharwiseError(f"{path}: unsupported checkpoint format_version {version!r} "
                            f"(this charwise reads {FORMAT_VERSION})")
    try:
        meta = json.loads(header.get("charwise", "{}"))
    except json.JSONDecodeError:
        raise CharwiseError(f"{path}: damaged metadata in the safetensors header") from None
    return tensors, meta


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header alone (nothing is loaded)."""
    from safetensors import SafetensorError, safe_open  # lazy: see save_tensors
    path = check_regular(check_utf8_path(path), MAX_WEIGHTS_BYTES, "weights file")  # as load_tensors
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CharwiseError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """A directory holding a charwise run, or a one-line reason why `run_dir` is not one.
    A bundled model's name (`base`) stands for its directory inside the package, verified."""
    p = bundled.resolve(run_dir)
    if p.is_file():
        if p.suffix.lower() in _PICKLE_SUFFIXES:
            raise CharwiseError(f"{p}: pickle-style checkpoints ({p.suffix}) are never loaded "
                                "(they can run code); charwise reads run directories of "
                                "safetensors + JSON")
        read_pack_header(p)                 # a packed model, or a one-line reason it is not
        return p
    if not p.is_dir():
        raise CharwiseError(f"{p}: no such run directory")
    if not (p / RUN_JSON).is_file():
        raise CharwiseError(f"{p}: not a charwise run directory (no {RUN_JSON}){aside_hint(p)}")
    return p


NOT_EMPTY_HINT = "use --resume to continue that run or --force to replace it"


def check_run_start(out: str | os.PathLike, resume: bool = False, force: bool = False,
                    corpus: str | os.PathLike | None = None,
                    init_from: str | os.PathLike | None = None, hint: str = NOT_EMPTY_HINT,
                    prepared: bool = False) -> Path:
    """What a run refuses before it writes anything, its lock included (so a refused run leaves
    `out` as it found it): a path that is not valid UTF-8 (run.json records them, safetensors
    opens them); --init-from SOURCE that is `out` itself, symbolic links resolved (the new run
    would replace what it starts from); and for a new run, an `out` that is not a directory, or
    is not empty (its lock file aside) without `force`. Returns `out` as a Path."""
    out = check_utf8_path(out)
    if corpus is not None:
        check_utf8_path(corpus)
    if init_from is not None:
        source = bundled.models_root() / str(init_from) if bundled.is_bundled(init_from) \
            else check_utf8_path(init_from)
        if source.resolve() == out.resolve():
            raise CharwiseError(f"--init-from {init_from} is --out {out}: a new run would replace "
                                "the run it starts from; choose another --out")
    if resume:
        return out
    if out.exists() and not out.is_dir():
        raise CharwiseError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and not force:
        raise CharwiseError(f"{out}: directory exists and is not empty "
                            f"({aside_hint(out).removeprefix('; ') or hint})")
    if not prepared:                             # `prepare` replaces a prepared corpus; a run does not
        check_not_prepared(out / RUN_JSON)
        check_own_run(out, None)                 # a new run inside another run's directory
    if out.is_symlink():
        raise CharwiseError(f"{out}: is a symbolic link; a new run is written only into a real "
                            f"directory (give --out {os.path.realpath(out)} if that is meant)")
    if force and out.is_dir():                   # what --force removes, checked before any goes
        for p in [out / name for name in RUN_FILES + DERIVED] + sorted(out.glob("ckpt-*.safetensors")):
            if p.is_symlink() or (os.path.lexists(p) and not (p.is_file() or p.is_dir())):
                raise CharwiseError(f"{p}: is a symbolic link or not a regular file, so not one "
                                    "charwise wrote; --force replaces only those (remove it "
                                    "yourself)")
    return out


def set_aside(out: Path) -> None:
    """--force: the old run's files (RUN_FILES, DERIVED, checkpoints) moved into a hidden folder
    in `out` (renames, nothing copied), so that a new run refused while it starts (a corpus that
    cannot be read, a model too big for it) puts them back (`put_back`), and one that starts
    deletes them (`drop_aside`). Other files in `out` stay where they are."""
    old = [out / n for n in RUN_FILES + DERIVED if os.path.lexists(out / n)]
    old += sorted(out.glob("ckpt-*.safetensors"))
    if not old:
        return
    aside = out / f"{ASIDE}{os.getpid()}"
    aside.mkdir(exist_ok=True)
    for p in old:
        os.replace(p, aside / p.name)


def aside_hint(out: Path) -> str:
    """Where a `train --force` killed while it started left the run it was replacing, as a
    hint for messages ("" when there is none)."""
    kept = sorted(a for a in out.glob(f"{ASIDE}*") if (a / RUN_JSON).is_file())
    if not kept:
        return ""
    return (f"; a `train --force` killed while it started left the run it was replacing in "
            f"{kept[-1]}: move its files back into {out} to restore that run, or train with "
            f"--force to replace it")


def put_back(out: Path) -> None:
    """The files `set_aside` moved, back where they were (over what the refused run made)."""
    aside = out / f"{ASIDE}{os.getpid()}"
    if not aside.is_dir():
        return
    for p in aside.iterdir():
        new = out / p.name
        if new.is_dir() and not new.is_symlink():
            shutil.rmtree(new)
        elif os.path.lexists(new):
            new.unlink()
        os.replace(p, new)
    aside.rmdir()


def drop_aside(out: Path) -> None:
    """The new run has started: the old run's files `set_aside` kept are deleted, and so are
    those of an earlier `train --force` killed while it started (called with the run lock
    held, so no live process owns another ASIDE folder)."""
    for aside in out.glob(f"{ASIDE}*"):
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)


def _not_packed(path: Path, why: str) -> CharwiseError:
    return CharwiseError(f"{path}: is a file; expected a run directory made by `charwise train` "
                         f"or a model packed by `charwise pack` (this file: {why})")


def read_pack_header(path: Path) -> dict[str, str]:
    """The header metadata of a file made by `charwise pack`, or a one-line error saying what
    the file is instead. Only the safetensors header is read: its length (8 bytes, little
    endian), then that much JSON."""
    with open_regular(path, MAX_WEIGHTS_BYTES, "packed model") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 2 <= n <= MAX_JSON_BYTES:
            raise _not_packed(path, "no safetensors header")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
        header = json.loads(text) if len(raw) == n and json_depth_ok(text) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise _not_packed(path, "a damaged or cut safetensors header")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or PACK_KEY not in meta:
        raise _not_packed(path, "safetensors, but not written by charwise pack")
    if meta[PACK_KEY] != PACK_VERSION:
        raise CharwiseError(f"{path}: packed in format {meta[PACK_KEY]!r}; this charwise reads "
                            f"packed models of format {PACK_VERSION}")
    return meta


def default_out(run_dir, run: Path, inside: str, beside: str) -> Path:
    """Where a command writes by default: RUN/`inside` for a run directory; for a bundled
    model NAME`beside` in the working directory (never into the package); for a packed model
    beside its file (model.charwise -> model`beside`)."""
    if bundled.is_bundled(run_dir):
        return Path(f"{run_dir}{beside}")
    return run.with_name(run.stem + beside) if run.is_file() else run / inside


def run_json_path(p: Path) -> Path:
    """Where a run's run.json is, for messages: RUN/run.json, or a packed model's file."""
    return p if p.is_file() else p / RUN_JSON


def _packed_info(p: Path) -> Any:
    meta = read_pack_header(p)
    try:
        info = json.loads(meta.get(PACK_RUN, ""))
        card = json.loads(meta.get(PACK_CARD, "null"))
    except (TypeError, json.JSONDecodeError):
        raise CharwiseError(f"{p}: damaged packed model (its run.json does not parse)") from None
    if isinstance(info, dict) and card is not None:
        info[PACK_CARD] = card
    return info


def read_run(run_dir) -> dict:
    p = check_run_dir(run_dir)
    info = _packed_info(p) if p.is_file() else read_json(p / RUN_JSON)
    where = run_json_path(p)
    if not isinstance(info, dict):
        raise CharwiseError(f"{where}: expected a JSON object")
    if info.get("format_version") != FORMAT_VERSION:
        raise CharwiseError(f"{where}: unsupported format_version "
                            f"{info.get('format_version')!r} (this charwise reads {FORMAT_VERSION})")
    for key in ("model", "vocab", "train"):
        if key not in info:
            raise CharwiseError(f"{where}: missing {key!r}")
    for key, kind in (("model", dict), ("train", dict), ("vocab", list), ("corpus", dict)):
        if key in info and not isinstance(info[key], kind):
            raise CharwiseError(f"{where}: {key!r} must be a JSON "
                                f"{'object' if kind is dict else 'array'}")
    if not all(isinstance(c, str) for c in info["vocab"]):
        raise CharwiseError(f"{where}: 'vocab' must be a list of characters")
    check_best(where, info.get("best"))
    check_history(where, info.get("history", []))
    check_char_counts(where, info.get("char_counts"), info["model"].get("vocab_size"))
    return info


def write_run(run_dir, info: dict) -> None:
    atomic_write_json(Path(run_dir) / RUN_JSON, {"format_version": FORMAT_VERSION, **info})


def metric_lines(path: Path) -> list[tuple[int, str]] | None:
    """(step, line) of every record of metrics.jsonl, each checked; None when there is no file.
    A resume reads it when it opens the run, so a damaged file is refused before any write."""
    if not os.path.lexists(path):
        return None
    lines = []
    for lineno, line in enumerate(read_utf8(path, MAX_METRICS_BYTES, "metrics file").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue                               # a line cut by a kill
        check_metric_record(path, lineno, rec)
        lines.append((rec["step"], line))
    return lines


def truncate_metrics(path: Path, step: int, lines: list[tuple[int, str]] | None = None) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be redone);
    `lines`: metric_lines(path) if already read."""
    lines = metric_lines(path) if lines is None else lines
    if lines is None:
        return
    keep = [line for s, line in lines if s <= step]
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def write_run_config(run_dir, info: dict) -> Path:
    """Save RUN_DIR/config.toml, the run's resolved settings as a `train --config` file
    (settings/toml.config_text), atomically like every file of a run."""
    path = Path(run_dir) / CONFIG_TOML
    atomic_write_bytes(path, config_text(info, bundled.corpus_path()).encode("utf-8"))
    return path
