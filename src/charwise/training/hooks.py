"""Small objects the Trainer calls at its events: the progress bar, metrics.jsonl, TensorBoard
and the SIGINT/SIGTERM handler. Each hook sees the trainer -- `trainer.state` (step, loss,
budget), `trainer.run` (model, vocabulary, run.json's info), its clock (`elapsed()`,
`progress()`) -- and keeps its own state; the loop only says when something happened.

    on_step(trainer, lr, grad_norm)   after every optimizer step that was taken
                                      (trainer.state.step_end: when it ended, in the run's seconds)
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
from ..errors import CharwiseError
from ..runs.rundir import METRICS
from .tblog import open_logger

Trainer = Any        # the training.trainer.Trainer (not imported: the loop imports this module)


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
        st = trainer.state
        self.f.write(f'{{"step": {st.step}, "loss": {st.loss:.6f}, "lr": {lr:.6g}, '
                     f'"t": {st.step_end:.4f}}}\n')

    def on_fault(self, trainer: Trainer) -> None:
        self.f.write(json.dumps({"event": "fault", "step": trainer.state.step - 1,
                                 "loss": trainer.state.loss}) + "\n")

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
        st = trainer.state
        self.logger.step(st.step, st.loss, lr, grad_norm, st.step_end)

    def on_eval(self, trainer: Trainer, rec: dict) -> None:
        self.logger.eval(trainer.state.step, rec, trainer.run.model)

    def close(self) -> None:
        self.logger.close()


# The sample shown with each evaluation's line: as char-rnn and nanoGPT show one
SAMPLE_CHARS, SAMPLE_TEMPERATURE, SAMPLE_SEED = 80, 0.8, 0


def sample_line(trainer: Trainer) -> str:
    """SAMPLE_CHARS characters of the model's text at SAMPLE_TEMPERATURE from SAMPLE_SEED (the
    same draws at every evaluation, so the lines show the model change, not the dice), on one
    line. Sampling has its own random generator: the run's are untouched."""
    from ..generation.charmodel import CharModel
    net = trainer.run.model
    was = net.training
    net.eval()
    try:
        model = CharModel(net, trainer.run.vocab, trainer.run.info)
        text = model.generate("", SAMPLE_CHARS, SAMPLE_TEMPERATURE, seed=SAMPLE_SEED, threads=1)
    except (CharwiseError, RuntimeError, ValueError):
        return ""                          # a sample is a courtesy: never a reason to stop
    finally:
        net.train(was)
    return show.one_line(text if isinstance(text, str) else text[0])


def eval_line(step: int, train_loss: float, rec: dict, sample: str) -> str:
    """An evaluation's one line: step, training loss, the evaluation's loss, and a sample."""
    label = "val" if rec["eval_split"] == "val" else "whole text"
    line = (f"step {step:,}  train {train_loss:.4f}  {label} {rec['val_loss']:.4f} nats/char "
            f"({rec['val_bits_per_char']:.3f} bits)")
    return line + (f'  "{sample}"' if sample else "")


class Progress(Hook):
    """What the user sees (progress.py): on a terminal one bar through the whole run (step,
    loss, chars/s, time left), the final evaluation included; elsewhere a plain line now and
    then. At most one line per evaluation, about one every tenth of the run, each with a short
    sample. enabled False: nothing; None: a bar only on a terminal."""

    def __init__(self, enabled: bool | None, max_steps: int | None, max_time: float | None,
                 chars_per_step: int, log: Any, every: float = 15.0):
        self.view = show.Progress(show.Progress.choose(enabled), chars_per_step, max_steps, max_time,
                                  say=log, every=every)
        self.final = False

    def on_step(self, trainer: Trainer, lr: float, grad_norm: float) -> None:
        st = trainer.state
        self.view.step(st.step, st.loss, st.step_end, trainer.progress(), st.budget.eval_seconds)

    def on_eval_start(self, trainer: Trainer, chars: int, final: bool) -> None:
        self.final = final
        self.view.eval_start(chars, final)

    def on_eval_chunk(self, trainer: Trainer, done: int, total: int) -> None:
        self.view.eval_progress(done, total, trainer.elapsed())

    def on_eval(self, trainer: Trainer, rec: dict) -> None:
        self.view.eval_end()
        st, max_steps = trainer.state, trainer.run.max_steps
        last = max_steps is not None and st.step >= max_steps
        if self.view.eval_due(self.final or last):
            self.view.write(eval_line(st.step, st.loss, rec, sample_line(trainer)))

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


def standard(run: Any, step: int, signals: Signals) -> list[Hook]:
    """The hooks of every run (`run`: setup.Run; `step`: where it starts): metrics.jsonl,
    TensorBoard when asked for, what the user sees (rank 0 alone), and `signals`."""
    tb = open_logger(run.tcfg.tensorboard and run.dist.main, run.out, run.vocab, run.info,
                     run.chars_per_step, step)
    return [MetricsFile(run.out / METRICS, run.dist.main), TensorBoard(tb),
            Progress(run.show_progress if run.dist.main else False, run.max_steps,
                     run.tcfg.max_time, run.chars_per_step, run.log),
            signals]
