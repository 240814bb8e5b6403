"""The training loop: the Trainer, and `train()`, which runs one (the CLI and the API call it).

The loop runs truncated BPTT over the run's batches (batches.py), its engine (step.py: torch, or
the NumPy reference) carrying the hidden state from one window to the next. Every `eval_every`
steps it measures the loss over the *whole* validation split in one stateful pass, keeps the
best weights and a resumable last checkpoint (rundir.py). What the run is made of is set up
before (plan.py: its settings; setup.py: data, model, engine, a resume's state); what the loop
changes is one dataclass (state.py); the rest hangs on as hooks (hooks.py). Under torchrun
(distributed.py) each process trains its share of the streams and one small all-reduce per step
keeps the ranks in step; in one process the same calls return their input.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from ..budget import progress as budget_progress
from ..budget import time_sample
from ..errors import CharwiseError
from ..guards import clean_orphans
from ..runs.rundir import CACHE, drop_aside, write_run
from ..runs.runlock import lock_run
from ..scoring import LN2
from . import hooks, saving
from .plan import check_start, plan_run
from .schedule import learning_rate
from .setup import discarded_if_refused, open_run, settle_budget
from .state import TrainingInterrupted, TrainResult, start_state

# Steps between reads of the per-step values (loss, grad norm, whether the step was finite) on
# a GPU: each read is a device-to-host copy that waits for the GPU's queue to drain, leaving the
# GPU idle while the host catches up and enqueues the next step. The values stay on the device
# and are read in one copy every READ_EVERY steps, and always before anything acts on them (an
# evaluation, a save, a stop). On the CPU a read costs nothing, so every step is read there
# (and the MAX_FAULTS-th fault stops the run at once); under torchrun too, where the values travel in the
# step's one all-reduce (`_agree`), whose read is then the step's only sync.
READ_EVERY = 16
MAX_FAULTS = 5                 # non-finite steps (each skipped) before a run stops as diverged


def read_interval(device: torch.device, distributed_run: bool) -> int:
    """Steps between reads of the per-step values (READ_EVERY on one GPU, else every step)."""
    return READ_EVERY if device.type == "cuda" and not distributed_run else 1


def read_host(values: torch.Tensor) -> list:
    """The one place the loop reads per-step values back to the host (a sync on a GPU: the
    tests count the calls)."""
    return values.tolist()


# A step read back: (its number, its learning rate, loss, grad norm, the run's time at its end)
Row = tuple[int, float, float, float, float]


class Decisions(NamedTuple):
    """What the ranks agree after each step, in one small collective (`Trainer._agree`), with
    the mean of the step's loss and grad norm: whether any rank caught a signal, and what rank
    0's clock decides (and the schedule's position for the next step, `RunState.frac`). Every
    rank follows rank 0's clock (its own would drift: other start-up times, and only rank 0
    measures the evaluation), so the replicas apply the same learning rate and stop at the
    same step. Between reads a GPU's steps are only queued: the host's clock does not see them,
    and a time budget may end up to READ_EVERY steps late (one step under torchrun, whose clock
    is read before the step's sync). Under torchrun the all-reduce and its read stay per step:
    the learning rate and the stop must be the same on every rank at every step, and agreeing
    every N steps would need a schedule fixed N steps ahead. In one process nothing is read."""
    caught: bool              # a signal, on any rank
    out_of_time: bool         # rank 0's clock: stop for the time budget
    save: bool                # rank 0's clock: checkpoint now
    measure: bool             # rank 0's clock: measure the evaluation's speed now


class Trainer:
    """One training run. Made, it is set up: the corpus read, the model built, the run
    directory written (`run`, setup.py; train() takes the directory's lock first); `fit()`
    trains it. What the loop changes (step, best loss, clock) is `state` (state.py); the
    progress bar, metrics.jsonl, TensorBoard and the signal handler are `hooks` (hooks.py),
    called at the loop's events.

    `overrides` are any ModelConfig/TrainConfig fields (e.g. hidden_size=256, max_time=60).
    With resume=True the run in `out` continues from its last checkpoint exactly where it
    stopped; only budget fields may then be changed. quiet=True: nothing is shown or logged
    (`progress=False`, its older name, means the same; progress=True forces the bar off a
    terminal). Under torchrun each process trains its share of the streams (DDP). With
    init_from (a run directory or "base", the bundled model) a NEW run starts from that model's
    weights and shape, its vocabulary merged with the corpus's (transfer.py); preset "auto"
    then means "finetune".
    """

    def __init__(self, corpus: str | os.PathLike | None = None,
                 out: str | os.PathLike = "runs/latest", preset: str | None = "auto",
                 resume: bool = False, force: bool = False, progress: bool | None = None,
                 log: Callable[..., Any] = print, init_from: str | os.PathLike | None = None,
                 quiet: bool = False, **overrides: Any):
        self.run = run = open_run(plan_run(corpus, out, preset, resume, force, progress, log,
                                           init_from, quiet, overrides))
        # --max-time counts from here (corpus read, model built) to the last save (budget.py)
        self.state = start_state(run.resumed, run.spent, run.tcfg.max_time, run.evaluation.chars,
                                 time.perf_counter())
        # With a time budget the final evaluation must fit in it: its cost is measured (a
        # sample now and every 30 s, each evaluation) and reserved (budget.py)
        with discarded_if_refused(run.out, run.made_cache):
            self._measure_eval_speed()                   # rank 0 measures, every rank decides
            settle_budget(run, self.state.budget)
        drop_aside(run.out)                              # started: the run --force replaced goes
        saving.begin(run)
        self.signals = hooks.Signals()
        self.hooks = hooks.standard(run, self.state.step, self.signals)
        self.state.last_save = self.elapsed()

    # ------------------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Train until a budget, patience or a signal stops it, and return the result."""
        run, st = self.run, self.state
        try:
            self._loop()
        except RuntimeError as e:
            lost = run.dist.lost_peer(e, run.out)      # a peer died or timed out mid-collective
            if lost is None:
                raise                          # this process's own error, as it is
            raise lost from None
        finally:
            for hook in self.hooks:
                hook.close()
            run.step_threads.restore()
        run.info["stopped_because"] = st.why
        if run.dist.main:
            write_run(run.out, run.info)
        run.dist.shutdown()
        best = st.best
        return TrainResult(run.out, st.step, best["val_loss"] if best else None,
                           best["step"] if best else None, st.loss, round(self.elapsed(), 3),
                           run.info["history"], st.why)

    def _loop(self) -> None:
        run, st = self.run, self.state
        run.model.train()
        stop_now, out_of_time = False, self._restart_clock()
        staged = None                          # the next step's batch, already on its way
        while True:
            if run.max_steps is not None and st.step >= run.max_steps:
                break
            if out_of_time:
                st.why = "time"
                break
            if stop_now:
                self.save("interrupted")
                raise TrainingInterrupted(self.signals.signum, run.out)
            batch = staged[1] if staged is not None and staged[0] == st.step else self._batch(st.step)
            run.engine.restart(run.batches.keep(st.step))
            lr = learning_rate(run.tcfg, st.step, st.frac)
            st.pending.append((st.step + 1, lr, self.train_step(batch, lr)))
            st.step += 1
            # prefetch: the next batch is cut, and copied to a GPU, while this step runs there
            staged = ((st.step, self._batch(st.step))
                      if run.max_steps is None or st.step < run.max_steps else None)
            rows, (stop_now, out_of_time, saving, measuring) = self._step_end()
            evaluating = bool(run.eval_every) and st.step % run.eval_every == 0
            if not rows and (evaluating or saving or measuring or out_of_time or stop_now
                             or staged is None):
                rows = self._read()            # what comes next acts on these steps: read them
            if not rows or not self._report(rows):     # none read, or the last one skipped
                continue
            paused = False                     # an evaluation, a save or a measurement
            if evaluating:
                self.evaluate()
                self.save("training")
                if run.tcfg.patience is not None and st.since_best >= run.tcfg.patience:
                    st.why = "patience"
                    break
                paused = True
            elif saving and not out_of_time:
                self.save("training")          # the run is never more than a minute from safe
                paused = True
            if measuring and not out_of_time:
                self._measure_eval_speed()
                paused = True
            if paused:
                out_of_time = self._restart_clock()
        self._finish()

    def _finish(self) -> None:
        """The final evaluation (unless the last step was just evaluated) and save; with a time
        budget, run.json records how the end was planned and how it went."""
        run, st, b = self.run, self.state, self.state.budget
        stopped_at, reserved, predicted = self.elapsed(), b.reserve, b.eval_seconds
        final = st.last_eval_step != st.step
        if final:
            self.evaluate(final=True)
        if b.max_time:
            run.info["time_budget"] = {
                "max_time": b.max_time, "training_ended": round(stopped_at, 3),
                "reserved": round(reserved, 3), "predicted_evaluation": round(predicted, 3),
                "final_evaluation": round(st.score_seconds, 3) if final else None}
        self.save("done")

    def _batch(self, step: int) -> Any:
        """Step `step`'s inputs and targets, staged by the engine (on a GPU: their copies
        started, non-blocking from pinned memory)."""
        return self.run.engine.stage(*self.run.batches.batch(step))

    def train_step(self, batch: Any, lr: float) -> torch.Tensor:
        """The engine's optimizer step on a staged batch; returns its (loss, grad norm), unread,
        on the device (`_read` reads them). A method of its own: tests and benchmarks wrap it."""
        return self.run.engine.train_step(batch, lr)

    def _step_end(self) -> tuple[list[Row], Decisions]:
        """After a step: the steps read (when due) and what the ranks agree. Under torchrun the
        step's loss and grad norm travel in that one all-reduce, whose read is the step's only
        sync; in one process they are read every `read_interval` steps (a sync on a GPU)."""
        means, decided = self._agree(self.state.pending[-1][2])
        if means is not None:
            return self._read([means]), decided
        due = len(self.state.pending) >= read_interval(self.run.device, self.run.dist.enabled)
        return (self._read() if due else []), decided

    def _read(self, values: list | None = None) -> list[Row]:
        """The pending steps' (step, lr, loss, grad norm, end time), read from the device in one
        copy (or `values`, already read). Between reads a GPU's steps are only queued and the
        host's clock sees their end at the read: the interval since the last read (or pause) is
        shared evenly among its steps, each stamped with its own end, and measured for the time
        budget. (Stamping them all with the time of the read put up to READ_EVERY steps in one
        instant, and rates over part of an interval counted its time for fewer steps.)"""
        st = self.state
        pending, st.pending = st.pending, []
        if not pending:
            return []
        if values is None:
            values = read_host(torch.stack([v.to(torch.float64) for _, _, v in pending]))
        now, n = self.elapsed(), len(pending)
        start, st.read_mark = st.read_mark, now
        for _ in range(n):
            st.budget.measured_step((now - start) / n)
        return [(at, lr, loss, gnorm, start + (now - start) * (i + 1) / n)
                for i, ((at, lr, _), (loss, gnorm)) in enumerate(zip(pending, values))]

    def _report(self, rows: list[Row]) -> bool:
        """The hooks' on_step (or on_fault) for each step read, in order and as of that step
        (the state's `step`, `loss` and `step_end` are its own meanwhile); returns whether the
        last one was finite. After MAX_FAULTS faults the run stops, its best checkpoint intact
        (on a GPU up to READ_EVERY steps after the fault: none of them changed the weights)."""
        st, now, ok = self.state, self.state.step, True
        for at, lr, loss, gnorm, end in rows:
            st.step, st.loss, st.step_end, ok = at, loss, end, math.isfinite(gnorm)
            if ok:
                self._emit("on_step", lr, gnorm)
            else:
                st.faults += 1
                self._emit("on_fault")
            st.step = now
            if not ok and st.faults >= MAX_FAULTS:
                self.save("failed")
                raise CharwiseError(f"training diverged: non-finite loss or gradients {st.faults} "
                                    f"times (last at step {at - 1}); try a lower --lr")
        return ok

    def _emit(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    # ------------------------------------------------------------------------- the clock

    def elapsed(self) -> float:
        return time.perf_counter() - self.state.t0

    def progress(self) -> float:
        """How far through its budget the run is, 0..1 (the schedule's position)."""
        return budget_progress(self.state.step, self.run.max_steps, self.state.budget, self.elapsed())

    def _restart_clock(self) -> bool:
        """At the start and after a pause (an evaluation, a save, a measurement): the pause is
        no step's time, and what rank 0's clock decides is decided again. Returns out_of_time."""
        self.state.read_mark = self.elapsed()
        return self._agree(None)[1].out_of_time

    def _agree(self, values: torch.Tensor | None) -> tuple[list[float] | None, Decisions]:
        """The ranks' mean of `values` (the step's loss and grad norm, still on the device; None
        in one process) and their Decisions."""
        run, st, now = self.run, self.state, self.elapsed()
        # The next step, the final evaluation and the last saves must fit in the budget too:
        # stop when they would no longer (budget.py; their cost is measured).
        lead = (st.budget.time_up(now), st.budget.save_due(now, st.last_save, run.tcfg.checkpoint_every),
                st.budget.remeasure_due(now), self.progress())
        means, (caught,), (up, save, measure, st.frac) = run.dist.agree(
            values, bool(self.signals.caught), lead=lead, device=run.device)
        return means, Decisions(caught, bool(up), bool(save), bool(measure))

    def _measure_eval_speed(self) -> None:
        """Time a sample of the evaluation (after an untimed warm-up: budget.time_sample) to
        learn what the final one will cost (rank 0, only with a time budget): the machine's
        speed changes as other processes come and go. The sample is a quarter of a small
        evaluation at most, so that measuring never costs more than a good part of it."""
        run, budget = self.run, self.state.budget
        if not (budget.max_time and run.dist.main):
            return
        sample = min(4096, max(64, budget.eval_chars // 4))
        warmup = min(512, max(16, sample // 8))
        run.engine.sync_weights()
        policy = run.score_threads
        seconds, chars = time_sample(self._score_sample, time.perf_counter, sample, warmup,
                                     phase=lambda: (policy.deciding, len(policy.probes)),
                                     settled=lambda: not policy.deciding)
        budget.measured_eval(seconds, chars, self.elapsed())

    def _score_sample(self, n: int) -> int:
        """Score about `n` characters of the evaluation split as score() scores the whole;
        returns how many characters (tokens) it scored."""
        run = self.run
        return run.evaluation.sample(run.model, n, run.precision, run.score_threads)

    # ------------------------------------------------------------------------- evaluate, save

    def evaluate(self, final: bool = False) -> dict:
        """Score the whole evaluation split; keep the best weights; returns the history record."""
        run, st = self.run, self.state
        te = time.perf_counter()
        self._emit("on_eval_start", run.evaluation.chars, final)
        run.engine.sync_weights()
        rec = {"step": st.step, "train_loss": st.loss, "time": round(self.elapsed(), 3),
               "eval_split": run.evaluation.split, "precision": run.precision}
        # One stateful pass is sequential by nature: rank 0 scores the whole split exactly,
        # and every rank gets its numbers (so early-stopping decisions agree).
        res = {"loss": 0.0, "chars": 0}
        if run.dist.main:
            ts = time.perf_counter()
            res = self.score()
            st.score_seconds = time.perf_counter() - ts
            # a whole evaluation is the best measure of the next
            st.budget.measured_eval(st.score_seconds, run.evaluation.chars, self.elapsed())
        loss, chars = run.dist.broadcast_floats([res["loss"], res["chars"]], run.device,
                                                run.eval_group)
        rec.update(val_loss=loss, val_bits_per_char=loss / LN2,
                   val_perplexity=math.exp(min(loss, 700)), val_chars=int(chars))
        if "loss_per_item" in res:
            rec.update(val_loss_per_item=res["loss_per_item"], val_items=res["items"])
        if math.isfinite(loss) and (st.best is None or loss < st.best["val_loss"]):
            tw = time.perf_counter()
            saving.save_best(run, st, loss)
            st.budget.measured_best(time.perf_counter() - tw)
        else:
            st.since_best += 1
        rec["best_step"] = st.best["step"] if st.best else None
        run.info["history"].append(rec)
        self._emit("on_eval", rec)
        st.eval_seconds = time.perf_counter() - te
        st.last_eval_step = st.step
        return rec

    def score(self) -> dict:
        """The exact loss of the evaluation split: one stateful pass, or (line mode) every item
        from a fresh state, end symbols included."""
        run = self.run
        return run.evaluation.score(run.model, run.precision, run.score_threads,
                                    on_chunk=lambda done, total: self._emit("on_eval_chunk", done, total))

    def save(self, status: str) -> None:
        """Write last.safetensors (everything an exact resume needs) and run.json."""
        st = self.state
        st.last_save = self.elapsed()
        self.run.engine.sync_weights()
        ts = time.perf_counter()
        self._emit("on_save")
        saving.save_last(self.run, st, status, self.elapsed())
        st.budget.measured_save(time.perf_counter() - ts)


def train(corpus: str | os.PathLike | None = None, out: str | os.PathLike = "runs/latest",
          preset: str | None = "auto", resume: bool = False, force: bool = False,
          progress: bool | None = None, log: Callable[..., Any] = print,
          init_from: str | os.PathLike | None = None, quiet: bool = False,
          **overrides: Any) -> TrainResult:
    """Train a character model on `corpus` (the bundled spec corpus when None) into `out`:
    `Trainer(...).fit()`, holding the run directory's lock (one writer per run: a second
    process gets a one-line error naming the holder's PID). quiet=True (`--quiet`, the config
    key `quiet`): nothing is shown or logged. See Trainer for the other arguments."""
    check_start(out, resume, force, corpus, init_from)          # before the lock: see there
    lock = lock_run(out) if int(os.environ.get("RANK", "0")) == 0 else None   # rank 0 writes
    try:
        if lock is not None:
            # temp files of writes cut by a kill: with the lock held, no live writer owns one
            for d in (Path(out), Path(out) / CACHE):
                clean_orphans(d)
        return Trainer(corpus, out, preset, resume, force, progress, log, init_from, quiet,
                       **overrides).fit()
    finally:
        if lock is not None:
            lock.release()
