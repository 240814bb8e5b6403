"""Models shipped inside the package, addressed by name wherever a run directory is accepted.

    charwise sample base --prime "The night"        charwise.load("base")

The name `base` always means the bundled model (to use a run directory that happens to be called
`base`, write `./base`). A bundled model is an ordinary run directory under
`charwise/models/NAME/` (run.json + model.safetensors) plus `model.safetensors.sha256`, the
weights' SHA-256 recorded when the package was built; the weights are checked against it before
first use in a process, so a damaged install is named as
such instead of producing garbage.

This module imports nothing of charwise but CharwiseError and the file reader (files.py), so the
run-directory code can call it.
"""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from ..errors import CharwiseError
from ..files import MAX_WEIGHTS_BYTES, open_regular, read_utf8

NAMES = ("base",)
WEIGHTS = "model.safetensors"           # the run-directory file names (kept literal: no imports)
RUN_JSON = "run.json"
SHA_FILE = WEIGHTS + ".sha256"

_verified: dict[tuple, str] = {}        # (path, size, mtime) -> sha256, checked once per process


CORPUS = "pride_and_prejudice.txt"      # the bundled corpus, in charwise/corpora/


def corpus_path() -> Path:
    """The spec's corpus (opening of Pride and Prejudice), shipped inside the package."""
    return Path(str(resources.files("charwise") / "corpora" / CORPUS))


def models_root() -> Path:
    """Where the bundled models live (tests point this elsewhere)."""
    return Path(str(resources.files("charwise") / "models"))


def is_bundled(spec) -> bool:
    return isinstance(spec, str) and spec in NAMES


def sha256_file(path: Path, limit: int | None = None, what: str = "file") -> str:
    """A file's SHA-256 (hex), read in 4 MiB blocks. The package's one file hash: corpora,
    prepared tokens and shipped weights all use it; it lives here, the lowest module that reads
    files, so data and rundir can import it without a cycle. Only a regular file is read (a FIFO
    or /dev/zero would never end), and with `limit` at most that many bytes."""
    h = hashlib.sha256()
    with open_regular(path, limit, what) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def recorded_sha256(run: Path) -> str:
    """The weights' SHA-256 recorded in the package (`sha256sum` format: HEX  model.safetensors)."""
    try:
        words = read_utf8(run / SHA_FILE, 1 << 10, "checksum file").split()     # one line
    except CharwiseError:
        words = []
    if not words or len(words[0]) != 64:
        raise CharwiseError(f"the bundled model in {run} is damaged: {SHA_FILE} is missing or "
                            "unreadable; reinstall charwise")
    return words[0].lower()


def verify(run: Path) -> str:
    """The weights' SHA-256 if it matches the recorded one, else a one-line CharwiseError."""
    weights = run / WEIGHTS
    try:
        st = weights.stat()
    except OSError:
        raise CharwiseError(f"the bundled model in {run} is damaged: {WEIGHTS} is missing; "
                            "reinstall charwise") from None
    key = (str(weights), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return _verified[key]
    expected = recorded_sha256(run)
    try:
        actual = sha256_file(weights, MAX_WEIGHTS_BYTES, "weights file")
    except CharwiseError as e:
        raise CharwiseError(f"the bundled model is damaged: {e}; reinstall charwise") from None
    if actual != expected:
        raise CharwiseError(f"the bundled model is damaged: {weights} has sha256 {actual[:16]}..., "
                            f"the package records {expected[:16]}...; reinstall charwise")
    _verified[key] = actual
    return actual


def bundled_dir(name: str, check: bool = True) -> Path:
    """The directory of bundled model `name`, its weights verified (unless check=False)."""
    if name not in NAMES:
        raise CharwiseError(f"no bundled model named {name!r} (there is: {', '.join(NAMES)})")
    run = models_root() / name
    if not (run / RUN_JSON).is_file():
        raise CharwiseError(f"the bundled {name!r} model is not installed (no {run / RUN_JSON}); "
                            "reinstall charwise")
    if check:
        verify(run)
    return run


def resolve(spec: str | os.PathLike) -> Path:
    """A run directory as given, or the bundled model's directory for a bundled name."""
    if isinstance(spec, str) and is_bundled(spec):
        return bundled_dir(spec)
    return Path(spec)
