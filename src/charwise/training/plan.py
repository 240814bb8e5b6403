"""What a run will be, settled before anything of it is written: its settings (a preset, the
flags given, what preset auto or --init-from choose, or a resumed run's own), the run it
resumes and the corpus it reads. Everything here reads; setup.py writes.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .. import recipe
from ..cells import is_attention
from ..data.corpus import check_text_file, load_prepared
from ..errors import CharwiseError
from ..runs import rundir, transfer
from ..runs.bundled import corpus_path as bundled_corpus_path
from ..runs.bundled import sha256_file
from ..runs.rundir import METRICS, read_run
from ..settings.options import build, check_value
from ..settings.train import BUDGETS, PRESETS, SCRATCH, ModelConfig, TrainConfig, check_init_from, resolve
from .tblog import require_tensorboard

# Settings a resumed run may change (its budget and where it runs); the rest are the run's.
RESUMABLE = {"max_steps", "max_epochs", "max_time", "patience", "eval_every", "eval_every_epochs",
             "device", "threads", "tensorboard", "keep", "checkpoint_every"}


@dataclass
class Plan:
    """A run's settings and what it starts from, as `train()`'s arguments resolve them."""
    out: Path
    resume: bool
    force: bool
    log: Callable[..., Any]                # print, or nothing at all (quiet)
    show_progress: bool | None             # the bar: True, False, or None (on a terminal)
    corpus: str | os.PathLike | None       # a resumed run's: checked against its sha256
    given: dict[str, Any]                  # the settings given (not None)
    mcfg: ModelConfig
    tcfg: TrainConfig
    auto: recipe.AutoChoice | None         # preset auto's choice, for a new run
    source: transfer.Source | None         # --init-from's model, for a new run
    prev: dict | None                      # the resumed run's run.json
    prev_metrics: list[tuple[int, str]] | None     # and its metrics.jsonl, checked


def check_start(out: str | os.PathLike, resume: bool, force: bool,
                corpus: str | os.PathLike | None, init_from: str | os.PathLike | None) -> None:
    """What `train()` refuses before it takes the run directory's lock, so that a refused run
    leaves `out` as it found it (rundir.check_run_start)."""
    _check_switches(resume, force)
    check_init_from(init_from, resume)
    if resume:
        rundir.check_run_dir(out)              # a missing run is reported, not created
    rundir.check_run_start(out, resume, force, corpus, init_from)


def _check_switches(resume: Any, force: Any) -> None:
    """The API's resume and force are booleans: force="false" is truthy and replaced a run."""
    for name, value in (("resume", resume), ("force", force)):
        if not isinstance(value, bool):
            raise CharwiseError(f"{name} must be true or false, got {value!r}")


def plan_run(corpus: str | os.PathLike | None, out: str | os.PathLike, preset: str | None,
             resume: bool, force: bool, progress: bool | None, log: Callable[..., Any],
             init_from: str | os.PathLike | None, quiet: bool, overrides: dict[str, Any]) -> Plan:
    """train()'s arguments (see Trainer) as a Plan."""
    quiet = quiet_setting(quiet, progress)
    _check_switches(resume, force)
    if overrides.get("cell") is not None:      # checked before the recipe looks the cell up
        check_value(next(f for f in dataclasses.fields(ModelConfig) if f.name == "cell"), overrides["cell"])
    check_init_from(init_from, resume)
    out = Path(out)
    prev = read_run(out) if resume else None
    # metrics.jsonl too is checked before anything is written (truncated by the resume)
    prev_metrics = rundir.metric_lines(out / METRICS) if resume else None
    # preset auto: the text decides first (recipe.py): fine-tune base, or which scratch recipe
    auto = None
    if preset == SCRATCH and init_from is not None:
        raise CharwiseError("--preset scratch trains from scratch: it does not mix with "
                            "--init-from (whose preset is finetune)")
    if preset in ("auto", SCRATCH) and init_from is None and not resume:
        auto = recipe.plan(corpus, overrides, overrides.get("encoding") or "utf-8",
                           from_base=preset == "auto")
        if auto.kind == "finetune":
            init_from = "base"
    # what a new run starts from (read before anything is written)
    source = transfer.read_source(init_from) if init_from is not None else None
    mcfg, tcfg = _settings(out, preset, overrides, prev, auto, source)
    check_cell_flags(mcfg.cell, overrides)
    if tcfg.optimizer == "muon" and not is_attention(mcfg.cell):
        raise CharwiseError(f"--optimizer muon steps a transformer's block matrices; this run's "
                            f"cell is {mcfg.cell} (train it with --optimizer adamw)")
    if tcfg.tensorboard:
        require_tensorboard(out)
    if prev is not None:
        corpus = resume_corpus(out, prev, corpus)
    return Plan(out, resume, force, (lambda *a: None) if quiet else log,
                False if quiet else progress, corpus,
                {k: v for k, v in overrides.items() if v is not None}, mcfg, tcfg, auto, source,
                prev, prev_metrics)


