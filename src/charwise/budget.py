"""When a run stops, and how far through its budget it is.

Budgets are totals over the whole run, across resumes: --max-steps counts optimizer steps from
the start, --max-epochs passes over the training text from the start, and --max-time seconds of
training from the start, on a monotonic wall clock: the clock starts once the corpus is read and
the model built (neither counts) and runs until the final evaluation and the last checkpoint are
written (both count); a resumed run continues the count. To train for longer, resume with a
larger budget.

With a time budget the final evaluation must fit inside it, and the run should end at the budget,
not well before it. The evaluation's cost is predicted from measurements, not guessed: the
characters to score times the seconds per character of a timed sample of the evaluation text
(`time_sample`), taken at the start, every `remeasure_every` seconds, once more shortly before
the planned stop, at every evaluation, and as soon as the steps' own speed has moved by half
or more since the last measurement, so a machine that slows down (or frees up) mid-run
reserves more (or less) without waiting for the next regular measurement.
The sample is timed only after an untimed warm-up call: the first call of a pass pays one-off
start-up costs (memory, a thread-count change, on a GPU cuDNN's handles) that the whole
evaluation pays once, and scaling them up by the split's length would reserve many times too
much. The reserve is that prediction plus the measured writes of the end (the best weights,
the last checkpoint: a first checkpoint is written early, at a tenth of the budget, to time
it), times a small margin, plus a fixed slack for the end's small unmeasured costs. A step is
taken only while it (its recent median time), the final evaluation and the last saves still
fit, so the run ends at most about one step before the budget.
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Callable

RECENT_STEPS = 5          # the median of the last few step times predicts the next one
EARLY_SAVE = 0.1          # with a time budget, the first checkpoint at this fraction of it
LAST_LOOK = 0.1           # remeasure once this fraction of the budget before the planned stop
STEP_DRIFT = 1.5          # steps this much slower or faster than when scoring was timed: time again
DRIFT_GAP = 5.0           # ... but not more often than every this many seconds


@dataclass
class TimeBudget:
    max_time: float | None
    eval_chars: int                       # characters the final evaluation scores
    margin: float = 1.05                  # evaluations vary a little from one to the next
    slack: float = 0.0                    # seconds for the end's unmeasured costs (logs, run.json)
    remeasure_every: float = 30.0         # seconds between sample measurements
    eval_s_per_char: float = 0.0          # last measured scoring speed
    save_seconds: float = 0.0             # last measured checkpoint write (last.safetensors)
    best_seconds: float = 0.0             # last measured write of the best weights
    measured_at: float = float("-inf")    # elapsed time of the last measurement
    save_measured: bool = False
    recent_steps: list[float] = field(default_factory=list)
    step_at_measure: float = 0.0          # the predicted step time when scoring was last timed

    def measured_eval(self, seconds: float, chars: int, at: float) -> None:
        """Scoring `chars` characters took `seconds` (a sample or a whole evaluation)."""
        if chars > 0:
            self.eval_s_per_char = seconds / chars
            self.measured_at = at
            self.step_at_measure = self.step_seconds

    def measured_save(self, seconds: float) -> None:
        self.save_seconds = max(seconds, 0.0)
        self.save_measured = True

    def measured_best(self, seconds: float) -> None:
        self.best_seconds = max(seconds, 0.0)

    def measured_step(self, seconds: float) -> None:
        self.recent_steps.append(max(seconds, 0.0))
        del self.recent_steps[:-RECENT_STEPS]

    @property
    def step_seconds(self) -> float:
        """The next step's predicted time: the median of the recent ones (0 before any)."""
        s = sorted(self.recent_steps)
        if not s:
            return 0.0
        m = len(s) // 2
        return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])

    def save_due(self, elapsed: float, last_save: float, every: float) -> bool:
        """A checkpoint every `every` seconds (0: none between evaluations); with a time budget
        also an early one, at a tenth of it, while no save has been timed: the reserve then
        holds the last save's measured cost, not nothing."""
        if not every:
            return False
        early = (bool(self.max_time) and not self.save_measured
                 and elapsed >= EARLY_SAVE * (self.max_time or 0.0))
        return early or elapsed - last_save >= every

    def remeasure_due(self, elapsed: float) -> bool:
        """Every `remeasure_every` seconds, and once more on entering the last stretch of the
        training (LAST_LOOK of the budget, or the reserve if longer, before the planned stop),
        so the stop is decided on a fresh measurement however short the budget, early enough
        for an evaluation up to twice as slow as measured before to still fit."""
        if not self.max_time:
            return False
        ahead = max(LAST_LOOK * self.max_time, self.reserve)
        stretch = self.max_time - self.reserve - ahead
        return (elapsed - self.measured_at >= self.remeasure_every
                or self.measured_at < stretch <= elapsed or self._drifted(elapsed))

    def _drifted(self, elapsed: float) -> bool:
        """The steps' speed moved far from what it was when scoring was timed (another process
        came or went): the reserve, timed at the old speed, is likely as far off, so time it
        again now rather than at the next regular measurement (a busy machine's reserve timed
        when it was quiet stops a run early, or late the other way round)."""
        before, now = self.step_at_measure, self.step_seconds
        if before <= 0 or now <= 0 or elapsed - self.measured_at < DRIFT_GAP:
            return False
        return max(now / before, before / now) >= STEP_DRIFT

    @property
    def eval_seconds(self) -> float:
        """The final evaluation's predicted time at the last measured speed."""
        return self.eval_chars * self.eval_s_per_char

    @property
    def reserve(self) -> float:
        """Seconds kept for the final evaluation and the last saves."""
        return self.margin * (self.eval_seconds + self.best_seconds + self.save_seconds) + self.slack

    def time_up(self, elapsed: float, step_seconds: float | None = None) -> bool:
        """Whether to stop now: one more step (by default its predicted time) and the reserve
        would no longer fit in the budget."""
        if not self.max_time:
            return False
        step = self.step_seconds if step_seconds is None else step_seconds
        return elapsed + step + self.reserve >= self.max_time

    def time_fraction(self, elapsed: float) -> float:
        """Progress through the training part of the time budget (0 without one)."""
        if not self.max_time:
            return 0.0
        return elapsed / max(self.max_time - self.reserve, 1e-9)

    def too_short(self, spent: float) -> str | None:
        """A one-line error when what is left of the budget (after `spent` seconds) cannot hold
        even the final evaluation; None when it can, or when nothing is left (a used-up budget
        is resume_note's to report). Training no step and overrunning the budget by the whole
        evaluation would give the user an untrained model, late: refusing at the start costs
        only the start-up and names a budget that works."""
        if not self.max_time:
            return None
        left = self.max_time - spent
        if left <= 0 or self.reserve < left:
            return None
        more = math.ceil((spent + 2 * self.reserve + 1) / 10) * 10
        total = " (a total over the whole run)" if spent > 0 else ""
        return (f"--max-time {self.max_time:g} is too short here: the final evaluation of "
                f"{self.eval_chars:,} characters alone takes ~{self.reserve:.0f} s at the speed "
                f"measured now, and {left:.0f} s of the budget are left; give --max-time {more} "
                f"or more{total}, or a smaller --val-fraction")


