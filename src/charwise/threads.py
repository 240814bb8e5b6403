"""How many CPU threads a loop should use, chosen by measuring rather than guessing.

Why: torch (OpenMP) and NumPy (OpenBLAS) spread each operation over every core, and their
worker threads busy-wait for each other. When another process holds one of the cores, each
operation waits for a descheduled worker: on a 2-core machine with one core busy, a training
step of the spec model took 25-40x longer with 2 threads than with 1. On a quiet machine the
opposite can hold (the small preset trains ~1.6x faster on 2 threads than on 1). No fixed
choice is right everywhere, and the load changes while a run goes on.

`ThreadPolicy` times the loop's own work. After a few warm-up units it runs a few with each
candidate count (1 and N, N = the CPUs this process may use), keeps the faster, and then keeps
watching: when the recent time per unit of work rises well above what the probe measured, or
every `recheck_every` seconds, it probes again. Warm-up and probes start at one
thread, the safe yardstick; a candidate that is clearly far slower than it is cut short after
its first unit, so a probe costs little
even when one candidate has collapsed.

The policy is pure bookkeeping: it is told how long each unit took (by `measure()`, which
reads `clock`, or by `record()`), and applies a count through `apply`. Tests drive it with a
fake clock and made-up timings.

Numerics: the thread count can change the order of floating-point sums. For the spec model
(128 units) a training step gave bit-identical weights at 1 and 2 threads; for the small preset
(640 units) the last bits differ. Runs that promise bit-identical results (resume, repeat)
therefore need a fixed `--threads` (`threads=N`).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import CharwiseError
from .reference._blas import _openblas_controls


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):              # not Linux
        return max(1, os.cpu_count() or 1)


def check_threads(value, flag: str = "--threads") -> int | None:
    """None (measure and choose) or a whole number >= 1, capped at the usable CPUs: more
    threads than CPUs only oversubscribe them (and torch crashes on absurd counts)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CharwiseError(f"{flag} must be a whole number >= 1, got {value!r}")
    return min(value, usable_cpus())


# ----------------------------------------------------------------------------- what a count sets

def set_torch_threads(n: int) -> None:
    import torch  # lazy: a NumPy-only caller need not load torch
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def get_torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def _blas():
    return _openblas_controls()


def set_blas_threads(n: int) -> None:
    """NumPy's OpenBLAS thread count (sampling's NumPy step); a no-op where it cannot be set."""
    controls = _blas()
    if controls and controls[0]() != n:
        controls[1](n)


def get_blas_threads() -> int:
    controls = _blas()
    return controls[0]() if controls else 1


# ----------------------------------------------------------------------------- other processes

class OthersLoad:
    """How many of this process's CPUs other processes kept busy since the last call, from
    /proc/stat (busy time of those CPUs) minus /proc/self/stat (our own time). Linux only;
    elsewhere `__call__` returns None and the policy relies on timing alone."""

    def __init__(self, cpus: set[int] | None = None):
        self.cpus: set[int] | None
        try:
            self.cpus = cpus if cpus is not None else os.sched_getaffinity(0)
        except (AttributeError, OSError):
            self.cpus = None
        self.last = self._read()

    def _read(self):
        if not self.cpus:
            return None
        try:
            with open("/proc/stat") as f:
                busy = total = 0
                for line in f:
                    if line.startswith("cpu") and line[3:4].isdigit():
                        name, *vals = line.split()
                        if int(name[3:]) in self.cpus:
                            v = [int(x) for x in vals[:8]]
                            total += sum(v)
                            busy += sum(v) - v[3] - v[4]            # minus idle and iowait
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])                 # utime + stime, all threads
        except (OSError, ValueError, IndexError):
            return None
        return busy, total, own

    def __call__(self) -> float | None:
        """CPUs' worth of other processes' work since the last call (None: unknown, or too
        short an interval to say: under 20 clock ticks)."""
        now = self._read()
        if now is None or self.last is None or not self.cpus:
            return None
        db, dt, do = (a - b for a, b in zip(now, self.last))
        if dt < 20:
            return None
        self.last = now
        return max(0.0, (db - do) / dt * len(self.cpus))


# ----------------------------------------------------------------------------- the policy

