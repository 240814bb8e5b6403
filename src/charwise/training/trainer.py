"""The training loop: a Trainer, and `train()`, which runs one (the CLI and the API call it).

It prepares the corpus, builds the model, and runs truncated BPTT over B contiguous streams,
carrying (and detaching) the hidden state from one window to the next. Every `eval_every` steps
it measures the loss over the *whole* validation split in one stateful pass (evaluate.py), keeps
the best weights and a resumable last checkpoint (rundir.py).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import shlex
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .. import bounds, recipe
from .._version import __version__
from ..budget import TimeBudget, resume_note, time_sample
from ..budget import progress as budget_progress
from ..data.bytevocab import ByteVocab
from ..data.corpus import (
    Corpus,
    StreamBatches,
    Vocab,
    check_text_file,
    load_prepared,
    prepare_corpus,
    token_counts,
    vocab_record,
)
from ..data.lines import ItemBatches, evaluate_items, line_mode_hint, prepare_items
from ..errors import CharwiseError
from ..guards import clean_orphans
from ..model import CharRNN, detach_state
from ..reference import CharLSTM as NumpyCharLSTM
from ..reference import ReferenceTrainer
from ..runs import resume, rundir, transfer
from ..runs.bundled import corpus_path as bundled_corpus_path
from ..runs.bundled import sha256_file
from ..runs.rundir import BEST, CACHE, METRICS, RUN_FILES, read_run, save_tensors, write_run, write_run_config
from ..runs.runlock import lock_run
from ..scoring import (
    LN2,
    autocast,
    evaluate_bytes,
    evaluate_tokens,
    fp32_flags,
    pick_device,
    pick_precision,
    recurrence_precision,
)
from ..settings.train import (
    BUDGETS,
    INIT_FROM_AND_RESUME,
    PRESETS,
    SCRATCH,
    ModelConfig,
    TrainConfig,
    build,
    check_value,
    resolve,
)
from ..threads import ThreadPolicy, policy_for, usable_cpus
from . import distributed, hooks
from .tblog import open_logger


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


# Seconds a time budget keeps beyond the measured costs of the end (the final evaluation, the
# best weights' and the last checkpoint's writes): the logs, run.json and hooks closing, and
# the scheduling noise of a busy machine.
END_SLACK = 0.1

# Steps between reads of the per-step values (loss, grad norm, whether the step was finite) on
# a GPU: each read is a device-to-host copy that waits for the GPU's queue to drain, leaving the
# GPU idle while the host catches up and enqueues the next step. The values stay on the device
# and are read in one copy every READ_EVERY steps, and always before anything acts on them (an
# evaluation, a save, a stop). On the CPU a read costs nothing, so every step is read there
# (and a 5th fault stops the run at once); under torchrun too, where the values travel in the
# step's one all-reduce (`_agree`), whose read is then the step's only sync.
READ_EVERY = 16

# Settings a resumed run may change (its budget and where it runs); the rest are the run's.
RESUMABLE = {"max_steps", "max_epochs", "max_time", "patience", "eval_every", "eval_every_epochs",
             "device", "threads", "tensorboard", "keep", "checkpoint_every"}


# ----------------------------------------------------------------------------- schedule

def learning_rate(tcfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps` -- or, with a time budget, over `warmup_fraction` of
    it if that ends first (a slow machine must not spend its budget warming up) -- then cosine
    or linear decay to lr*min_lr_ratio as progress -> 1."""
    if step < tcfg.warmup_steps:
        warm = (step + 1) / tcfg.warmup_steps
        if tcfg.max_time and tcfg.warmup_fraction:
            warm = max(warm, progress / tcfg.warmup_fraction)
        if warm <= 1:
            return tcfg.lr * warm
    p = min(max(progress, 0.0), 1.0)
    left = 1 - p if tcfg.decay == "linear" else 0.5 * (1 + math.cos(math.pi * p))
    return tcfg.lr * (tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * left)


# ----------------------------------------------------------------------------- the loop

# A step read back: (its number, its learning rate, loss, grad norm, the run's time at its end)
Row = tuple[int, float, float, float, float]


class Decisions(NamedTuple):
    """What the ranks agree after each step (`_agree`)."""
    caught: bool              # a signal, on any rank
    out_of_time: bool         # rank 0's clock: stop for the time budget
    save: bool                # rank 0's clock: checkpoint now
    measure: bool             # rank 0's clock: measure the evaluation's speed now


def _optimizer(model: CharRNN, tcfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith("embed"))]
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    # fused: one kernel over all parameters instead of a chain of foreach ops (several times
    # faster; benchmarks/README.md)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=(0.9, tcfg.beta2), fused=fused)


def _prepare_out(out: Path, resume: bool, force: bool) -> None:
    if not resume and out.is_dir() and force:
        # --force replaces only what charwise wrote; other files in the directory stay
        for name in RUN_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for old in out.glob("ckpt-*.safetensors"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)


