"""The run's state: what the loop changes as it goes, in one dataclass built by one function,
new or as a resume's checkpoint left it (what the run is made of -- its settings, data, model
and engine -- is setup.py's Run, which the loop does not change but for run.json's record);
and what a run leaves at its end: a TrainResult, or TrainingInterrupted."""
from __future__ import annotations

import math
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..budget import TimeBudget
from ..errors import CharwiseError

# Seconds a time budget keeps beyond the measured costs of the end (the final evaluation, the
# best weights' and the last checkpoint's writes): the logs, run.json and hooks closing, and
# the scheduling noise of a busy machine.
END_SLACK = 0.1


@dataclass
class RunState:
    step: int                              # optimizer steps taken, over the whole run
    loss: float                            # the training loss of the step last read
    best: dict | None                      # {"step", "val_loss"} of the best evaluation so far
    since_best: int                        # evaluations since the best one (--patience)
    faults: int                            # steps skipped for a non-finite loss or gradient
    last_eval_step: int                    # the step last evaluated (-1: none yet)
    budget: TimeBudget                     # what the end costs, as measured (rank 0's decides)
    t0: float                              # the run's time 0 on perf_counter (resumes: earlier)
    frac: float = 0.0                      # the schedule's position, as rank 0's clock last said
    why: str = "budget"                    # why the loop stopped: budget, time or patience
    # steps taken but not read yet: (step, lr, its (loss, grad norm) on the device)
    pending: list[tuple[int, float, torch.Tensor]] = field(default_factory=list)
    read_mark: float = 0.0                 # the run's time at the last read or pause
    step_end: float = 0.0                  # the run's time at the end of the step reported
    last_save: float = 0.0                 # the run's time at the last checkpoint
    eval_seconds: float = 0.0              # the last evaluation, in all
    score_seconds: float = 0.0             # its scoring pass alone


def start_state(resumed: dict | None, spent: float, max_time: float | None, eval_chars: int,
                now: float) -> RunState:
    """A run's state at its start: new, or from `resumed`, the checkpoint's record (rundir:
    save_last's `extra` and step). `spent`: seconds of the budget already used (a resume's, or
    preset auto's speed probes), so that the run's time starts there; `now`: perf_counter."""
    r = resumed or {}
    budget = TimeBudget(max_time, eval_chars, slack=END_SLACK)
    return RunState(step=r.get("step", 0), loss=r.get("loss", math.nan), best=r.get("best"),
                    since_best=r.get("since_best", 0), faults=r.get("faults", 0),
                    last_eval_step=r.get("last_eval_step", -1), budget=budget, t0=now - spent)


class TrainingInterrupted(CharwiseError):
    """Raised after SIGINT/SIGTERM once a resumable checkpoint is safely on disk."""

    def __init__(self, signum: int, run_dir: Path):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped; a resumable checkpoint is in {run_dir} "
                         f"(continue with: charwise train --resume --out {shlex.quote(str(run_dir))})")


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_val_loss: float | None
    best_step: int | None
    final_train_loss: float
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_because: str = ""
