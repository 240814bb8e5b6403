"""A run set up from its Plan, in this order: where it runs (the processes, the device, the
precision), its data (data.py), its shape sized to the machine, its model and engine, run.json's
record, and for a resume the state it continues from (the checkpoint: runs/resume.restore).

Refusals come as early as they can: a model too big for the machine before the corpus is read
(and again once the vocabulary is known, before the model is built), a precision the machine
lacks before any file is written. A new run refused on the way (here, or by its time budget,
which the Trainer measures next) leaves nothing of itself behind (`discarded_if_refused`).
"""
from __future__ import annotations

import os
import random
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import bounds, recipe
from .._version import __version__
from ..budget import TimeBudget, resume_note
from ..cells import is_attention, shape_text
from ..data.corpus import token_counts
from ..data.vocab import AnyVocab, vocab_record
from ..errors import CharwiseError
from ..model import CharModule, build_model
from ..runs import resume, rundir, transfer
from ..runs.rundir import CACHE, METRICS
from ..scoring import pick_device, pick_precision, recurrence_precision
from ..settings.train import SHAPE_FIELDS, ModelConfig, TrainConfig
from ..threads import ThreadPolicy, policy_for, usable_cpus
from . import distributed
from .batches import Batches, Evaluation
from .data import RunData, load_data
from .distributed import Dist
from .plan import Plan
from .step import Engine, NumpyStep, TorchStep, optimizer


@dataclass
class Run:
    """What a run is made of, set up once. The loop changes none of it but `info`, run.json's
    record (its history, best, status), which it keeps up to date."""
    out: Path
    log: Callable[..., Any]                # rank 0's log; the other ranks say nothing
    show_progress: bool | None
    mcfg: ModelConfig
    tcfg: TrainConfig                      # as run: a default budget and auto's rate filled in
    dist: Dist
    device: torch.device
    precision: str
    vocab: AnyVocab
    batches: Batches
    evaluation: Evaluation
    eval_group: Any                        # torchrun: where ranks wait for rank 0's evaluation
    chars_per_step: int
    max_steps: int | None                  # --max-steps, or --max-epochs in steps
    eval_every: int                        # steps between evaluations (0: only at the end)
    model: CharModule                      # holds the weights to evaluate and save
    engine: Engine
    np_rng: np.random.Generator            # the run's NumPy generator (saved in checkpoints)
    step_threads: ThreadPolicy
    score_threads: ThreadPolicy
    info: dict
    spent: float                           # seconds of the budget used before this process began
    resumed: dict | None                   # a resume's checkpoint record (its step included)
    made_cache: bool                       # this new run made RUN/cache (removed if refused)


@contextmanager
def discarded_if_refused(out: Path, made_cache: bool) -> Iterator[None]:
    """A new run refused inside this block leaves nothing behind: the cache it made goes (its
    lock goes when train() releases it), and a run --force was replacing is put back."""
    try:
        yield
    except BaseException:
        if made_cache:
            shutil.rmtree(out / CACHE, ignore_errors=True)
        rundir.put_back(out)
        raise


def open_run(plan: Plan) -> Run:
    """The run `plan` describes, set up: data read, model built, a resume's state restored."""
    tcfg, mcfg = plan.tcfg, plan.mcfg
    dist = distributed.setup(tcfg.device)
    device = distributed.device_for(dist, pick_device(tcfg.device))
    # sizes first: a model that cannot fit (on a GPU, in its free memory) is refused before
    # the corpus is read or a file written, and again once the vocabulary is known
    _check_memory(mcfg, tcfg, device, dist)           # vocabulary not known yet: "?" (counted as 1)
    if dist.enabled and tcfg.engine != "torch":
        raise CharwiseError("distributed training needs --engine torch")
    log = plan.log if dist.main else (lambda *a: None)            # rank 0 speaks
    if tcfg.engine == "numpy":             # what the NumPy engine cannot do, before the precision
        NumpyStep.check(mcfg, tcfg, plan.resume)
    # the precision before any file is written: a CPU without bf16 refuses here
    precision = pick_precision(tcfg.precision, device, mcfg)
    made_cache = dist.main and plan.prev is None and (plan.force or not (plan.out / CACHE).exists())
    with discarded_if_refused(plan.out, made_cache):
        data = load_data(plan, dist, log)
        return _build(plan, data, dist, device, precision, log, made_cache)