class Trainer:
    """One training run: `setup()` prepares the corpus, model and run directory; `fit()` runs
    the loop; `evaluate()` scores the whole validation split; `save()` writes a checkpoint.
    The run's state (step, carried hidden state, best loss, clock) lives on the object, and
    the progress bar, metrics.jsonl, TensorBoard and the signal handler are hooks (hooks.py).

    `overrides` are any ModelConfig/TrainConfig fields (e.g. hidden_size=256, max_time=60).
    With resume=True the run in `out` continues from its last checkpoint exactly where it
    stopped; only budget fields may then be changed. quiet=True: nothing is shown or logged
    (`progress=False`, its older name, means the same; progress=True forces the bar off a
    terminal). Under torchrun each process trains its
    share of the streams (DDP). With init_from (a run directory or "base", the bundled model) a
    NEW run starts from that model's weights and shape, its vocabulary merged with the corpus's
    (transfer.py); preset "auto" then means "finetune".
    """

    def __init__(self, corpus: str | os.PathLike | None = None,
                 out: str | os.PathLike = "runs/latest", preset: str | None = "auto",
                 resume: bool = False, force: bool = False, progress: bool | None = None,
                 log: Callable[..., Any] = print, init_from: str | os.PathLike | None = None,
                 quiet: bool = False, **overrides: Any):
        quiet = quiet_setting(quiet, progress)
        self.out, self.resume, self.force = Path(out), resume, force
        self.show_progress = False if quiet else progress
        self.log = (lambda *a: None) if quiet else log
        if init_from is not None and resume:
            raise CharwiseError(INIT_FROM_AND_RESUME)
        self.prev = read_run(self.out) if resume else None
        # metrics.jsonl too is checked before anything is written (truncated in _restore)
        self.prev_metrics = rundir.metric_lines(self.out / METRICS) if resume else None
        self.corpus = corpus
        self.given = {k: v for k, v in overrides.items() if v is not None}
        # preset auto: the text decides first (recipe.py): fine-tune base, or which scratch recipe
        self.auto = None
        if preset == SCRATCH and init_from is not None:
            raise CharwiseError("--preset scratch trains from scratch: it does not mix with "
                                "--init-from (whose preset is finetune)")
        if preset in ("auto", SCRATCH) and init_from is None and not resume:
            self.auto = recipe.plan(corpus, overrides, overrides.get("encoding") or "utf-8",
                                    from_base=preset == "auto")
            if self.auto.kind == "finetune":
                init_from = "base"
        # what a new run starts from (read before anything is written)
        self.source = transfer.read_source(init_from) if init_from is not None else None
        self.mcfg, self.tcfg = self._settings(preset, overrides)
        if self.prev is not None:
            self.corpus = resume_corpus(self.out, self.prev, corpus)
        # the run's state, restored by a resume
        self.step, self.state, self.loss, self.why = 0, None, float("nan"), "budget"
        self.best: dict | None = None
        self.since_best, self.faults, self.last_eval_step = 0, 0, -1
        self.eval_seconds, self.score_seconds, self.hooks = 0.0, 0.0, []
        self.made_cache = False              # setup made RUN/cache (removed if it is refused)
        self.eval_group: Any = None          # torchrun: where ranks wait for rank 0's evaluation
        self.eval_items: list[np.ndarray] | None = None      # line mode: the items scored
        # steps taken but not read yet: (step, lr, its (loss, grad norm) on the device)
        self.pending: list[tuple[int, float, torch.Tensor]] = []
        self.read_mark = 0.0                # the run's time at the last read or pause
        self.step_end = 0.0                 # the run's time at the end of the step reported

    def _settings(self, preset: str | None, overrides: dict) -> tuple[ModelConfig, TrainConfig]:
        if self.source is not None:
            train_overrides = transfer.training_overrides(overrides)
            if self.auto is not None and not train_overrides.keys() & BUDGETS:
                # auto's budget is the same whichever start it chose
                train_overrides["max_time"] = PRESETS["small"]["max_time"]
            _, tcfg = resolve("finetune" if preset == "auto" else preset, **train_overrides)
            return transfer.model_config(self.source, overrides), tcfg
        if self.prev is None:
            if preset == "finetune":
                raise CharwiseError("--preset finetune is for --init-from SOURCE (the model's shape "
                                    "comes from SOURCE); give --init-from base or a run directory")
            if self.auto is not None:
                preset, overrides = recipe.settings(self.auto, overrides)
            return resolve(preset, **overrides)
        mcfg, stored = build(ModelConfig, self.prev["model"]), build(TrainConfig, self.prev["train"])
        _check_resume_settings(self.out, mcfg, stored, overrides)
        budget = {k: v for k, v in overrides.items() if v is not None and k in RESUMABLE}
        return mcfg, build(TrainConfig, {**asdict(stored), **budget})

    # ------------------------------------------------------------------------- setup

    def setup(self) -> None:
        self.dist = dist = distributed.setup(self.tcfg.device)
        self.device = distributed.device_for(dist, pick_device(self.tcfg.device))
        # sizes first: a model that cannot fit (on a GPU, in its free memory) is refused before
        # the corpus is read or a file written, and again once the vocabulary is known, before
        # the model is built
        self._check_memory(replace(self.mcfg, vocab_size=max(self.mcfg.vocab_size, 1)))
        if dist.enabled and self.tcfg.engine != "torch":
            raise CharwiseError("distributed training needs --engine torch")
        if not dist.main:
            self.log = lambda *a: None                           # rank 0 speaks
        # the precision before any file is written: a CPU without bf16 refuses here
        self.precision = pick_precision(self.tcfg.precision, self.device, self.mcfg)
        try:
            self._load_data()
            self._size_to_machine()
            self._check_memory(self.mcfg)
            self._build_model()
            self._thread_policies()
            self.read_every = read_interval(self.device, dist.enabled)
            if self.prev is not None:
                self._restore()
            # DDP averages the gradients of the ranks' equal shares: the same update as one process
            self.net = self.model
            if dist.enabled:
                self.net = DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            # --max-time counts from here (corpus read, model built) to the last save (budget.py)
            self.t0 = time.perf_counter() - self.spent
            self._announce()
            self._start_budget()
        except BaseException:
            if self.made_cache:             # a refused new run leaves nothing behind (its lock
                shutil.rmtree(self.out / CACHE, ignore_errors=True)    # goes on release)
            raise
        tb = open_logger(self.tcfg.tensorboard and dist.main, self.out, self.data.vocab, self.info,
                         self.chars_per_step, self.step)
        if dist.main:
            write_run(self.out, self.info)
            write_run_config(self.out, self.info)         # config.toml: `train --config` reruns it
        self.signals = hooks.Signals()
        self.hooks = [hooks.MetricsFile(self.out / METRICS, dist.main), hooks.TensorBoard(tb),
                      hooks.Progress(self.show_progress if dist.main else False, self.max_steps,
                                     self.tcfg.max_time, self.chars_per_step, self.log),
                      self.signals]
        self.last_save = self.elapsed()                 # when the last checkpoint was written

    def _size_to_machine(self) -> None:
        """preset auto from scratch on a text of 100 kB and more, on this CPU, with a time
        budget: the width that suits this machine's measured speed and the budget (recipe.py)."""
        auto, tcfg = self.auto, self.tcfg
        if (auto is None or auto.kind != "sized" or not tcfg.max_time or self.dist.enabled
                or self.device.type != "cpu" or tcfg.engine != "torch"
                or self.given.keys() & set(recipe.SHAPE_FLAGS)):
            return
        pick = lambda cfg: pick_precision(tcfg.precision, self.device, cfg)
        recipe.size_to_machine(auto, tcfg.max_time, self.mcfg, tcfg.batch_size, tcfg.seq_len,
                               pick, self.device, tcfg.threads)
        self.mcfg = replace(self.mcfg, hidden_size=auto.hidden_size)
        if "lr" not in self.given:
            self.tcfg = replace(tcfg, lr=auto.lr)
        self.precision = pick(self.mcfg)

    def _check_memory(self, mcfg: ModelConfig) -> None:
        bounds.check_training(mcfg, self.tcfg.batch_size, self.tcfg.seq_len, device=self.device,
                              world=self.dist.world)

    def _start_budget(self) -> None:
        """With a time budget the final evaluation must fit in it: its cost is measured (a
        sample now and every 30 s, each evaluation) and reserved (budget.py). A budget too short
        for even that evaluation is refused now, before the run writes a file of its own."""
        # the characters an evaluation scores: every one after the first, or every item's
        self.eval_chars = len(self.eval_tok) - (self.eval_items is None)
        self.budget = TimeBudget(self.tcfg.max_time, self.eval_chars, slack=END_SLACK)
        if not self.tcfg.max_time:
            return
        self._measure_eval_speed()                       # rank 0 measures, every rank decides
        self.budget.eval_s_per_char, = distributed.broadcast_floats(
            self.dist, [self.budget.eval_s_per_char], self.device)
        refused = self.budget.too_short(self.spent)
        if refused:
            raise CharwiseError(refused)                 # setup removes the new run's cache
        left, need = self.tcfg.max_time - self.spent, self.budget.reserve
        if left > 0 and need > 0.5 * left:
            self.log(f"note: at the speed measured now, the final evaluation of "
                     f"{self.eval_chars:,} characters takes ~{need:.0f} s of the {left:.0f} s "
                     "left of --max-time")

    def _load_data(self) -> None:
        """Check the output, encode the corpus (rank 0 first), split it, cut the streams."""
        dist, tcfg, out = self.dist, self.tcfg, self.out
        rundir.check_run_start(out, self.resume, self.force)     # again, now that the lock is held
        if self.source is not None and (tcfg.vocab != "chars" or tcfg.line_mode):
            raise CharwiseError("--init-from continues a code-point model trained as one text: it "
                                "cannot start --vocab bytes or --line-mode training")
        distributed.barrier(dist)                        # every rank checked before any write
        if tcfg.line_mode:
            return self._load_items()
        # rank 0 encodes the corpus while the others wait, as long as that takes (distributed.py)
        encoding = distributed.wait_group(dist, distributed.rank0_timeout(
            _corpus_bytes(self.corpus) * distributed.ENCODE_SECONDS_PER_BYTE))
        if dist.main:
            _prepare_out(out, self.resume, self.force)
            # the cache this new run makes goes again if the run is refused before it starts
            self.made_cache = self.prev is None and not (out / CACHE).exists()
            self.data = prepare_corpus(self.corpus, cache_dir=out / CACHE,
                                       encoding=tcfg.encoding, vocab_kind=tcfg.vocab)
            hint = line_mode_hint(self.corpus, tcfg.encoding) if self.prev is None else None
            if hint:
                self.log(hint)
        distributed.barrier(dist, encoding)              # then the others read rank 0's cache
        if not dist.main:
            self.data = prepare_corpus(self.corpus, cache_dir=out / CACHE, encoding=tcfg.encoding,
                                       vocab_kind=tcfg.vocab)
        self.text_vocab = self.data.vocab
        if self.source is not None or (self.prev is not None and self.prev.get("init_from")):
            # the model's vocabulary is SOURCE's merged with the text's: encode the text in it
            vocab = (transfer.merge_vocab(self.source.vocab, self.text_vocab) if self.source
                     else Vocab(tuple(self.prev["vocab"])))
            self.data = transfer.in_vocab(self.data, vocab)
        if self.prev is not None and vocab_record(self.data.vocab, False)["vocab"] != self.prev["vocab"]:
            raise CharwiseError(f"{self.data.source}: the corpus changed since this run began "
                                "(its vocabulary differs); cannot resume")
        self.train_tok, self.val_tok = self.data.split(tcfg.val_fraction)
        n_fit = (len(self.train_tok) - 1) // tcfg.seq_len
        if self.prev is None and 1 <= n_fit < tcfg.batch_size and not dist.enabled:
            self.log(f"note: text too short for {tcfg.batch_size} streams of {tcfg.seq_len}; "
                     f"using {n_fit}")
            tcfg = replace(tcfg, batch_size=n_fit)                 # a short text: fewer streams
        distributed.check_world(dist, tcfg.batch_size, self.prev and self.prev.get("world_size", 1))
        self.rows = dist.streams(tcfg.batch_size)
        self.batches = StreamBatches(self.train_tok, tcfg.batch_size, tcfg.seq_len, seed=tcfg.seed,
                                     streams=self.rows)
        # no split (the spec's setup): evaluate on the whole text
        self.eval_tok = self.val_tok if len(self.val_tok) >= 2 else self.train_tok
        if len(self.val_tok) < 2 and tcfg.val_fraction > 0:
            self.log("note: validation split too short; evaluating on the training text")
        # rank 0 scores the whole split alone at each evaluation; the others wait that long
        self.eval_group = distributed.wait_group(dist, distributed.rank0_timeout(
            len(self.eval_tok) * distributed.SCORE_SECONDS_PER_CHAR))
        self._set_budget(tcfg, tcfg.batch_size * tcfg.seq_len)

    def _set_budget(self, tcfg: TrainConfig, chars_per_step: int) -> None:
        if tcfg.max_steps is None and tcfg.max_epochs is None and tcfg.max_time is None:
            tcfg = replace(tcfg, max_epochs=10.0)
        self.tcfg, self.mcfg = tcfg, replace(self.mcfg, vocab_size=len(self.data.vocab))
        self.windows = self.batches.windows_per_epoch
        self.eval_every = (max(1, round(tcfg.eval_every_epochs * self.windows))
                           if tcfg.eval_every_epochs else tcfg.eval_every)
        self.max_steps = tcfg.max_steps
        if tcfg.max_epochs is not None:
            self.max_steps = min(self.max_steps or 10**18, max(1, int(tcfg.max_epochs * self.windows)))
        self.chars_per_step = chars_per_step

    def _load_items(self) -> None:
        """Line mode: every line one item, B whole items a batch, each from a zero state."""
        tcfg = self.tcfg
        if self.dist.enabled:
            raise CharwiseError("--line-mode trains in one process (no torchrun)")
        if tcfg.engine != "torch":
            raise CharwiseError("--line-mode needs --engine torch")
        _prepare_out(self.out, self.resume, self.force)
        items = prepare_items(self.corpus, tcfg.vocab, tcfg.encoding, tcfg.val_fraction, self.log)
        self.data = Corpus(items.vocab, np.concatenate(items.train + items.val), items.source,
                           items.sha256)
        self.train_tok = np.concatenate(items.train)
        self.val_tok = np.concatenate(items.val) if items.val else self.train_tok[:0]
        self.eval_items = items.val or items.train
        self.eval_tok = np.concatenate(self.eval_items)
        if not items.val:
            self.log("note: no validation items; evaluating on the training items")
        self.items_meta = {"train": len(items.train), "val": len(items.val),
                           "longest": items.stats.longest}
        self.rows = np.arange(tcfg.batch_size)
        self.batches = ItemBatches(items.train, tcfg.batch_size, items.end_id, seed=tcfg.seed)
        mean_len = len(self.train_tok) / len(items.train) + 1
        self._set_budget(tcfg, int(tcfg.batch_size * mean_len))

    def _thread_policies(self) -> None:
        """Threads for the training step and for scoring: a fixed --threads, or measured and
        re-measured as the run goes (threads.py). Processes on one machine share its CPUs."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world))
        cpus = max(1, usable_cpus() // max(1, local))
        on_cpu = self.device.type == "cpu"
        self.step_threads = thread_policy(self.tcfg.threads, cpus, on_cpu and self.ref is None)
        self.score_threads = thread_policy(self.tcfg.threads, cpus, on_cpu)

    def _build_model(self) -> None:
        """Seeds, model, optimizer (or the NumPy engine) and run.json's info."""
        tcfg, mcfg, data = self.tcfg, self.mcfg, self.data
        torch.manual_seed(tcfg.seed)
        random.seed(tcfg.seed)
        self.np_rng = np.random.default_rng(tcfg.seed)
        self.model = CharRNN(mcfg)
        if self.source is not None:
            self.model.load_state_dict(transfer.transplant(self.source.state, self.source.vocab,
                                                           data.vocab))
        if self.dist.enabled:
            # Each rank trains other streams: with one seed they would all draw the same
            # dropout masks (on the CPU and the CUDA generator, and cuDNN's dropout state is
            # seeded from the latter), correlated noise a single process never has. The
            # weights are already built from tcfg.seed, and DDP broadcasts rank 0's anyway.
            torch.manual_seed(dropout_seed(tcfg.seed, self.dist.rank))
        self.model.to(self.device)
        self.opt = _optimizer(self.model, tcfg)
        self.ref = _reference_trainer(self.model, tcfg, self.resume) if tcfg.engine == "numpy" else None
        self.precision = "fp32" if self.ref is not None else self.precision
        self.info = {
            "charwise_version": __version__, "model": asdict(mcfg), "train": asdict(tcfg),
            **vocab_record(data.vocab, tcfg.line_mode), "parameters": self.model.num_parameters,
            "corpus": {"source": str(Path(data.source).resolve()), "sha256": data.sha256,
                       "chars": len(data.tokens),
                       "train_chars": len(self.train_tok), "val_chars": len(self.val_tok)},
            "device": str(self.device), "precision": self.precision,
            "recurrence_precision": recurrence_precision(self.device, self.precision),
            "world_size": self.dist.world,
            "best": None, "history": [], "status": "training", "train_seconds": 0.0, "step": 0,
            # chunked: memmaps of GBs
            "char_counts": token_counts(self.train_tok, len(data.vocab)).tolist(),
        }
        if self.source is not None:
            self.info["init_from"] = self.source.record(data.vocab, self.text_vocab)
        elif self.prev is not None and self.prev.get("init_from"):
            self.info["init_from"] = self.prev["init_from"]
        if self.eval_items is not None:
            self.info["items"] = self.items_meta
        if self.auto is not None:
            self.info["auto"] = self.auto.record()
        elif self.prev is not None and self.prev.get("auto"):
            self.info["auto"] = self.prev["auto"]             # a resume keeps what auto chose
        # auto's speed probes ran inside the budget
        self.spent = self.auto.probe_seconds if self.auto is not None else 0.0

    def _restore(self) -> None:
        # last.safetensors is the one source of truth for a resume: run.json may be a write behind.
        self.step, self.state, self.spent, meta = resume.restore(
            self.out, self.model, self.opt, self.np_rng, self.device, self.dist.rank, self.rows,
            self.tcfg.batch_size)
        self.best = meta["best"]
        self.info.update(best=meta["best"], history=meta["history"])
        self.last_eval_step = meta.get("last_eval_step", -1)
        self.since_best = meta.get("since_best", 0)
        self.loss = meta.get("loss", float("nan"))
        self.faults = meta.get("faults", 0)
        if self.dist.main:
            rundir.truncate_metrics(self.out / METRICS, self.step, self.prev_metrics)
        self.prev_metrics = None
        by_epochs = (self.tcfg.max_epochs is not None
                     and self.max_steps == max(1, int(self.tcfg.max_epochs * self.windows)))
        note, _ = resume_note(self.step, self.spent, self.max_steps, self.tcfg.max_time,
                              "--max-epochs" if by_epochs else "--max-steps", str(self.out))
        self.log(note)

    def _announce(self) -> None:
        m = self.mcfg
        if self.auto is not None:
            self.log(recipe.header(self.auto, self.tcfg.max_time))
        self.log(f"charwise {__version__}: {m.cell.upper()} {m.layers}x{m.hidden_size}, "
                 f"{self.model.num_parameters:,} parameters, vocabulary {len(self.data.vocab)}, "
                 f"{len(self.train_tok):,} train / {len(self.val_tok):,} val chars, "
                 f"{self.device} {self.precision}"
                 + (f", {self.dist.world} processes" if self.dist.enabled else ""))

    # ------------------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Set up, train until a budget, patience or a signal stops it, and return the result."""
        self.setup()
        try:
            self._loop()
        except RuntimeError as e:
            if not (self.dist.enabled and distributed.peer_failure(e)):
                raise                          # this process's own error, as it is
            # A peer died or timed out mid-collective: one line instead of a gloo/NCCL trace.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CharwiseError(f"rank {self.dist.rank}: another training process stopped or "
                                f"timed out ({first}); the last checkpoint in {self.out} can be "
                                f"resumed with torchrun ... -m charwise train --resume "
                                f"--out {self.out}") from None
        finally:
            for hook in self.hooks:
                hook.close()
            if hasattr(self, "step_threads"):
                self.step_threads.restore()
        self.info["stopped_because"] = self.why
        if self.dist.main:
            write_run(self.out, self.info)
        distributed.shutdown(self.dist)
        best = self.best
        return TrainResult(self.out, self.step, best["val_loss"] if best else None,
                           best["step"] if best else None, self.loss, round(self.elapsed(), 3),
                           self.info["history"], self.why)

    def _loop(self) -> None:
        tcfg = self.tcfg
        self.model.train()
        stop_now, out_of_time = False, self._restart_clock()
        staged = None                          # the next step's batch, already on its way
        while True:
            if self.max_steps is not None and self.step >= self.max_steps:
                break
            if out_of_time:
                self.why = "time"
                break
            if stop_now:
                self.save("interrupted")
                raise TrainingInterrupted(self.signals.signum, self.out)
            xb, yb, dev = self._next_window(staged)
            lr = learning_rate(tcfg, self.step, self.frac)
            self.pending.append((self.step + 1, lr, self.train_step(xb, yb, lr, dev)))
            self.step += 1
            # prefetch: the next batch is cut, and copied to a GPU, while this step runs there
            staged = (self._batch(self.step)
                      if self.max_steps is None or self.step < self.max_steps else None)
            rows, (stop_now, out_of_time, saving, measuring) = self._step_end()
            evaluating = bool(self.eval_every) and self.step % self.eval_every == 0
            if not rows and (evaluating or saving or measuring or out_of_time or stop_now
                             or staged is None):
                rows = self._read()            # what comes next acts on these steps: read them
            if not rows:
                continue
            if not self._report(rows):         # the last step was skipped: nothing else now
                continue
            paused = False                     # an evaluation, a save or a measurement
            if evaluating:
                self.evaluate()
                self.save("training")
                if tcfg.patience is not None and self.since_best >= tcfg.patience:
                    self.why = "patience"
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
        b = self.budget
        stopped_at, reserved, predicted = self.elapsed(), b.reserve, b.eval_seconds
        final = self.last_eval_step != self.step
        if final:
            self.evaluate(final=True)
        if b.max_time and self.dist.main:
            self.info["time_budget"] = {
                "max_time": b.max_time, "training_ended": round(stopped_at, 3),
                "reserved": round(reserved, 3), "predicted_evaluation": round(predicted, 3),
                "final_evaluation": round(self.score_seconds, 3) if final else None}
        self.save("done")

    def _batch(self, step: int) -> tuple[int, np.ndarray, np.ndarray, Any]:
        """Step `step`'s (B, T) inputs and targets, and (torch engine) their device copies,
        started non-blocking from pinned memory (to_device)."""
        xb, yb = self.batches.window(step % self.windows, step // self.windows)
        dev = None if self.ref is not None else (to_device(xb, self.device), to_device(yb, self.device))
        return step, xb, yb, dev

    def _next_window(self, staged: tuple | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
        """The step's inputs, targets and their device copies (`staged` during the previous
        step if it is this step's); restarts the carried state where it is due."""
        _, xb, yb, dev = (staged if staged is not None and staged[0] == self.step
                          else self._batch(self.step))
        self._restart_state()
        return xb, yb, dev

    def _restart_state(self) -> None:
        k, ref, n_rows = self.step % self.windows, self.ref, len(self.batches.rows)
        if self.eval_items is not None:                         # line mode: every item starts cold
            self.state = None
            return
        if k == 0:                                              # a new epoch starts cold
            self.state = self.model.zero_state(n_rows, self.device)
            if ref is not None:
                ref.reset_state(self.tcfg.batch_size)
        elif self.tcfg.reset_every:
            keep = stream_keep_mask(self.step, self.batches.rows, self.tcfg.reset_every)   # (B,)
            if not keep.all():
                mask = to_device(keep.astype(np.float32), self.device)[None, :, None]
                self.state = tuple(s * mask.to(s.dtype) for s in self.state)
                if ref is not None and ref.state is not None:
                    ref.state = tuple(s * keep[None, :, None].astype(s.dtype) for s in ref.state)

    def train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float,
                   dev: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One optimizer step on a window (`dev`: its copy on the device, if made already);
        returns its (loss, grad norm), unread, on the device (`_read` reads them). A non-finite
        loss or gradient skips the update and restarts the carried state, decided on the device."""
        if self.ref is not None:
            loss = self.ref.step(xb, yb, lr=lr)
            return torch.tensor([loss, self.ref.last_grad_norm], dtype=torch.float64)
        x, y = dev if dev is not None else (to_device(xb, self.device), to_device(yb, self.device))
        for g in self.opt.param_groups:
            g["lr"] = lr
        # fp32_flags around the backward pass too: cuDNN's RNN backward reads the TF32 setting
        with self.step_threads.measure(self.chars_per_step), fp32_flags(self.device, self.precision):
            with autocast(self.device, self.precision):
                logits, new_state = self.net(x, self.state)              # (B, T, V)
                loss = F.cross_entropy(logits.reshape(-1, self.mcfg.vocab_size).float(), y.reshape(-1))
                del logits          # backward needs the log-softmax only: one B*T*V buffer less
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            clip = self.tcfg.grad_clip if self.tcfg.grad_clip > 0 else float("inf")
            gnorm_t = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            # a NaN loss makes the (all-reduced) norm NaN too
            ok = torch.isfinite(gnorm_t)
            if self.opt.defaults.get("fused"):
                # Skipped on the device, without reading `ok` (a sync): fused AdamW leaves the
                # weights, moments and step count untouched where found_inf is 1 (GradScaler's
                # mechanism; bit-identical to not stepping).
                self.opt.found_inf = (~ok).float()     # type: ignore[attr-defined]
                self.opt.step()
            elif ok.item():                    # an unfused optimizer cannot skip on the device
                self.opt.step()
        if self.eval_items is None:            # a skipped step restarts the carried state
            self.state = tuple(torch.where(ok, s, 0.0) for s in detach_state(new_state))
        else:
            self.state = self.model.zero_state(len(self.batches.rows), self.device)
        return torch.stack([loss.detach().float(), gnorm_t.float()])

    def _step_end(self) -> tuple[list[Row], Decisions]:
        """After a step: the steps read (when due) and what the ranks agree. Under torchrun the
        step's loss and grad norm travel in that one all-reduce, whose read is the step's only
        sync; in one process they are read every `read_every` steps (a sync on a GPU)."""
        if self.dist.enabled:
            values, decided = self._agree(self.pending[-1][2])
            return self._read([values]), decided
        rows = self._read() if len(self.pending) >= self.read_every else []
        return rows, self._agree(None)[1]

    def _read(self, values: list | None = None) -> list[Row]:
        """The pending steps' (step, lr, loss, grad norm, end time), read from the device in one
        copy (or `values`, already read). Between reads a GPU's steps are only queued and the
        host's clock sees their end at the read: the interval since the last read (or pause) is
        shared evenly among its steps, each stamped with its own end, and measured for the time
        budget. (Stamping them all with the time of the read put up to READ_EVERY steps in one
        instant, and rates over part of an interval counted its time for fewer steps.)"""
        pending, self.pending = self.pending, []
        if not pending:
            return []
        if values is None:
            values = read_host(torch.stack([v.to(torch.float64) for _, _, v in pending]))
        now, n = self.elapsed(), len(pending)
        start, self.read_mark = self.read_mark, now
        for _ in range(n):
            self.budget.measured_step((now - start) / n)
        return [(at, lr, loss, gnorm, start + (now - start) * (i + 1) / n)
                for i, ((at, lr, _), (loss, gnorm)) in enumerate(zip(pending, values))]

    def _report(self, rows: list[Row]) -> bool:
        """The hooks' on_step (or on_fault) for each step read, in order and as of that step
        (`self.step`, `self.loss` and `self.step_end` are its own meanwhile); returns whether
        the last one was finite."""
        now, ok = self.step, True
        for at, lr, loss, gnorm, end in rows:
            self.step, self.loss, self.step_end, ok = at, loss, end, math.isfinite(gnorm)
            if ok:
                self._emit("on_step", lr, gnorm)
            else:
                self.faults += 1
                self._emit("on_fault")
            self.step = now
            if not ok:
                self._fault(at)
        return ok

    def _fault(self, at: int) -> None:
        """After a numerical fault at step `at` (counted; the update was skipped, weights
        unchanged, and the stream state restarted): after repeated faults the run stops, best
        checkpoint intact (on a GPU, up to READ_EVERY steps after the fault: none has changed
        the weights)."""
        if self.faults >= 5:
            self.save("failed")
            raise CharwiseError(f"training diverged: non-finite loss or gradients {self.faults} "
                                f"times (last at step {at - 1}); try a lower --lr")

    def _emit(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    # ------------------------------------------------------------------------- the clock

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def time_up(self) -> bool:
        # The next step, the final evaluation and the last saves must fit in the budget too:
        # stop when they would no longer (budget.py; their cost is measured).
        return self.budget.time_up(self.elapsed())

    def save_due(self) -> bool:
        return self.budget.save_due(self.elapsed(), self.last_save, self.tcfg.checkpoint_every)

    def progress(self) -> float:
        """How far through its budget the run is, 0..1 (the schedule's position)."""
        return budget_progress(self.step, self.max_steps, self.budget, self.elapsed())

    def _restart_clock(self) -> bool:
        """At the start and after a pause (an evaluation, a save, a measurement): the pause is
        no step's time, and what rank 0's clock decides is decided again. Returns out_of_time."""
        self.read_mark = self.elapsed()
        return self._agree(None)[1].out_of_time

    def _agree(self, values: torch.Tensor | None) -> tuple[list[float], Decisions]:
        """The one small collective after each step: the ranks' mean of `values` (the step's
        loss and grad norm, still on the device), whether any rank caught a signal, and what
        rank 0's clock decides -- stop for time, save now, measure the evaluation's speed now,
        and the schedule's position for the next step (`self.frac`). Every rank follows rank
        0's clock (its own would drift: other start-up times, and only rank 0 measures the
        evaluation), so the replicas apply the same learning rate and stop at the same step.
        Between reads a GPU's steps are only queued: the host's clock does not see them, and a
        time budget may end up to READ_EVERY steps late (one step under torchrun, whose clock
        is read before the step's sync).

        Under torchrun this all-reduce and its read stay per step: the learning rate and the
        stop must be the same on every rank at every step, and rank 0 decides them from its
        clock; agreeing every N steps would need a schedule fixed N steps ahead."""
        measure = self.dist.main and self.budget.remeasure_due(self.elapsed())
        means, (caught,), (up, save, remeasure, self.frac) = distributed.agree(
            self.dist, values, bool(self.signals.caught),
            lead=(self.time_up(), self.save_due(), measure, self.progress()), device=self.device)
        return means, Decisions(caught, bool(up), bool(save), bool(remeasure))

    def _measure_eval_speed(self) -> None:
        """Time a sample of the evaluation (after an untimed warm-up: budget.time_sample) to
        learn what the final one will cost (rank 0, only with a time budget): the machine's
        speed changes as other processes come and go. The sample is a quarter of a small
        evaluation at most, so that measuring never costs more than a good part of it."""
        if not (self.budget.max_time and self.dist.main):
            return
        sample = min(4096, max(64, self.eval_chars // 4))
        warmup = min(512, max(16, sample // 8))
        self._sync_reference()
        policy = self.score_threads
        seconds, chars = time_sample(self._score_sample, time.perf_counter, sample, warmup,
                                     phase=lambda: (policy.deciding, len(policy.probes)),
                                     settled=lambda: not policy.deciding)
        self.budget.measured_eval(seconds, chars, self.elapsed())

    def _score_sample(self, n: int) -> int:
        """Score about `n` characters of the evaluation text as score() scores the whole;
        returns how many characters (tokens) it scored."""
        if self.eval_items is not None:                  # items of every length, spread out
            every = max(1, round(len(self.eval_tok) / max(n, 1)))
            items = self.eval_items[::every]
            end_id = self.data.vocab.end_id
            assert end_id is not None
            evaluate_items(self.model, items, end_id)
            return sum(len(a) for a in items)
        part = self.eval_tok[:n + 1]
        if isinstance(self.data.vocab, ByteVocab):
            evaluate_bytes(self.model, part, self.precision)
        else:
            evaluate_tokens(self.model, part, self.precision, threads=self.score_threads)
        return len(part) - 1

    # ------------------------------------------------------------------------- evaluate, save

    def _sync_reference(self) -> None:
        # The NumPy engine owns the weights while it trains; copy them into the torch model
        # (same names and layouts) to evaluate and save with the shared code.
        if self.ref is not None:
            self.model.load_state_dict({k: torch.from_numpy(v.astype(np.float32))
                                        for k, v in self.ref.model.state_dict().items()})

    def evaluate(self, final: bool = False) -> dict:
        """Score the whole evaluation split; keep the best weights; returns the history record."""
        te = time.perf_counter()
        if self.dist.main:
            self._emit("on_eval_start", len(self.eval_tok) - 1, final)
        self._sync_reference()
        rec = {"step": self.step, "train_loss": self.loss, "time": round(self.elapsed(), 3),
               "eval_split": "val" if len(self.val_tok) >= 2 else "train",
               "precision": self.precision}
        # One stateful pass is sequential by nature: rank 0 scores the whole split exactly,
        # and every rank gets its numbers (so early-stopping decisions agree).
        ts = time.perf_counter()
        res = self.score() if self.dist.main else {"loss": 0.0, "chars": 0}
        self.score_seconds = time.perf_counter() - ts
        if self.dist.main:                 # a whole evaluation is the best measure of the next
            self.budget.measured_eval(self.score_seconds, self.eval_chars, self.elapsed())
        loss, chars = distributed.broadcast_floats(self.dist, [res["loss"], res["chars"]], self.device,
                                                   self.eval_group)
        rec.update(val_loss=loss, val_bits_per_char=loss / LN2,
                   val_perplexity=math.exp(min(loss, 700)), val_chars=int(chars))
        if "loss_per_item" in res:
            rec.update(val_loss_per_item=res["loss_per_item"], val_items=res["items"])
        if math.isfinite(loss) and (self.best is None or loss < self.best["val_loss"]):
            tw = time.perf_counter()
            if self.dist.main:                 # never overwritten by a worse or broken model
                save_tensors(self.out / BEST, self.model.state_dict(),
                             {"step": self.step, "val_loss": loss})
            # only once its weights are on disk does run.json name the new best (a failed
            # write, disk full say, leaves both files on the previous best)
            self.best = {"step": self.step, "val_loss": loss}
            if self.dist.main:
                self.info["best"] = self.best
                write_run(self.out, self.info)
                self.budget.measured_best(time.perf_counter() - tw)
            self.since_best = 0
        else:
            self.since_best += 1
        rec["best_step"] = self.best["step"] if self.best else None
        self.info["history"].append(rec)
        self._emit("on_eval", rec)
        self.eval_seconds = time.perf_counter() - te
        self.last_eval_step = self.step
        return rec

    def score(self) -> dict:
        """The exact loss of the evaluation split: one stateful pass, or (line mode) every item
        from a fresh state, end symbols included."""
        if self.eval_items is not None:
            end_id = self.data.vocab.end_id
            assert end_id is not None
            return evaluate_items(self.model, self.eval_items, end_id)     # IEEE fp32 on a GPU too
        if isinstance(self.data.vocab, ByteVocab):
            return evaluate_bytes(self.model, self.eval_tok, self.precision)
        return evaluate_tokens(self.model, self.eval_tok, self.precision, threads=self.score_threads,
                               on_chunk=lambda done, total: self._emit("on_eval_chunk", done, total))

    def save(self, status: str) -> None:
        """Write last.safetensors (everything an exact resume needs) and run.json."""
        self.last_save = self.elapsed()
        self._sync_reference()
        dist = self.dist
        ts = time.perf_counter()
        self.info.update(best=self.best, status=status, train_seconds=round(self.elapsed(), 3),
                         step=self.step, threads={"train": self.step_threads.describe(),
                                                  "eval": self.score_threads.describe()})
        # collectives first (every rank), then rank 0 writes the whole run's state
        full_state = (tuple(distributed.gather_rows(dist, s, 1) for s in self.state)
                      if self.state else None)
        rng = _gather_rng(dist, torch.get_rng_state(), self.device)
        cuda_rng = (_gather_rng(dist, torch.cuda.get_rng_state(self.device), self.device)
                    if self.device.type == "cuda" else None)
        if not dist.main:
            return
        self._emit("on_save")
        extra = {"best": self.best, "history": self.info["history"], "since_best": self.since_best,
                 "loss": self.loss, "faults": self.faults, "last_eval_step": self.last_eval_step,
                 "world_size": dist.world}
        resume.save_last(self.out, self.model, self.opt, full_state, rng, self.np_rng, self.step,
                         self.elapsed(), extra, cuda_rng)
        if self.tcfg.keep:
            resume.keep_older(self.out, self.step, self.tcfg.keep)
        write_run(self.out, self.info)
        self.budget.measured_save(time.perf_counter() - ts)


def train(corpus: str | os.PathLike | None = None, out: str | os.PathLike = "runs/latest",
          preset: str | None = "auto", resume: bool = False, force: bool = False,
          progress: bool | None = None, log: Callable[..., Any] = print,
          init_from: str | os.PathLike | None = None, quiet: bool = False,
          **overrides: Any) -> TrainResult:
    """Train a character model on `corpus` (the bundled spec corpus when None) into `out`:
    `Trainer(...).fit()`, holding the run directory's lock (one writer per run: a second
    process gets a one-line error naming the holder's PID). quiet=True (`--quiet`, the config
    key `quiet`): nothing is shown or logged. See Trainer for the other arguments."""
    if init_from is not None and resume:
        raise CharwiseError(INIT_FROM_AND_RESUME)
    if resume:
        rundir.check_run_dir(out)              # a missing run is reported, not created
    rundir.check_run_start(out, resume, force, corpus, init_from)      # before the lock: see there
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


def quiet_setting(quiet: bool, progress: bool | None) -> bool:
    """The one setting `quiet` (--quiet, the config key quiet, train(quiet=True)); progress=False
    is its older name in the API, kept so that existing calls work. Both given and
    contradicting each other: a one-line error."""
    if not isinstance(quiet, bool):
        raise CharwiseError(f"quiet must be true or false, got {quiet!r}")
    if progress is False:
        return True
    if quiet and progress:
        raise CharwiseError("quiet=True and progress=True contradict each other (progress=False "
                            "is quiet's older name)")
    return quiet


def _check_resume_settings(out: Path, mcfg: ModelConfig, tcfg: TrainConfig, overrides: dict) -> None:
    """--resume keeps the run's settings: a flag given with the value the run has is fine (the
    first command re-run with --resume); a different value is refused, naming the flag, the
    stored value and the given one. Budget flags (RESUMABLE) may change."""
    fields = {f.name: (f, cfg) for cfg in (mcfg, tcfg) for f in dataclasses.fields(cfg)}
    diffs = []
    for k, v in overrides.items():
        if v is None or k in RESUMABLE or k not in fields:
            continue
        f, cfg = fields[k]
        have = getattr(cfg, k)
        if check_value(f, v) != have:
            diffs.append(f"--{k.replace('_', '-')} is {have!r} in the run, {v!r} given")
    if diffs:
        raise CharwiseError(f"{out}: --resume keeps the run's settings: {'; '.join(diffs)} "
                            "(leave the flag out, or start a new run)")


def resume_corpus(out: Path, prev: dict, given: str | os.PathLike | None) -> str:
    """The corpus a resumed run reads. The run stores the corpus's absolute path and sha256:
    without a corpus argument the stored file is used if its hash still matches, else the
    resume stops saying so; a corpus given must have the stored hash (a moved file is fine)."""
    rec = prev.get("corpus") if isinstance(prev.get("corpus"), dict) else {}
    want, where = rec.get("sha256"), rec.get("source")
    if not isinstance(want, str) or not isinstance(where, str):
        raise CharwiseError(f"{out / rundir.RUN_JSON}: records no corpus path and sha256; cannot "
                            "check which text this run was trained on")
    path = given if given is not None else where
    try:
        got = corpus_sha256(path)
    except CharwiseError as e:
        if given is not None:
            raise
        raise CharwiseError(f"the run's corpus {where} cannot be read ({e}); pass the same text: "
                            f"charwise train CORPUS --resume --out {out}") from None
    if got != want:
        if given is not None:
            raise CharwiseError(f"{given}: not the text this run was trained on (sha256 "
                                f"{got[:12]}..., the run's corpus has {want[:12]}...); cannot resume")
        raise CharwiseError(f"{where}: changed since this run began (sha256 {got[:12]}..., "
                            f"recorded {want[:12]}...); cannot resume (give the original text: "
                            f"charwise train CORPUS --resume --out {out})")
    return str(path)


def corpus_sha256(path: str | os.PathLike | None) -> str:
    """The sha256 a run records for its corpus: of the file, or a prepared corpus's own digest."""
    if path is not None and Path(path).is_dir():
        return load_prepared(path).sha256
    return sha256_file(check_text_file(path if path is not None else bundled_corpus_path()))


def stream_keep_mask(step: int, rows: np.ndarray, every: int) -> np.ndarray:
    """Which streams keep their carried state at `step`: stream b starts cold again every
    `every` windows, the streams staggered so that a few restart at each step. Sampling and
    evaluation always start from a zero state; a model that has only met it at epoch starts
    (16 times an epoch, say) can blow its cell state up from there (seen: 9 nats/char after
    a quarter epoch). A pure function of the step, so resuming reproduces it."""
    return (step + rows) % every != 0


def _reference_trainer(model: CharRNN, tcfg: TrainConfig, resume: bool):
    """The NumPy engine, starting from the torch model's initial weights."""
    if resume:
        raise CharwiseError("--resume is not supported with --engine numpy (use the torch engine)")
    if model.cfg.dropout > 0:
        raise CharwiseError("--engine numpy has no dropout; use --dropout 0")
    if tcfg.device == "cuda":
        raise CharwiseError("--engine numpy runs on the CPU only")
    ref = NumpyCharLSTM.from_state_dict({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return ReferenceTrainer(ref, lr=tcfg.lr, weight_decay=tcfg.weight_decay, grad_clip=tcfg.grad_clip,
                            betas=(0.9, tcfg.beta2))


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device`. To a GPU through pinned (page-locked) memory: only from there
    is a non_blocking copy asynchronous; from ordinary memory the copy waits for the GPU's queue
    to drain, a hidden sync per batch. (The caching host allocator keeps a pinned block until
    the copy that reads it has run.)"""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def thread_policy(threads: int | None, cpus: int, on_cpu: bool) -> ThreadPolicy:
    """--threads, or one measured as the run goes where the work runs on torch's CPU threads;
    elsewhere (a GPU's step and scoring, the NumPy engine's step) a fixed count: there is
    nothing to choose, and a measuring policy that never records would never settle."""
    return policy_for(threads if on_cpu else threads or 1, max_threads=cpus)


def read_interval(device: torch.device, distributed_run: bool) -> int:
    """Steps between reads of the per-step values (READ_EVERY on one GPU, else every step)."""
    return READ_EVERY if device.type == "cuda" and not distributed_run else 1


def read_host(values: torch.Tensor) -> list:
    """The one place the loop reads per-step values back to the host (a sync on a GPU: the
    tests count the calls)."""
    return values.tolist()


def _gather_rng(dist: distributed.Dist, state: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every rank's RNG state (a uint8 vector) as the rows of one (world, n) uint8 tensor."""
    # (gloo mishandles uint8 all-gathers here: the RNG bytes travel as int64)
    rows = distributed.gather_rows(dist, state.to(device, torch.int64)[None].clone(), 0)
    return rows.to("cpu", torch.uint8)


def dropout_seed(seed: int, rank: int) -> int:
    """The torch seed of `rank` after the weights are built: its own dropout masks, the same
    for a given (seed, rank) on every run (so a run is repeatable and resumable)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0])


def _corpus_bytes(corpus: str | os.PathLike | None) -> int:
    """The size of the text rank 0 encodes (0 for a prepared corpus: it is read, not encoded)."""
    path = Path(corpus) if corpus is not None else bundled_corpus_path()
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