def time_sample(score: Callable[[int], int], clock: Callable[[], float], sample: int,
                warmup: int, phase: Callable[[], Hashable] = lambda: None,
                settled: Callable[[], bool] = lambda: True, max_warmups: int = 64
                ) -> tuple[float, int]:
    """(seconds, characters) of scoring a sample of the evaluation text, for the reserve.

    `score(n)` scores about n characters of the evaluation text and returns how many it
    scored. A pass's first call pays one-off start-up costs that the final evaluation pays
    once, not per character (on a GPU cuDNN's handles; on a CPU memory and thread-pool
    set-up), so an untimed call of `warmup` characters comes first -- repeated while the
    thread policy is still deciding (`settled()` false: it probes thread counts on small
    chunks, which is no measure of the evaluation's steady speed). The sample is warmed up and
    timed again (twice at most) if the policy's `phase()` changed during it (a re-probe began)."""
    seconds, chars = 0.0, 0
    for _ in range(3):
        for _ in range(max_warmups):
            score(warmup)
            if settled():
                break
        before = phase()
        t = clock()
        chars = score(sample)
        seconds = clock() - t
        if phase() == before:
            break
    return seconds, chars


def progress(step: int, max_steps: int | None, time: TimeBudget, elapsed: float) -> float:
    """How far through its budget the run is: the larger of steps and time (0..1+)."""
    p = [step / max_steps] if max_steps else []
    if time.max_time:
        p.append(time.time_fraction(elapsed))
    return max(p) if p else 0.0


def resume_note(step: int, spent: float, max_steps: int | None, max_time: float | None,
                flag_steps: str = "--max-steps", out: str = "RUN_DIR") -> tuple[str, bool]:
    """(what a resumed run has left of its budget, whether nothing is left). `max_steps` is
    the step budget in force (from --max-steps or --max-epochs, named by `flag_steps`)."""
    parts, done = [], False
    if max_steps is not None:
        if step >= max_steps:
            done = True
            parts.append(f"the step budget ({max_steps:,} steps, from {flag_steps}) is used up")
        else:
            parts.append(f"{max_steps - step:,} of {max_steps:,} steps left")
    if max_time:
        if spent >= max_time:
            done = True
            parts.append(f"--max-time {max_time:g} is used up")
        else:
            parts.append(f"{max_time - spent:.0f} of {max_time:g} s left")
    head = f"resuming at step {step:,} after {spent:.1f} s of training"
    if not parts:
        return head, False
    msg = f"{head}: " + "; ".join(parts)
    if done:
        more = []
        if max_steps is not None and step >= max_steps:
            more.append(f"{flag_steps} {_more(flag_steps, step, max_steps)}")
        if max_time and spent >= max_time:
            more.append(f"--max-time {spent + max(60.0, max_time / 2):.0f}")
        msg += (". Budgets are totals over the whole run, not additions: to train on, resume "
                f"with a larger one, e.g. charwise train --resume --out {out} {' '.join(more)}")
    return msg, done


def _more(flag: str, step: int, max_steps: int) -> str:
    if flag == "--max-epochs":
        return "N (more than now)"
    return f"{step + max(100, max_steps // 2)}"
