"""Small objects the Trainer calls at its events: the progress bar, metrics.jsonl, TensorBoard
and the SIGINT/SIGTERM handler. Each hook sees the trainer (its step, loss, clock, model) and
keeps its own state; the loop only says when something happened.

    on_step(trainer, lr, grad_norm)   after every optimizer step that was taken (trainer.step_end:
                                      when it ended, in the run's seconds)
    on_fault(trainer)                 after a step skipped for a non-finite loss or gradient
    on_eval_start(trainer, chars, final)  before an evaluation scores `chars` characters
    on_eval_chunk(trainer, done, total)   as it goes (characters scored so far)
    on_eval(trainer, rec)             after each exact evaluation (rec: the history record)
    on_save(trainer)                  before a checkpoint is written (rank 0)
    close()                           once, when the run ends in any way
"""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from .. import progress as show

Trainer = Any        # the training.loop.Trainer (not imported: the loop imports this module)


class Hook:
    """A hook that does nothing at every event; subclasses override what they need."""

    def on_step(self, trainer: Trainer, lr: float, grad_norm: float) -> None:
        pass

    def on_fault(self, trainer: Trainer) -> None:
        pass

    def on_eval_start(self, trainer: Trainer, chars: int, final: bool) -> None:
        pass

    def on_eval_chunk(self, trainer: Trainer, done: int, total: int) -> None:
        pass

    def on_eval(self, trainer: Trainer, rec: dict) -> None:
        pass

    def on_save(self, trainer: Trainer) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsFile(Hook):
    """RUN_DIR/metrics.jsonl: a line per step, per evaluation and per fault (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a", buffering=1 << 16) if enabled else open(os.devnull, "w")

    def on_step(self, trainer: Trainer, lr: float, grad_norm: float) -> None:
        self.f.write(f'{{"step": {trainer.step}, "loss": {trainer.loss:.6f}, "lr": {lr:.6g}, '
                     f'"t": {trainer.step_end:.4f}}}\n')

    def on_fault(self, trainer: Trainer) -> None:
        self.f.write(json.dumps({"event": "fault", "step": trainer.step - 1,
                                 "loss": trainer.loss}) + "\n")

    def on_eval(self, trainer: Trainer, rec: dict) -> None:
        self.f.write(json.dumps({"event": "eval", **rec}) + "\n")

    def on_save(self, trainer: Trainer) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class TensorBoard(Hook):
    """Forwards steps and evaluations to a tblog logger (TBLogger, or NullLogger when off)."""

    def __init__(self, logger: Any):
        self.logger = logger

    def on_step(self, trainer: Trainer, lr: float, grad_norm: float) -> None:
        self.logger.step(trainer.step, trainer.loss, lr, grad_norm, trainer.step_end)

    def on_eval(self, trainer: Trainer, rec: dict) -> None:
        self.logger.eval(trainer.step, rec, trainer.model)

    def close(self) -> None:
        self.logger.close()


class Progress(Hook):
    """What the user sees (progress.py): on a terminal a bar through the run's budget (step,
    loss, chars/s, time left) and one per evaluation ("final evaluation" at the end); elsewhere
    a plain line every ~15 s. enabled False: nothing; None: a bar only on a terminal."""

    def __init__(self, enabled: bool | None, max_steps: int | None, max_time: float | None,
                 chars_per_step: int, log: Any, every: float = 15.0):
        self.view = show.Progress(show.Progress.choose(enabled), chars_per_step, max_steps, max_time,
                                  say=log, every=every)
        self.log = log

    def on_step(self, trainer: Trainer, lr: float, grad_norm: float) -> None:
        self.view.step(trainer.step, trainer.loss, trainer.step_end, trainer.progress())

    def on_eval_start(self, trainer: Trainer, chars: int, final: bool) -> None:
        self.view.eval_start(chars, final)

    def on_eval_chunk(self, trainer: Trainer, done: int, total: int) -> None:
        self.view.eval_progress(done, total)

    def on_eval(self, trainer: Trainer, rec: dict) -> None:
        self.view.eval_end()
        score = rec["val_loss"]
        label = "val" if rec["eval_split"] == "val" else "whole text"
        msg = (f"step {trainer.step:6d}  train {trainer.loss:.4f}  {label} {score:.4f} nats "
               f"({rec['val_bits_per_char']:.3f} bits/char)")
        if self.view.mode == "off":
            self.log(msg)
        else:
            self.view.write(msg)

    def close(self) -> None:
        self.view.close()


class Signals(Hook):
    """Notes SIGINT/SIGTERM instead of dying, so the loop can save and stop between steps;
    restores the previous handlers when closed. Off the main thread it installs nothing."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self.previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handler(self, signum: int, frame: Any) -> None:
        self.caught.append(signum)

    @property
    def signum(self) -> int:
        return self.caught[0] if self.caught else signal.SIGTERM

    def close(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
