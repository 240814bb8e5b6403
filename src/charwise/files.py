"""Opening the files a run keeps and the package ships: one helper, bounded, never blocking.

A run's run.json and metrics.jsonl, a prepared corpus's JSON, a `--config` file, a run's
weights and the bundled model's weights are all opened through `open_regular`. It opens without
blocking (a plain open of a FIFO waits for a writer forever), then refuses what is not a regular
file (a FIFO, a device such as /dev/zero behind a symbolic link, a directory) and a file larger
than the caller's bound, before reading a byte; a file it may not read is "unreadable", not "no
such file". `read_utf8` reads such a file whole as UTF-8 text, at most the bound however much
the file grows meanwhile. Every refusal is a one-line CharwiseError naming the file.

This module imports nothing of charwise but CharwiseError, so every module may use it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import CharwiseError

# What the files a run keeps may hold, declared here for every reader (rundir, bundled, plots).
MAX_JSON_BYTES = 64 << 20          # a run.json or prepared.json larger than this is not ours
MAX_WEIGHTS_BYTES = 16 << 30       # a safetensors file of weights (and resume state)
MAX_METRICS_BYTES = 1 << 30        # metrics.jsonl: ~70 bytes a step, 15 million steps


def _refuse(p: Path, e: OSError, what: str) -> CharwiseError:
    if e.errno == errno.ENOENT:
        return CharwiseError(f"{p}: no such {what}")
    if e.errno in (errno.EACCES, errno.EPERM):
        return CharwiseError(f"{p}: unreadable {what} (permission denied)")
    return CharwiseError(f"{p}: cannot read the {what} ({e.strerror or e})")


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, limit: int | None, what: str = "file") -> Iterator[BinaryIO]:
    """`path` opened for reading in binary, if it is a regular file of at most `limit` bytes
    (None: any size); otherwise a CharwiseError naming it and saying what it is instead."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise _refuse(p, e, what) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CharwiseError(f"{p}: is a directory, expected a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise CharwiseError(f"{p}: is not a regular file (a FIFO, a device or a socket); "
                                f"expected a {what}")
        if limit is not None and st.st_size > limit:
            raise CharwiseError(f"{p}: {st.st_size:,} bytes is more than a {what} may hold "
                                f"({limit:,}); refusing to read it")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def check_regular(path: str | os.PathLike, limit: int | None, what: str = "file") -> Path:
    """`path` if open_regular would open it (for readers that open the file themselves)."""
    with open_regular(path, limit, what):
        return Path(path)


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The whole of a regular file of at most `limit` bytes, read in a bounded amount."""
    with open_regular(path, limit, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise _refuse(Path(path), e, what) from None
    if len(data) > limit:                           # it grew after the size check
        raise CharwiseError(f"{path}: more than a {what} may hold ({limit:,} bytes); refusing "
                            "to read it")
    return data


def read_utf8(path: str | os.PathLike, limit: int, what: str = "file") -> str:
    """read_bytes as UTF-8 text; other bytes are a one-line error giving the first one's offset."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharwiseError(f"{path}: not UTF-8 text (bad byte at offset {e.start}); a damaged "
                            f"{what}") from None
