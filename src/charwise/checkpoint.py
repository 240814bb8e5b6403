"""Run directories: weights in safetensors, everything else in JSON, every write atomic.

    RUN/run.json           format_version, model and training config, vocabulary, corpus,
                           best step and validation loss, evaluation history, status
    RUN/model.safetensors  the best weights by validation loss (what `sample` uses)
    RUN/last.safetensors   the latest weights plus what an exact resume needs: optimizer
                           moments, the carried hidden state, RNG states (JSON in its header)
    RUN/metrics.jsonl      one JSON line per training step and per evaluation

Nothing here unpickles: safetensors holds raw tensors and a JSON header, and JSON holds the rest.
A write goes to a temporary file in the same directory, is fsync'ed, then renamed over the old
one, so a crash mid-write leaves the previous file whole.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .config import CharwiseError

FORMAT_VERSION = 1
RUN_JSON, BEST, LAST, METRICS = "run.json", "model.safetensors", "last.safetensors", "metrics.jsonl"
MAX_JSON_BYTES = 64 << 20          # a run.json larger than this is not ours
MAX_WEIGHTS_BYTES = 16 << 30
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb"):
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
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CharwiseError(f"{path}: {size} bytes is too large for a charwise JSON file")
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CharwiseError(f"{path}: damaged JSON ({e.__class__.__name__}: {e})") from None
    except OSError as e:
        raise CharwiseError(f"{path}: cannot read ({e.strerror})") from None


def save_tensors(path, tensors: dict, meta: dict | None = None) -> None:
    """Tensors (contiguous, CPU) -> safetensors file; `meta` rides along as JSON in the header."""
    from safetensors.torch import save
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"charwise": json.dumps(meta or {}), "format_version": str(FORMAT_VERSION)}
    atomic_write_bytes(path, save(tensors, metadata=header))


def load_tensors(path: str | os.PathLike) -> tuple[dict, dict]:
    """safetensors file -> (tensors, meta). Damaged or foreign files give a CharwiseError."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise CharwiseError(f"{path}: no such weights file")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise CharwiseError(f"{path}: larger than {MAX_WEIGHTS_BYTES >> 30} GiB, refusing to load")
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


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """A directory holding a charwise run, or a one-line reason why `run_dir` is not one."""
    p = Path(run_dir)
    if p.is_file():
        if p.suffix.lower() in _PICKLE_SUFFIXES:
            raise CharwiseError(f"{p}: pickle-style checkpoints ({p.suffix}) are never loaded "
                                "(they can run code); charwise reads run directories of "
                                "safetensors + JSON")
        raise CharwiseError(f"{p}: is a file; expected a run directory made by `charwise train`")
    if not p.is_dir():
        raise CharwiseError(f"{p}: no such run directory")
    if not (p / RUN_JSON).is_file():
        raise CharwiseError(f"{p}: not a charwise run directory (no {RUN_JSON})")
    return p


def read_run(run_dir) -> dict:
    p = check_run_dir(run_dir)
    info = read_json(p / RUN_JSON)
    if not isinstance(info, dict):
        raise CharwiseError(f"{p / RUN_JSON}: expected a JSON object")
    if info.get("format_version") != FORMAT_VERSION:
        raise CharwiseError(f"{p / RUN_JSON}: unsupported format_version "
                            f"{info.get('format_version')!r} (this charwise reads {FORMAT_VERSION})")
    for key in ("model", "vocab", "train"):
        if key not in info:
            raise CharwiseError(f"{p / RUN_JSON}: missing {key!r}")
    return info


def write_run(run_dir, info: dict) -> None:
    atomic_write_json(Path(run_dir) / RUN_JSON, {"format_version": FORMAT_VERSION, **info})


def load_model(run_dir, which: str = "best", device: str = "cpu"):
    """(CharLSTM in eval mode, Vocab, run info) from a run directory; no code is executed."""
    from dataclasses import replace

    from .config import ModelConfig, build
    from .data import Vocab
    from .model import CharLSTM

    info = read_run(run_dir)
    p = Path(run_dir)
    try:
        vocab = Vocab(tuple(info["vocab"]))
        cfg = build(ModelConfig, info["model"])
    except (CharwiseError, TypeError) as e:
        raise CharwiseError(f"{p / RUN_JSON}: invalid model description ({e})") from None
    if cfg.vocab_size != len(vocab):
        raise CharwiseError(f"{p / RUN_JSON}: vocabulary has {len(vocab)} characters but the "
                            f"model expects {cfg.vocab_size}")
    files = {"best": [BEST, LAST], "last": [LAST, BEST]}[which]
    path = next((p / f for f in files if (p / f).is_file()), None)
    if path is None:
        raise CharwiseError(f"{p}: run directory holds no weights yet ({BEST} / {LAST})")
    tensors, _ = load_tensors(path)
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")} or tensors
    model = CharLSTM(replace(cfg))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CharwiseError(f"{path}: weights missing for {', '.join(missing[:5])}")
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise CharwiseError(f"{path}: {k} has shape {tuple(weights[k].shape)}, but the "
                                f"vocabulary and config need {tuple(v.shape)}")
    model.load_state_dict({k: weights[k].float() for k in expected})
    return model.to(device).eval(), vocab, info
