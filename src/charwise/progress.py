"""What a training run shows while it runs.

On a terminal: a progress bar whose percentage is the run's progress through its budget (steps,
epochs or time, whichever ends it first), with the step, the loss, characters per second over
the last few seconds and the time left; each evaluation gets a bar of its own, labelled "final
evaluation" at the end. Elsewhere (nohup, CI logs, a pipe): a plain line every `every` seconds
(step, loss, chars/s, elapsed, left) and a line when an evaluation starts. Nothing at all with
--quiet.

The arithmetic lives in `Rate` and `eta`, which take the time as an argument, so tests need no
clock.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import Callable


def _print(text: str) -> None:
    print(text, flush=True)


def clock_text(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def rate_text(chars_per_s: float) -> str:
    if chars_per_s >= 1e6:
        return f"{chars_per_s / 1e6:.2f}M chars/s"
    if chars_per_s >= 1e3:
        return f"{chars_per_s / 1e3:.1f}k chars/s"
    return f"{chars_per_s:.0f} chars/s"


class Rate:
    """Characters per second over roughly the last `span` seconds (a run's speed changes: other
    processes come and go), from (time, step) marks."""

    def __init__(self, chars_per_step: int, span: float = 10.0):
        self.chars_per_step, self.span = chars_per_step, span
        self.marks: deque[tuple[float, int]] = deque()

    def mark(self, t: float, step: int) -> None:
        self.marks.append((t, step))
        while len(self.marks) > 2 and t - self.marks[1][0] >= self.span:
            self.marks.popleft()

    def steps_per_s(self) -> float | None:
        if len(self.marks) < 2:
            return None
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def chars_per_s(self) -> float | None:
        r = self.steps_per_s()
        return None if r is None else r * self.chars_per_step


def eta(step: int, elapsed: float, steps_per_s: float | None, max_steps: int | None,
        max_time: float | None) -> float | None:
    """Seconds left: the earlier of the step budget at the current speed and the time budget."""
    left = []
    if max_steps is not None and steps_per_s:
        left.append(max(0, max_steps - step) / steps_per_s)
    if max_time:
        left.append(max(0.0, max_time - elapsed))
    return min(left) if left else None


class Progress:
    """mode: "bar" (tqdm, on a terminal), "lines" (plain lines through `say`, print by
    default) or "off"."""

    def __init__(self, mode: str, chars_per_step: int, max_steps: int | None,
                 max_time: float | None, say: Callable[[str], None] | None = None,
                 every: float = 15.0, clock: Callable[[], float] = time.perf_counter):
        self.mode, self.max_steps, self.max_time = mode, max_steps, max_time
        self.say = say or _print
        self.every, self.clock = every, clock
        self.rate = Rate(chars_per_step)
        self.bar = self.eval_bar = None
        self.last_line = clock()
        self.eval_last = 0.0
        self.eval_label = ""
        if mode == "bar":
            from tqdm.auto import tqdm
            self.bar = tqdm(total=1000, leave=False, dynamic_ncols=True,
                            bar_format="{percentage:3.0f}%|{bar}| {postfix}")

    @staticmethod
    def choose(enabled: bool | None) -> str:
        """False: off; True: a bar; None: a bar on a terminal, else plain lines."""
        if enabled is False:
            return "off"
        if enabled or sys.stderr.isatty():
            return "bar"
        return "lines"

    def status(self, step: int, loss: float, elapsed: float) -> str:
        cps = self.rate.chars_per_s()
        left = eta(step, elapsed, self.rate.steps_per_s(), self.max_steps, self.max_time)
        parts = [f"step {step:,}", f"loss {loss:.4f}"]
        parts.append(rate_text(cps) if cps is not None else "- chars/s")
        parts.append(f"{clock_text(elapsed)} elapsed")
        if left is not None:
            parts.append(f"{clock_text(left)} left")
        return ", ".join(parts)

    def step(self, step: int, loss: float, elapsed: float, fraction: float) -> None:
        """After each optimizer step; `fraction` is the run's progress through its budget."""
        if self.mode == "off":
            return
        now = self.clock()
        self.rate.mark(now, step)
        if self.bar is not None:
            if step % 10 == 0 or fraction >= 1:
                self.bar.n = min(1000, int(1000 * fraction))
                self.bar.set_postfix_str(self.status(step, loss, elapsed), refresh=True)
        elif now - self.last_line >= self.every:
            self.last_line = now
            self.say(self.status(step, loss, elapsed))

    def write(self, text: str) -> None:
        """A message (an evaluation's result) that must not break the bar."""
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.say(text)

    def eval_start(self, chars: int, final: bool) -> None:
        if self.mode == "off":
            return
        self.eval_label = "final evaluation" if final else "evaluation"
        if self.bar is not None:
            from tqdm.auto import tqdm
            self.eval_bar = tqdm(total=chars, desc=self.eval_label, unit="char", unit_scale=True,
                                 leave=False, dynamic_ncols=True)
        else:
            self.say(f"{self.eval_label}: scoring {chars:,} characters")
            self.eval_last = self.clock()

    def eval_progress(self, done: int, total: int) -> None:
        if self.eval_bar is not None:
            self.eval_bar.n = done
            self.eval_bar.refresh()
        elif self.mode == "lines" and self.clock() - self.eval_last >= self.every:
            self.eval_last = self.clock()
            self.say(f"{self.eval_label}: {done:,} / {total:,} characters ({done / max(total, 1):.0%})")

    def eval_end(self) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def close(self) -> None:
        self.eval_end()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
