"""Keep NumPy's BLAS on one thread while the reference engine runs.

Why: the engine multiplies small matrices (for the spec's model, (8, 128) @ (128, 512)) a few
hundred times per training step. OpenBLAS spreads even these over every core and its worker
threads busy-wait between calls, so as soon as the cores are shared (other processes, or
torch's own threads in the same process) each product waits for a descheduled worker.
Measured on 2 busy cores: a spec-size float32 step took 470 ms with 2 BLAS threads and 8 ms
with 1. At these sizes one thread is never much slower, so the engine asks for one.

`one_blas_thread()` (a context manager and decorator) sets OpenBLAS to 1 thread and restores
the previous count on exit. Where NumPy's BLAS is not an OpenBLAS found among the loaded
libraries (macOS Accelerate, MKL, non-Linux), it does nothing and the engine still works.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools

import numpy  # noqa: F401  (its BLAS must be loaded before we look for it)

# (prefix, suffix) of the thread-control symbols: NumPy's wheels ship "scipy_openblas" with
# 64-bit-integer symbols ("...64_"); a system OpenBLAS uses the plain names.
_SYMBOLS = [("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")]


@functools.lru_cache(maxsize=None)
def _openblas_controls():
    """(get_num_threads, set_num_threads) of the OpenBLAS loaded in this process, or None."""
    try:
        with open("/proc/self/maps") as f:          # Linux: every shared library mapped
            paths = sorted({parts[-1] for parts in map(str.split, f)
                            if parts and parts[-1].startswith("/")
                            and "openblas" in parts[-1].lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)                 # already loaded: this just gets a handle
        except OSError:
            continue
        for prefix, suffix in _SYMBOLS:
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


@contextlib.contextmanager
def one_blas_thread():
    controls = _openblas_controls()
    before = controls[0]() if controls else 1
    if before == 1:                                 # nothing to change (or nothing we can)
        yield
        return
    controls[1](1)
    try:
        yield
    finally:
        controls[1](before)