def _settings(out: Path, preset: str | None, overrides: dict, prev: dict | None,
              auto: recipe.AutoChoice | None,
              source: transfer.Source | None) -> tuple[ModelConfig, TrainConfig]:
    if source is not None:
        train_overrides = transfer.training_overrides(overrides)
        if auto is not None and not train_overrides.keys() & BUDGETS:
            # auto's budget is the same whichever start it chose
            train_overrides["max_time"] = PRESETS["small"]["max_time"]
        _, tcfg = resolve("finetune" if preset == "auto" else preset, **train_overrides)
        mcfg = transfer.model_config(source, overrides)
        if mcfg.context and overrides.get("seq_len") is None and tcfg.seq_len > mcfg.context:
            # a transformer's windows fit its context: the recipe's longer ones are cut to it
            tcfg = dataclasses.replace(tcfg, seq_len=mcfg.context)
        return mcfg, tcfg
    if prev is None:
        if preset == "finetune":
            raise CharwiseError("--preset finetune is for --init-from SOURCE (the model's shape "
                                "comes from SOURCE); give --init-from base or a run directory")
        if auto is not None:
            preset, overrides = recipe.settings(auto, overrides)
        return resolve(preset, **overrides)
    mcfg, stored = build(ModelConfig, prev["model"]), build(TrainConfig, prev["train"])
    _check_resume_settings(out, mcfg, stored, overrides, prev.get("asked"))
    budget = {k: v for k, v in overrides.items() if v is not None and k in RESUMABLE}
    return mcfg, build(TrainConfig, {**asdict(stored), **budget})


# The model flags that mean something to one kind of cell only (cells.py: kind)
ATTENTION_ONLY, RECURRENT_ONLY = ("heads", "positions", "tie_weights"), ("hidden_size",)


def check_cell_flags(cell: str, given: dict[str, Any]) -> None:
    """A flag the model's kind of cell has no use for, given a value other than its default
    (a config file lists them all, at their defaults): a one-line error, not silently unused."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    unused = RECURRENT_ONLY if is_attention(cell) else ATTENTION_ONLY
    for name in unused:
        if given.get(name) is not None and given[name] != defaults[name]:
            flag = "--" + name.replace("_", "-")
            raise CharwiseError(f"{flag} is a {'recurrent cell' if name in RECURRENT_ONLY else 'transformer'}'s "
                                f"setting; this run's cell is {cell}"
                                + (" (a transformer's width is --embed-dim)" if is_attention(cell) else ""))


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


def _check_resume_settings(out: Path, mcfg: ModelConfig, tcfg: TrainConfig, overrides: dict,
                           asked: Any = None) -> None:
    """--resume keeps the run's settings: a flag given with the value the run has is fine (the
    first command re-run with --resume), and so is the value the first command gave where the
    run changed it (run.json "asked": fewer streams for a short text); a different value is
    refused, naming the flag, the stored value and the given one. Budget flags (RESUMABLE) may
    change."""
    fields = {f.name: (f, cfg) for cfg in (mcfg, tcfg) for f in dataclasses.fields(cfg)}
    asked = asked if isinstance(asked, dict) else {}
    diffs = []
    for k, v in overrides.items():
        if v is None or k in RESUMABLE or k not in fields or (k in asked and asked[k] == v):
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
    rec = prev.get("corpus")
    rec = rec if isinstance(rec, dict) else {}
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
