"""What a training run shows while it runs.

On a terminal: one progress bar through the whole run -- its budget (steps, epochs or time,
whichever ends it first) and the final evaluation, so it reaches 100 % when the run is done --
whose text is the step, the loss, characters per second over the last few seconds and the time
left; an intermediate evaluation gets a bar of its own. Elsewhere (nohup, CI logs, a pipe): a
plain status line now and then, and "final evaluation: scoring N characters" when it starts.
Either way at most one line per evaluation stays on screen, about one every tenth of the run
(`Cadence`), with a short sample of the model's text (hooks.Progress). Nothing at all in mode
"off" (--quiet).

The arithmetic lives in `Rate`, `eta` and `Cadence`, which take the time as an argument, so tests
need no clock.
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


# newlines and tabs in a sample shown on one line
SHOWN = {"\n": "\u21b5", "\r": "", "\t": "\u21e5"}     # ↵ ⇥


def one_line(text: str) -> str:
    """`text` on one line: a newline as ↵, a tab as ⇥, other control characters dropped."""
    return "".join(SHOWN.get(c, c) for c in text if c in SHOWN or c.isprintable())


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
        max_time: float | None, final_eval: float = 0.0) -> float | None:
    """Seconds left, the final evaluation included: the earlier of the step budget at the
    current speed plus the final evaluation's predicted `final_eval` seconds, and the time
    budget (which holds the final evaluation already)."""
    left = []
    if max_steps is not None and steps_per_s:
        left.append(max(0, max_steps - step) / steps_per_s + final_eval)
    if max_time:
        left.append(max(0.0, max_time - elapsed))
    return min(left) if left else None


def done_fraction(elapsed: float, left: float | None, fallback: float) -> float:
    """How much of the whole run (the final evaluation included) is done: elapsed over elapsed
    plus what is left, or `fallback` (the budget's fraction) while nothing is known of the
    time left; never 1 before the run ends."""
    if left is None or elapsed + left <= 0:
        return min(max(fallback, 0.0), 0.999)
    return min(elapsed / (elapsed + left), 0.999)


class Cadence:
    """Which evaluations get a line: about one every `share` of the run (its budget's
    fraction), and always the final one; other status lines at most every `every` seconds
    and also one `share` apart. A 60-second run that evaluates every half second prints about
    ten lines, a run that evaluates eight times prints eight."""

    def __init__(self, share: float = 0.1, every: float = 15.0):
        self.share, self.every = share, every
        self.last_fraction, self.last_time = float("-inf"), 0.0

    def eval_due(self, fraction: float, final: bool) -> bool:
        return final or fraction >= self.last_fraction + self.share * 0.999

    def status_due(self, fraction: float, now: float) -> bool:
        return now - self.last_time >= self.every and fraction >= self.last_fraction + self.share * 0.999

    def printed(self, fraction: float, now: float) -> None:
        self.last_fraction, self.last_time = fraction, now


BAR_FORMAT = "{percentage:3.0f}%|{bar}| {desc}"      # the text is the description: no ", " before it


class Progress:
    """mode: "bar" (tqdm, on a terminal), "lines" (plain lines through `say`, print by
    default) or "off"."""

    def __init__(self, mode: str, chars_per_step: int, max_steps: int | None,
                 max_time: float | None, say: Callable[[str], None] | None = None,
                 every: float = 15.0, clock: Callable[[], float] = time.perf_counter,
                 file=None):
        self.mode, self.max_steps, self.max_time = mode, max_steps, max_time
        self.say = say or _print
        self.every, self.clock = every, clock
        self.rate = Rate(chars_per_step)
        self.cadence = Cadence(every=every)
        self.cadence.last_time = clock()
        self.bar = self.eval_bar = None
        self.eval_last = 0.0
        self.eval_label, self.final = "", False
        self.final_eval = 0.0            # the final evaluation's predicted seconds
        self.fraction = 0.0              # the budget's fraction at the last step
        if mode == "bar":
            from tqdm.auto import tqdm
            self.bar = tqdm(total=1000, leave=False, dynamic_ncols=True, bar_format=BAR_FORMAT,
                            file=file)

    @staticmethod
    def choose(enabled: bool | None) -> str:
        """False: off; True: a bar; None: a bar on a terminal, else plain lines."""
        if enabled is False:
            return "off"
        if enabled or sys.stderr.isatty():
            return "bar"
        return "lines"

    def left(self, step: int, elapsed: float) -> float | None:
        return eta(step, elapsed, self.rate.steps_per_s(), self.max_steps, self.max_time,
                   self.final_eval)

    def status(self, step: int, loss: float, elapsed: float) -> str:
        """The bar's text and the plain status line: step, loss, speed, time elapsed and left."""
        cps = self.rate.chars_per_s()
        left = self.left(step, elapsed)
        parts = [f"step {step:,}", f"loss {loss:.4f}"]
        parts.append(rate_text(cps) if cps is not None else "- chars/s")
        parts.append(f"{clock_text(elapsed)} elapsed")
        if left is not None:
            parts.append(f"{clock_text(left)} left")
        return ", ".join(parts)

    def step(self, step: int, loss: float, elapsed: float, fraction: float,
             final_eval: float = 0.0) -> None:
        """After each optimizer step; `fraction` is the run's progress through its budget,
        `final_eval` the final evaluation's predicted seconds (0 while unknown)."""
        if self.mode == "off":
            return
        now = self.clock()
        self.rate.mark(now, step)
        self.fraction, self.final_eval = fraction, final_eval
        if self.bar is not None:
            if step % 10 == 0 or fraction >= 1:
                self._show(done_fraction(elapsed, self.left(step, elapsed), fraction),
                           self.status(step, loss, elapsed))
        elif self.cadence.status_due(fraction, now):
            self.cadence.printed(fraction, now)
            self.say(self.status(step, loss, elapsed))

    def _show(self, done: float, text: str) -> None:
        assert self.bar is not None
        self.bar.n = int(1000 * done)
        self.bar.set_description_str(text, refresh=True)

    def eval_due(self, final: bool) -> bool:
        """Whether this evaluation's line is shown (Cadence); marks it shown if so."""
        if self.mode == "off" or not self.cadence.eval_due(self.fraction, final):
            return False
        self.cadence.printed(self.fraction, self.clock())
        return True

    def write(self, text: str) -> None:
        """A line that stays (an evaluation's result), printed above the bar."""
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.say(text)

    def eval_start(self, chars: int, final: bool) -> None:
        if self.mode == "off":
            return
        self.final = final
        self.eval_label = "final evaluation" if final else "evaluation"
        self.eval_last = self.clock()
        if self.bar is not None and not final:          # the final one is the bar's last stretch
            from tqdm.auto import tqdm
            self.eval_bar = tqdm(total=chars, desc=self.eval_label, unit="char", unit_scale=True,
                                 leave=False, dynamic_ncols=True, file=self.bar.fp)
        elif self.mode == "lines" and final:
            self.say(f"{self.eval_label}: scoring {chars:,} characters")

    def eval_progress(self, done: int, total: int, elapsed: float | None = None) -> None:
        part = done / max(total, 1)
        if self.eval_bar is not None:
            self.eval_bar.n = done
            self.eval_bar.refresh()
        elif self.bar is not None and self.final and elapsed is not None:
            left = self.final_eval * (1 - part) if self.final_eval else None
            text = f"{self.eval_label} {part:.0%} of {total:,} characters, {clock_text(elapsed)} elapsed"
            self._show(done_fraction(elapsed, left, self.fraction),
                       text + (f", {clock_text(left)} left" if left is not None else ""))
        elif self.mode == "lines" and self.final and self.clock() - self.eval_last >= self.every:
            self.eval_last = self.clock()
            self.say(f"{self.eval_label}: {done:,} / {total:,} characters ({part:.0%})")

    def eval_end(self) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def close(self) -> None:
        self.eval_end()
        if self.bar is not None:
            self.bar.n = self.bar.total
            self.bar.close()
            self.bar = None
