"""One writer per run directory: an advisory lock on RUN/.lock.

`fcntl.flock` on a file inside the run directory, held for as long as the process writes the
run. The operating system drops it when the process ends however it ends (SIGKILL included),
so a killed run can be resumed at once; the file itself stays and holds the last holder's PID,
which is only used to say who holds the lock, never to decide whether it is held.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from ..errors import CharwiseError

LOCK = ".lock"
_HELD_ELSEWHERE = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)     # flock's "someone has it"


class RunLock:
    """An exclusive, non-blocking lock on a run directory (created if missing). It is taken
    once per run: by train() (the CLI and the API alike) and by prepare; a second take, in
    this process or another, is refused naming the holder."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.fd: int | None = None
        self.made_dir = self.made_file = False     # what acquire created, removed if left empty

    def acquire(self) -> "RunLock":
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise CharwiseError(f"{self.run_dir}: exists and is not a directory")
        created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CharwiseError(f"{self.run_dir}: cannot create the run directory ({e.strerror})") from None
        fd, made = _open_lock(self.path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):      # a FIFO: "Invalid argument", unnamed
            os.close(fd)
            raise CharwiseError(f"{self.path}: is not a regular file (a FIFO, a device or a "
                                "socket); the run lock is kept there: remove it")
        try:
            # per open file: a second descriptor, even in this process, is refused too
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)                  # read only: a lock not held is not written
            os.close(fd)
            if e.errno in _HELD_ELSEWHERE:
                raise _in_use(self.run_dir, holder) from None
            raise CharwiseError(f"{self.path}: cannot lock ({e.strerror})") from None
        os.ftruncate(fd, 0)                         # held now: the PID is ours to record
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.made_dir, self.made_file = fd, created, made
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        # a lock file (and a directory) this lock created, where nothing else was written (a run
        # refused before its first file), is removed again; the lock file goes while still
        # held, so no other process can take a lock on it in between
        empty = self.made_file and _only_lock(self.run_dir)
        if empty:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if empty and self.made_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _in_use(run_dir: Path, holder: int | None) -> CharwiseError:
    who = f"process {holder}" if holder else "another process"
    return CharwiseError(f"{run_dir}: in use by {who} (a charwise train or prepare is writing "
                         "this directory); wait for it to finish or stop it, or choose another --out")


def refuse_if_held(run_dir: str | os.PathLike) -> None:
    """The error lock_run would raise if another process holds the run's lock now; otherwise
    nothing, and nothing is created or written (not even a missing lock file). Only a way to
    fail fast before slow imports: the lock itself is lock_run's, taken later."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return                                  # no lock file: no holder (lock_run decides the rest)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)     # refused while a writer holds it
        except OSError as e:
            if e.errno in _HELD_ELSEWHERE:
                raise _in_use(Path(run_dir), _read_pid(fd)) from None
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> tuple[int, bool]:
    """(a descriptor of the lock file, whether this call created it)."""
    # O_NONBLOCK: opening a FIFO put where the lock belongs must not wait for a writer
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    for _ in range(3):          # the file may vanish between the two opens (a release removed it)
        try:
            try:
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                return os.open(path, flags), False
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CharwiseError(f"{path}: cannot open the run lock ({e.strerror})") from None
    raise CharwiseError(f"{path}: cannot open the run lock (it keeps vanishing)")


def _only_lock(run_dir: Path) -> bool:
    try:
        return os.listdir(run_dir) == [LOCK]
    except OSError:
        return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def lock_run(run_dir: str | os.PathLike) -> RunLock:
    """Take the run directory's lock or raise a CharwiseError naming the holder's PID."""
    return RunLock(run_dir).acquire()
