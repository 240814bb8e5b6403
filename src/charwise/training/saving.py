"""What a run writes as it goes: run.json as it starts, the best weights when an evaluation improves on them, and the
resumable last checkpoint with run.json. Rank 0 writes; every rank takes part in the
collectives that gather the whole run's state first (in one process they return their input).
"""
from __future__ import annotations

from typing import Any

import torch

from ..runs import resume, rundir
from .setup import Run
from .state import RunState


def begin(run: Run) -> None:
    """run.json and config.toml (`train --config` reruns the run), once it is set up."""
    if run.dist.main:
        rundir.write_run(run.out, run.info)
        rundir.write_run_config(run.out, run.info)


def save_best(run: Run, st: RunState, loss: float) -> None:
    """Keep the weights of the new best evaluation, `loss` at step `st.step`."""
    if run.dist.main:                          # never overwritten by a worse or broken model
        rundir.save_tensors(run.out / rundir.BEST, run.model.state_dict(),
                            {"step": st.step, "val_loss": loss})
    # only once its weights are on disk does run.json name the new best (a failed write,
    # disk full say, leaves both files on the previous best)
    st.best, st.since_best = {"step": st.step, "val_loss": loss}, 0
    if run.dist.main:
        run.info["best"] = st.best
        rundir.write_run(run.out, run.info)


def save_last(run: Run, st: RunState, status: str, elapsed: float) -> None:
    """last.safetensors (everything an exact resume needs: runs/resume.save_last) and run.json,
    as of `elapsed` seconds of the run; the torch model holds the weights (engine.sync_weights)."""
    dist = run.dist
    run.info.update(best=st.best, status=status, train_seconds=round(elapsed, 3), step=st.step,
                    threads={"train": run.step_threads.describe(),
                             "eval": run.score_threads.describe()})
    # collectives first (every rank), then rank 0 writes the whole run's state
    state = run.engine.state
    full_state = tuple(dist.gather_rows(s, 1) for s in state) if state else None
    rng = _gather_rng(dist, torch.get_rng_state(), run.device)
    cuda_rng = (_gather_rng(dist, torch.cuda.get_rng_state(run.device), run.device)
                if run.device.type == "cuda" else None)
    if not dist.main:
        return
    extra = {"best": st.best, "history": run.info["history"], "since_best": st.since_best,
             "loss": st.loss, "faults": st.faults, "last_eval_step": st.last_eval_step,
             "world_size": dist.world}
    resume.save_last(run.out, run.model, run.engine.opt, full_state, rng, run.np_rng, st.step,
                     elapsed, extra, cuda_rng)
    if run.tcfg.keep:
        resume.keep_older(run.out, st.step, run.tcfg.keep)
    rundir.write_run(run.out, run.info)


def _gather_rng(dist: Any, state: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every rank's RNG state (a uint8 vector) as the rows of one (world, n) uint8 tensor."""
    # (gloo mishandles uint8 all-gathers here: the RNG bytes travel as int64)
    rows = dist.gather_rows(state.to(device, torch.int64)[None].clone(), 0)
    return rows.to("cpu", torch.uint8)