def _build(plan: Plan, data: RunData, dist: Dist, device: torch.device, precision: str,
           log: Callable[..., Any], made_cache: bool) -> Run:
    tcfg = data.tcfg
    if tcfg.max_steps is None and tcfg.max_epochs is None and tcfg.max_time is None:
        tcfg = replace(tcfg, max_epochs=10.0)
    windows = data.batches.windows_per_epoch
    max_steps = tcfg.max_steps
    if tcfg.max_epochs is not None:
        max_steps = min(max_steps or 10**18, max(1, int(tcfg.max_epochs * windows)))
    eval_every = max(1, round(tcfg.eval_every_epochs * windows)) if tcfg.eval_every_epochs else tcfg.eval_every
    mcfg = fit_context(replace(plan.mcfg, vocab_size=len(data.corpus.vocab)), tcfg, data.items)
    mcfg, tcfg, precision = _size_to_machine(plan, mcfg, tcfg, dist, device, precision)
    _check_memory(mcfg, tcfg, device, dist)
    model, np_rng = _build_model(plan, mcfg, tcfg, data, dist, device)
    opt = optimizer(model, tcfg)
    if tcfg.engine == "numpy":
        precision = "fp32"
    info = _record(plan, mcfg, tcfg, data, model, dist, device, precision)
    step_threads, score_threads = _thread_policies(tcfg, dist, device)
    spent = plan.auto.probe_seconds if plan.auto is not None else 0.0   # inside the budget
    state, resumed = None, None
    if plan.prev is not None:
        # last.safetensors is the one source of truth for a resume: run.json may be a write behind
        step, state, spent, meta = resume.restore(plan.out, model, opt, np_rng, device, dist.rank,
                                                  dist.streams(tcfg.batch_size), tcfg.batch_size)
        resumed = {**meta, "step": step}
        info.update(best=meta["best"], history=meta["history"])
        if dist.main:
            rundir.truncate_metrics(plan.out / METRICS, step, plan.prev_metrics)
        by_epochs = tcfg.max_epochs is not None and max_steps == max(1, int(tcfg.max_epochs * windows))
        log(resume_note(step, spent, max_steps, tcfg.max_time,
                        "--max-epochs" if by_epochs else "--max-steps", str(plan.out))[0])
    engine: Engine = (TorchStep(model, dist.wrap(model, device), opt, tcfg, device, precision,
                                step_threads, data.chars_per_step, state)
                      if tcfg.engine == "torch" else NumpyStep(model, tcfg))
    run = Run(plan.out, log, plan.show_progress, mcfg, tcfg, dist, device, precision,
              data.corpus.vocab, data.batches, data.evaluation, data.eval_group,
              data.chars_per_step, max_steps, eval_every, model, engine, np_rng, step_threads,
              score_threads, info, spent, resumed, made_cache)
    _announce(run, plan.auto, len(data.train_tok), len(data.val_tok))
    return run


def settle_budget(run: Run, budget: TimeBudget) -> None:
    """With a time budget, once rank 0 has measured what the final evaluation costs: every rank
    takes its measure, and a budget too short for even that evaluation is refused now, before
    the run writes a file of its own (in `discarded_if_refused`: the new run's cache goes too)."""
    if not run.tcfg.max_time:
        return
    budget.eval_s_per_char, = run.dist.broadcast_floats([budget.eval_s_per_char], run.device)
    refused = budget.too_short(run.spent)
    if refused:
        raise CharwiseError(refused)
    left, need = run.tcfg.max_time - run.spent, budget.reserve
    if left > 0 and need > 0.5 * left:
        run.log(f"note: at the speed measured now, the final evaluation of "
                f"{budget.eval_chars:,} characters takes ~{need:.0f} s of the {left:.0f} s "
                "left of --max-time")


def _size_to_machine(plan: Plan, mcfg: ModelConfig, tcfg: TrainConfig, dist: Dist,
                     device: torch.device, precision: str) -> tuple[ModelConfig, TrainConfig, str]:
    """preset auto from scratch on a text of 100 kB and more, on this CPU, with a time
    budget: the width that suits this machine's measured speed and the budget (recipe.py)."""
    auto = plan.auto
    if (auto is None or auto.kind != "sized" or not tcfg.max_time or dist.enabled
            or device.type != "cpu" or tcfg.engine != "torch"
            or plan.given.keys() & set(SHAPE_FIELDS)):
        return mcfg, tcfg, precision
    pick = lambda cfg: pick_precision(tcfg.precision, device, cfg)
    recipe.size_to_machine(auto, tcfg.max_time, mcfg, tcfg.batch_size, tcfg.seq_len, pick, device,
                           tcfg.threads)
    assert auto.hidden_size is not None and auto.lr is not None      # size_to_machine set them
    mcfg = replace(mcfg, hidden_size=auto.hidden_size)
    if "lr" not in plan.given:
        tcfg = replace(tcfg, lr=auto.lr)
    return mcfg, tcfg, pick(mcfg)


def fit_context(mcfg: ModelConfig, tcfg: TrainConfig, items: dict | None) -> ModelConfig:
    """A transformer's context (the most characters one prediction sees): a new run's is
    --seq-len, or in line mode the longest item with its end symbol (an item is one window);
    a model from --init-from or --resume keeps its own, and a window longer is refused."""
    if not is_attention(mcfg.cell):
        return mcfg
    need = int(items["longest"]) + 1 if items is not None else tcfg.seq_len
    if mcfg.context == 0:
        return replace(mcfg, context=need)
    if need > mcfg.context:
        what = (f"the longest item ({need - 1} characters and its end symbol)" if items is not None
                else f"--seq-len {need}")
        raise CharwiseError(f"{what} does not fit this transformer's context of {mcfg.context} "
                            "characters" + ("" if items is not None else
                                            f" (use --seq-len {mcfg.context} or less)"))
    return mcfg