@dataclass
class Probe:
    """One measurement round: seconds per unit of work for each candidate tried."""
    at: float                                      # clock time the probe ended
    per_unit: dict[int, float] = field(default_factory=dict)
    cut_short: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    chosen: int = 0
    why: str = ""
    cost: float = 0.0                              # seconds lost to slower candidates


class ThreadPolicy:
    """Chooses the thread count for a loop of similar units of work (training steps,
    evaluation chunks, sampled characters) by timing them.

    Use: `with policy.measure(units): work()` around each unit, or `policy.begin()` before and
    `policy.record(seconds, units)` after. `fixed` (the --threads flag) turns measuring off.

    Rules: warm up and probe one thread first (it never collapses); probe N threads only when
    other processes leave N CPUs free (`others`, when known), and cut it short after one unit
    when it is over `cut_ratio` times slower; re-probe when the time per unit jumps by
    `jump` while using more than one thread, and every `recheck_every` seconds -- but never so
    often that the slower candidates' units cost more than `max_overhead` of the time.
    """

    def __init__(self, fixed: int | None = None, max_threads: int | None = None, *,
                 warmup: int = 2, probe_min: int = 3, probe_max: int = 50,
                 probe_seconds: float = 0.05, load_seconds: float = 0.25, jump: float = 1.5,
                 window: int = 5, recheck_every: float = 60.0, cut_ratio: float = 2.0,
                 max_overhead: float = 0.02,
                 clock: Callable[[], float] = time.perf_counter,
                 apply: Callable[[int], None] = set_torch_threads,
                 current: Callable[[], int] | None = get_torch_threads,
                 others: Callable[[], float | None] | None | str = "proc"):
        n = max_threads or usable_cpus()
        self.fixed = None if fixed is None else max(1, min(int(fixed), n))
        self.candidates = [self.fixed] if self.fixed else sorted({1, n})
        self.warmup, self.probe_min, self.probe_max = warmup, probe_min, probe_max
        self.probe_seconds, self.load_seconds = probe_seconds, load_seconds
        self.jump, self.window = jump, window
        self.recheck_every, self.cut_ratio, self.max_overhead = recheck_every, cut_ratio, max_overhead
        self.clock, self._apply = clock, apply
        self.original = current() if current else None
        if others == "proc":                         # None: judge by timing alone
            others = OthersLoad() if len(self.candidates) > 1 else None
        self.others: Callable[[], float | None] | None = others  # type: ignore[assignment]
        # one thread until measured: it is never far from the best, and never collapses
        self.threads = self.candidates[0]
        self._applied: int | None = None
        self.probes: list[Probe] = []
        self.units = 0                               # units of work recorded
        self._phase = "warmup" if len(self.candidates) > 1 else "fixed"
        self._seen = 0                               # units seen in the warm-up
        self._queue: list[int] = []                  # candidates still to probe this round
        self._acc: dict[int, list[float]] = {}       # candidate -> [seconds, units, count]
        self._recent: list[float] = []               # seconds per unit since the last probe
        self._probe = Probe(0.0)
        self.baseline: float | None = None          # the chosen count's seconds per unit
        self._since = self.clock()                   # start of the current load window
        self._next_check = self._since + recheck_every

    # --------------------------------------------------------------- the loop's side

    @property
    def deciding(self) -> bool:
        """Warming up or probing: a loop with a choice of unit size should pick small units."""
        return self._phase in ("warmup", "probe")

    def begin(self) -> int:
        """Set the thread count for the next unit of work; returns it."""
        if self._phase == "watch" and self.clock() >= self._next_check:
            self._start_probe("periodic")
        self._apply(self.threads)        # every time: other code may have changed it meanwhile
        self._applied = self.threads
        return self.threads

    def record(self, seconds: float, units: float = 1.0) -> None:
        """The unit of work begun last took `seconds` for `units` (chars, windows...)."""
        self.units += 1
        if self._phase == "warmup":
            self._seen += 1
            if self._seen >= self.warmup:
                self._start_probe("start")
        elif self._phase == "probe":
            self._probe_record(seconds, units)
        elif self._phase == "watch":
            self._recent.append(seconds / max(units, 1e-12))
            del self._recent[:-self.window]
            base = self.baseline
            # at one thread a jump means a busier machine, which more threads cannot help
            if (base and len(self._recent) >= self.window and self.threads > self.candidates[0]
                    and _median(self._recent) > self.jump * base):
                self._start_probe(f"slower ({_median(self._recent) / base:.1f}x)")

    @contextlib.contextmanager
    def measure(self, units: float = 1.0) -> Iterator[int]:
        n = self.begin()
        t = self.clock()
        yield n
        self.record(self.clock() - t, units)

    def restore(self) -> None:
        """Give the caller back the thread count it had before this policy."""
        if self.original is not None and self._applied is not None:
            self._apply(self.original)
        self._applied = None

    def describe(self) -> str:
        if self.fixed:
            return f"{self.fixed} thread{'s' if self.fixed > 1 else ''} (fixed)"
        if not self.probes:
            return f"{self.threads} thread{'s' if self.threads > 1 else ''} (not measured yet)"
        p = self.probes[-1]
        times = [f"{n}: {t * 1e3:.3g} ms" + (" (cut short)" if n in p.cut_short else "")
                 for n, t in sorted(p.per_unit.items())]
        times += [f"{n}: not tried ({why})" for n, why in p.skipped.items()]
        return f"{p.chosen} thread{'s' if p.chosen > 1 else ''} (per unit of work {', '.join(times)})"

    # --------------------------------------------------------------- probing

    def _start_probe(self, why: str) -> None:
        # one thread first: it never collapses, so it is the yardstick that lets a collapsed
        # candidate be cut short after a single unit
        self._queue = [self.candidates[0]]
        self._acc = {}
        self._probe = Probe(0.0, why=why)
        self._phase = "probe"
        self.threads = self._queue[0]

    def _more_candidates(self) -> list[int]:
        """After the yardstick: the others that the CPUs other processes leave free allow."""
        load = self.others() if self.others is not None else None
        rest = self.candidates[1:]
        if load is None:
            return rest
        free = self.candidates[-1] - load
        keep = [c for c in rest if c <= free + 0.5]
        for c in rest:
            if c not in keep:
                self._probe.skipped[c] = f"other processes kept {load:.1f} CPUs busy"
        return keep

    def _probe_record(self, seconds: float, units: float) -> None:
        c = self.threads
        acc = self._acc.setdefault(c, [0.0, 0.0, 0])
        acc[0] += seconds
        acc[1] += units
        acc[2] += 1
        mean = acc[0] / max(acc[1], 1e-12)
        best = min((a[0] / max(a[1], 1e-12) for k, a in self._acc.items() if k != c), default=None)
        cut = best is not None and mean > self.cut_ratio * best
        enough = acc[2] >= self.probe_max or (acc[2] >= self.probe_min and acc[0] >= self.probe_seconds)
        if c == self.candidates[0] and len(self._acc) == 1 and self.others is not None:
            # the yardstick also spans a window long enough to see other processes' load
            enough = enough and (acc[2] >= self.probe_max
                                 or self.clock() - self._since >= self.load_seconds)
        if cut:
            self._probe.cut_short.append(c)
        if not (cut or enough):
            return
        self._queue.pop(0)
        if len(self._acc) == 1:
            self._queue += self._more_candidates()
        if self._queue:
            self.threads = self._queue[0]
            return
        self._finish_probe()

    def _finish_probe(self) -> None:
        p = self._probe
        p.per_unit = {k: a[0] / max(a[1], 1e-12) for k, a in self._acc.items()}
        p.chosen = min(p.per_unit, key=lambda k: (p.per_unit[k], k))
        best = p.per_unit[p.chosen]
        p.cost = sum(a[0] - a[1] * best for k, a in self._acc.items() if k != p.chosen)
        p.at = self.clock()
        self.probes.append(p)
        self.threads, self.baseline = p.chosen, best
        self._recent = []
        self._phase = "watch"
        self._since = p.at
        # keep what probing costs under max_overhead of the time between probes
        self._next_check = p.at + max(self.recheck_every, p.cost / self.max_overhead)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def policy_for(threads: int | None, **kw) -> ThreadPolicy:
    """The policy for a `--threads` value: None = measure and choose, N = fixed (capped)."""
    return ThreadPolicy(fixed=check_threads(threads), **kw)
