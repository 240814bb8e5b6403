"""When a run stops, and how far through its budget it is.

Budgets are totals over the whole run, across resumes: --max-steps counts optimizer steps from
the start, --max-epochs passes over the training text from the start, and --max-time seconds of
training (the final evaluation and checkpoint included) from the start; a resumed run continues
the count. To train for longer, resume with a larger budget.

With a time budget the final evaluation must fit inside it. Its cost is not guessed once: it is
the number of characters to score times the seconds per character last measured (at each
evaluation, and by scoring a short slice every `remeasure_every` seconds in between), so a
machine that slows down mid-run reserves more. The run stops when one more step, the final
evaluation and the last save would no longer fit.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TimeBudget:
    max_time: float | None
    eval_chars: int                       # characters the final evaluation scores
    margin: float = 1.15                  # evaluations vary from one to the next
    remeasure_every: float = 30.0         # seconds between slice measurements
    eval_s_per_char: float = 0.0          # last measured scoring speed
    save_seconds: float = 0.0             # last measured checkpoint write
    measured_at: float = float("-inf")    # elapsed time of the last measurement

    def measured_eval(self, seconds: float, chars: int, at: float) -> None:
        """Scoring `chars` characters took `seconds` (a slice or a whole evaluation)."""
        if chars > 0:
            self.eval_s_per_char = seconds / chars
            self.measured_at = at

    def measured_save(self, seconds: float) -> None:
        self.save_seconds = max(seconds, 0.0)

    def remeasure_due(self, elapsed: float) -> bool:
        return bool(self.max_time) and elapsed - self.measured_at >= self.remeasure_every

    @property
    def reserve(self) -> float:
        """Seconds kept for the final evaluation and the last save."""
        return self.margin * (self.eval_chars * self.eval_s_per_char + self.save_seconds)

    def time_up(self, elapsed: float, step_seconds: float) -> bool:
        if not self.max_time:
            return False
        return elapsed + step_seconds + self.reserve >= self.max_time

    def time_fraction(self, elapsed: float) -> float:
        """Progress through the training part of the time budget (0 without one)."""
        if not self.max_time:
            return 0.0
        return elapsed / max(self.max_time - self.reserve, 1e-9)


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
