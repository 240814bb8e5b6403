"""TensorBoard logging for `charwise train --tensorboard` (optional: pip install charwise[tensorboard]).

metrics.jsonl is always written; this adds event files under RUN_DIR/tensorboard:

    train/loss, train/bits_per_char, train/lr, train/grad_norm     every step
    train/chars_per_s                                               every 10 steps
    val/loss, val/bits_per_char, val/perplexity                     at each evaluation
    sample (text)                                                   at each evaluation

Open it with `tensorboard --logdir RUN_DIR/tensorboard` (or a folder of runs).
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from ..errors import CharwiseError
from ..generation.charmodel import CharModel
from ..runs.rundir import TB_DIR
from ..settings.options import LN2

SAMPLE_CHARS, SAMPLE_TEMPERATURE, SAMPLE_SEED = 240, 0.8, 0
_RATE_EVERY = 10


def require_tensorboard(out=None) -> None:
    """Fail early, in one line, when --tensorboard is asked for but cannot work: the package
    missing or failing to import (installed against another protobuf, ...), or OUT/tensorboard
    there but not a directory."""
    if importlib.util.find_spec("tensorboard") is None:
        raise CharwiseError("--tensorboard needs the tensorboard package: "
                            "pip install charwise[tensorboard]")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception as e:                 # any failure of a third-party import: one line
        first = (str(e).splitlines() or [""])[0]
        raise CharwiseError(f"--tensorboard: the tensorboard package is installed but does not "
                            f"import ({type(e).__name__}: {first})") from None
    tb = Path(out) / TB_DIR if out is not None else None
    if tb is not None and os.path.lexists(tb) and (tb.is_symlink() or not tb.is_dir()):
        raise CharwiseError(f"{tb}: exists and is not a directory (--tensorboard writes its "
                            "event files in that directory)")


class NullLogger:
    """What train() holds when TensorBoard is off: every call does nothing."""

    def step(self, *a, **kw) -> None:
        pass

    def eval(self, *a, **kw) -> None:
        pass

    def close(self) -> None:
        pass


class TBLogger(NullLogger):
    def __init__(self, run_dir, vocab, info: dict, chars_per_step: int, start_step: int = 0):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter
        # purge_step drops events a killed run wrote after its last checkpoint, so a resumed
        # run's curves do not fold back on themselves.
        self.writer = SummaryWriter(str(Path(run_dir) / TB_DIR),
                                    purge_step=start_step if start_step else None)
        self.vocab, self.info, self.chars_per_step = vocab, info, chars_per_step
        self._mark: tuple[int, float] | None = None      # (step, its end): where chars/s counts from

    def step(self, step: int, loss: float, lr: float, grad_norm: float | None = None,
             t: float | None = None) -> None:
        """One step's values; `t`: when it ended (the run's seconds; the clock now if None).
        chars/s is measured between steps by their own end times: on a GPU steps are read 16
        at a time, and the time of the read would put them all in one instant."""
        w = self.writer
        w.add_scalar("train/loss", loss, step)
        w.add_scalar("train/bits_per_char", loss / LN2, step)
        w.add_scalar("train/lr", lr, step)
        if grad_norm is not None:
            w.add_scalar("train/grad_norm", grad_norm, step)
        now = time.perf_counter() if t is None else t
        if self._mark is None:
            self._mark = (step, now)
        elif step % _RATE_EVERY == 0:
            s0, t0 = self._mark
            if step > s0 and now > t0:
                w.add_scalar("train/chars_per_s", (step - s0) * self.chars_per_step / (now - t0), step)
            self._mark = (step, now)

    def eval(self, step: int, rec: dict, model) -> None:
        w = self.writer
        for k in ("loss", "bits_per_char", "perplexity"):
            if f"val_{k}" in rec:
                w.add_scalar(f"val/{k}", rec[f"val_{k}"], step)
        w.add_text("sample", self._sample(model), step)
        w.flush()
        self._mark = None       # evaluation time is not training speed: start again at the next step

    def _sample(self, model) -> str:
        """A seeded sample from the current weights (eval mode, then back), as Markdown."""
        was_training = model.training
        model.eval()
        try:
            # Sampling draws from its own NumPy generator: training's RNG streams are untouched.
            text = CharModel(model, self.vocab, self.info).generate(
                "", SAMPLE_CHARS, SAMPLE_TEMPERATURE, seed=SAMPLE_SEED)
        finally:
            model.train(was_training)
        # TensorBoard renders text as Markdown; a fenced block keeps newlines and spacing.
        fence = "````" if "```" in text else "```"
        return f"temperature {SAMPLE_TEMPERATURE}, seed {SAMPLE_SEED}:\n\n{fence}\n{text}\n{fence}"

    def close(self) -> None:
        self.writer.close()


def open_logger(enabled: bool, run_dir, vocab, info: dict, chars_per_step: int,
                start_step: int = 0) -> NullLogger:
    return TBLogger(run_dir, vocab, info, chars_per_step, start_step) if enabled else NullLogger()