def _check_memory(mcfg: ModelConfig, tcfg: TrainConfig, device: torch.device, dist: Dist) -> None:
    bounds.check_training(mcfg, tcfg.batch_size, tcfg.seq_len, device=device, world=dist.world)


def _build_model(plan: Plan, mcfg: ModelConfig, tcfg: TrainConfig, data: RunData, dist: Dist,
                 device: torch.device) -> tuple[CharModule, np.random.Generator]:
    """The model (SOURCE's weights with --init-from), on its device, the run's seeds set."""
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np_rng = np.random.default_rng(tcfg.seed)
    model = build_model(mcfg)
    if plan.source is not None:
        model.load_state_dict(transfer.transplant(plan.source.state, plan.source.vocab,
                                                  data.corpus.vocab))
    if dist.enabled:
        # Each rank trains other streams: with one seed they would all draw the same
        # dropout masks (on the CPU and the CUDA generator, and cuDNN's dropout state is
        # seeded from the latter), correlated noise a single process never has. The
        # weights are already built from tcfg.seed, and DDP broadcasts rank 0's anyway.
        torch.manual_seed(dropout_seed(tcfg.seed, dist.rank))
    return model.to(device), np_rng


def _record(plan: Plan, mcfg: ModelConfig, tcfg: TrainConfig, data: RunData, model: CharModule,
            dist: Dist, device: torch.device, precision: str) -> dict:
    """run.json's record of a run as it starts."""
    corpus, prev = data.corpus, plan.prev
    info = {
        "charwise_version": __version__, "model": asdict(mcfg), "train": asdict(tcfg),
        **vocab_record(corpus.vocab, tcfg.line_mode), "parameters": model.num_parameters,
        "corpus": {"source": str(Path(corpus.source).resolve()), "sha256": corpus.sha256,
                   "chars": len(corpus.tokens),
                   "train_chars": len(data.train_tok), "val_chars": len(data.val_tok)},
        "device": str(device), "precision": precision,
        "recurrence_precision": recurrence_precision(device, precision),
        "world_size": dist.world,
        "best": None, "history": [], "status": "training", "train_seconds": 0.0, "step": 0,
        # chunked: memmaps of GBs
        "char_counts": token_counts(data.train_tok, len(corpus.vocab)).tolist(),
    }
    if plan.source is not None:
        info["init_from"] = plan.source.record(corpus.vocab, data.text_vocab)
    elif prev is not None and prev.get("init_from"):
        info["init_from"] = prev["init_from"]
    if data.items is not None:
        info["items"] = data.items
    if prev is not None and prev.get("asked"):
        info["asked"] = prev["asked"]
    elif tcfg.batch_size != plan.tcfg.batch_size:   # a short text's fewer streams (data.py)
        info["asked"] = {"batch_size": plan.tcfg.batch_size}
    if plan.auto is not None:
        info["auto"] = plan.auto.record()
    elif prev is not None and prev.get("auto"):
        info["auto"] = prev["auto"]             # a resume keeps what auto chose
    return info


def thread_policy(threads: int | None, cpus: int, on_cpu: bool) -> ThreadPolicy:
    """--threads, or one measured as the run goes where the work runs on torch's CPU threads;
    elsewhere (a GPU's step and scoring, the NumPy engine's step) a fixed count: there is
    nothing to choose, and a measuring policy that never records would never settle."""
    return policy_for(threads if on_cpu else threads or 1, max_threads=cpus)


def _thread_policies(tcfg: TrainConfig, dist: Dist,
                     device: torch.device) -> tuple[ThreadPolicy, ThreadPolicy]:
    """Threads for the training step and for scoring: a fixed --threads, or measured and
    re-measured as the run goes (threads.py). Processes on one machine share its CPUs."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
    cpus = max(1, usable_cpus() // max(1, local))
    on_cpu = device.type == "cpu"
    return (thread_policy(tcfg.threads, cpus, on_cpu and tcfg.engine == "torch"),
            thread_policy(tcfg.threads, cpus, on_cpu))


def dropout_seed(seed: int, rank: int) -> int:
    """The torch seed of `rank` after the weights are built: its own dropout masks, the same
    for a given (seed, rank) on every run (so a run is repeatable and resumable)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0])


def _announce(run: Run, auto: recipe.AutoChoice | None, train_chars: int, val_chars: int) -> None:
    m = run.mcfg
    if auto is not None:
        run.log(recipe.header(auto, run.tcfg.max_time))
    run.log(f"charwise {__version__}: {shape_text(asdict(m))}, "
            f"{run.model.num_parameters:,} parameters, vocabulary {len(run.vocab)}, "
            f"{train_chars:,} train / {val_chars:,} val chars, {run.device} {run.precision}"
            + (f", {run.dist.world} processes" if run.dist.enabled else ""))
