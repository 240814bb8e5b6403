"""Every subcommand, declared once: COMMANDS.

One entry per command holds what each layer needs of it: its name and one-line help (the
parser, `charwise --help`, the docs' command-line page), the dataclass whose fields are its
flags (settings/options.py, or train's in settings/train.py), its arguments that are paths
rather than options, the function it calls ("module:name" where it is defined) and its name
in the Python API (charwise.<api>), and `run`, the command's own glue: options from the flags,
the call, what it prints. cli.py builds the parser and dispatches from the table;
charwise/__init__ exports the API functions named here (API). A new subcommand is one entry
(and its options dataclass).

This module imports no torch (`import charwise` and `charwise --help` stay fast): each `run`
imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import CharwiseError
from .settings.commands import (
    AnalyzeOptions,
    EvalOptions,
    ExportOptions,
    GradcheckOptions,
    PackOptions,
    PlotOptions,
    PrepareOptions,
    SampleOptions,
    ServeOptions,
)
from .settings.train import TrainRun


@dataclass(frozen=True)
class Arg:
    """An argument that is not an option of the API function: a path, --json. `names` and `kw`
    go to argparse's add_argument; `path`: an empty value is refused (cli.check_paths)."""
    names: tuple[str, ...]
    kw: dict[str, Any] = field(default_factory=dict)
    path: bool = False


def arg(*names: str, path: bool = False, **kw: Any) -> Arg:
    return Arg(names, kw, path)


@dataclass(frozen=True)
class Command:
    name: str
    help: str                                   # one line, in `charwise --help`'s list
    run: Callable[[argparse.Namespace, Callable[..., Any]], int]  # (flags, self.call) -> exit code
    options: type | None = None                 # a dataclass: one flag per field, after `args`
    function: str | None = None                 # "module:name": where the function it calls is
    api: str | None = None                      # that function's name in the API: charwise.<api>
    args: tuple[Arg, ...] = ()
    description: str | None = None
    epilog: str | None = None                   # shown as written (examples), not re-wrapped
    config_flags: bool = False                  # train: ModelConfig's and TrainConfig's flags too

    def call(self, *args: Any, **kw: Any) -> Any:
        """Call the function, imported only now and only its own module: `charwise prepare`
        and `charwise info` load no torch (charwise.api imports everything), and train's flags
        and config file are checked before it loads."""
        if self.function is None:
            raise TypeError(f"charwise {self.name} calls no API function")
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kw)


RUN_DIR_HELP = ("a run directory, a model packed by charwise pack (FILE.charwise), or base (the "
                "model bundled with charwise)")
RUN_DIR = arg("run_dir", help=RUN_DIR_HELP, path=True)
JSON = arg("--json", action="store_true", help="print JSON")


# ----------------------------------------------------------------------------- each command's glue

def _train(a, train) -> int:
    from .runs.runlock import refuse_if_held
    from .settings.toml import merge_cli
    kw = merge_cli(a)                       # --config file, then the flags given here
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0:
        # train() checks --init-from/--resume and the run directory, then takes the run's lock;
        # a lock held by another process is reported here already, so that a second writer
        # learns at once, not after torch loads (drop this once train() locks before that)
        refuse_if_held(kw["out"])
    res = train(resume=a.resume, **kw)
    if not rank0:
        return 0                                 # under torchrun, rank 0 reports
    best = f"{res.best_val_loss:.4f} nats/char at step {res.best_step}" if res.best_val_loss is not None else "n/a"
    print(f"done: {res.steps} steps in {res.train_seconds:.1f}s ({res.stopped_because}); "
          f"final train loss {res.final_train_loss:.4f}; best eval loss {best}; run in {res.run_dir}")
    return 0


def _prepare(a, prepare) -> int:
    from .data.prepare import summary_line, verify
    from .generation.stops import parse_escapes
    if a.verify is not None:
        if a.corpus or a.out:
            raise CharwiseError("prepare --verify DIR takes no inputs and no --out")
        res = verify(a.verify)
        notes = "".join(f"; source {k.split('_')[1]}: {', '.join(res[k][:3])}"
                        for k in ("sources_changed", "sources_missing") if res[k])
        print(f"{res['path']}: {res['tokens']:,} tokens, sha256 matches prepared.json{notes}")
        return 0
    options = PrepareOptions.from_args(a)
    # a separator typed in a shell spells a newline \n (escapes as --stop's; an unknown one is
    # refused): the API takes the text itself
    separator = parse_escapes(options.separator, "--separator")
    res = prepare(a.corpus, a.out, dataclasses.replace(options, separator=separator))
    print(summary_line(res))
    return 0


def _sample(a, sample) -> int:
    sample(a.run_dir, SampleOptions.from_args(a), out=sys.stdout, err=sys.stderr)
    return 0


def _eval(a, evaluate) -> int:
    from .generation.command import eval_summary
    res = evaluate(a.run_dir, a.textfile, EvalOptions.from_args(a))
    print(json.dumps(res) if a.json else eval_summary(res))
    return 0


def _demo(a, demo) -> int:
    demo(a.out, force=a.force)
    return 0


def _gradcheck(a, _) -> int:
    from .bounds import check_gradcheck
    from .reference import format_table, passed, run_gradcheck
    from .settings.train import ModelConfig
    o = GradcheckOptions.from_args(a)
    # train's size checks (memory, in float64), and a bound on the time, before anything is built
    cfg = ModelConfig(cell=o.cell, embed_dim=o.embed, hidden_size=o.hidden, layers=o.layers,
                      vocab_size=o.vocab)
    check_gradcheck(cfg, o.batch, o.seq, o.max_entries)
    rows = run_gradcheck(cell=o.cell, layers=o.layers, V=o.vocab, E=o.embed, H=o.hidden,
                         B=o.batch, T=o.seq, seed=o.seed, max_entries=o.max_entries)
    print(format_table(rows))
    return 0 if passed(rows) else 1


def _plot(a, plot) -> int:
    print(plot(a.run_dir, a.out, PlotOptions.from_args(a)))
    return 0


def _analyze(a, analyze) -> int:
    res = analyze(a.run_dir, a.textfile, a.out, AnalyzeOptions.from_args(a))
    o, p = res["overall"], res["plateau"]
    print(f"{res['text']['source']}: {o['predictions']:,} predictions, {o['nats']:.4f} nats/char "
          f"({o['bits']:.4f} bits/char, {o['precision']}), top-1 accuracy {o['accuracy']:.1%}")
    hard = ", ".join(f"{r['label']} {r['mean_nats']:.2f}" for r in res["hardest"]["rows"][:5])
    print(f"hardest characters (mean nats, among those seen >= {res['hardest']['min_count']} times): {hard}")
    if p:
        print(f"plateau: {p['verdict']}")
    for s in res["samples"]:
        copied = (s.get("novelty") or {}).get("ngram_overlap", {}).get(20)
        ll = "n/a" if s["loglik_nats"] is None else f"{s['loglik_nats']:.3f}"
        cp = "" if copied is None else f", 20-grams copied {copied:.0%}"
        print(f"T={s['temperature']}: log-likelihood {ll} nats/char{cp}: {s['text'][:70]!r}")
    print(f"report: {res['files']['report']} ({res['seconds']:.1f}s)")
    return 0


def _info(a, info) -> int:
    from .runs.runinfo import format_info
    d = info(a.run_dir)
    print(json.dumps(d, ensure_ascii=False) if a.json else format_info(d))
    return 0


def _export(a, export) -> int:
    from .exporting.command import summary_line
    print(summary_line(export(a.run_dir, out=a.out, options=ExportOptions.from_args(a))))
    return 0


def _serve(a, serve) -> int:
    serve(a.run_dir, ServeOptions.from_args(a))
    return 0


def _pack(a, pack) -> int:
    from .packing import summary_line
    print(summary_line(pack(a.run_dir, a.out, PackOptions.from_args(a))))
    return 0


# ----------------------------------------------------------------------------- the table

TRAIN_EXAMPLES = """examples:
  charwise train --out runs/pp                           # the spec model on the bundled corpus
  charwise train input.txt --preset small --max-time 180 --out runs/shk
  charwise train --config configs/shakespeare.toml       # settings from a TOML file
  charwise train --config configs/shakespeare.toml --lr 2e-3 --out runs/lr2   # flags override it
  charwise train --config runs/shk/config.toml --out runs/again               # the same run again
  charwise train --resume --out runs/shk --max-time 600  # continue a stopped run
  charwise train input.txt --tensorboard --out runs/tb   # then: tensorboard --logdir runs/tb

config files: flat TOML, one key per flag (dashes as in the flags; underscores work too);
relative paths in them are relative to the file's own directory.
"""

# The order is `charwise --help`'s.
COMMANDS: tuple[Command, ...] = (
    Command("train", "train a model on a text file", _train, TrainRun, "charwise.training:train", "train",
            description="Train a character model. Without CORPUS, the bundled corpus (the "
                        "chapter's opening of Pride and Prejudice) is used.",
            epilog=TRAIN_EXAMPLES, config_flags=True),
    Command("prepare", "encode huge or many text files once into a corpus that train memory-maps",
            _prepare, PrepareOptions, "charwise.data.prepare:prepare", "prepare",
            args=(arg("corpus", nargs="*", help="text files and/or directories", path=True),
                  arg("--out", default=None, help="directory for tokens.bin and prepared.json",
                      path=True),
                  arg("--verify", metavar="DIR", default=None, path=True,
                      help="check a prepared corpus instead: re-hash DIR/tokens.bin against the "
                           "sha256 recorded in DIR/prepared.json (and the sources still present)")),
            description="Join text files and directories (every regular file inside, recursively, "
                        "sorted by path; hidden ones skipped) into one corpus, separated by "
                        "--separator, and encode it in chunks into OUT/tokens.bin + "
                        "OUT/prepared.json. Memory stays flat however large the input; `charwise "
                        "train OUT` then starts in seconds.",
            epilog="examples:\n  charwise prepare books/ --out data/books\n  charwise prepare "
                   "a.txt b.txt --out data/ab --separator '\\n'\n  charwise train data/books "
                   "--preset small"),
    Command("sample", "generate text from a trained run", _sample, SampleOptions,
            "charwise.api:sample", "sample", args=(RUN_DIR,)),
    Command("eval", "exact loss of a run on a text file", _eval, EvalOptions,
            "charwise.api:evaluate", "evaluate",
            args=(RUN_DIR, arg("textfile", help="the text to score", path=True), JSON)),
    Command("demo", "the chapter's pipeline end to end on the bundled corpus", _demo,
            function="charwise.api:demo", api="demo",
            args=(arg("--out", default="runs/demo", path=True,
                      help="where to write the run and pictures (default: runs/demo)"),
                  arg("--force", action="store_true", help="replace an existing run in --out"))),
    Command("gradcheck", "check the NumPy engine's analytic gradients numerically", _gradcheck,
            GradcheckOptions,
            description="Central differences (eps 1e-5, float64) against the NumPy engine's "
                        "hand-written backward pass, for every parameter array and the initial "
                        "state. Exit 0 when all relative errors < 1e-6."),
    Command("plot", "training-curve PNG of a run (works while it trains)", _plot, PlotOptions,
            "charwise.inspect.plots:plot", "plot",
            args=(arg("run_dir", path=True,
                      help="a run directory (packed and bundled models hold no training curve)"),
                  arg("--out", default=None, help="PNG path (default: RUN_DIR/curve.png)", path=True))),
    Command("analyze", "what a run learned: per-character loss, hidden states, neurons (a "
                       "transformer: attention maps), samples, novelty; PNGs and a "
                       "self-contained report.html", _analyze, AnalyzeOptions,
            "charwise.inspect.report:analyze", "analyze",
            args=(RUN_DIR,
                  arg("textfile", nargs="?", path=True,
                      help="text to score (default: the run's validation split)"),
                  arg("--out", default=None, path=True,
                      help="output directory (default: RUN_DIR/analysis; NAME-analysis here for a "
                           "bundled model)")),
            description="Score TEXTFILE (default: the run's validation split, or its training "
                        "text when\nit has none, as with the spec preset) in one stateful pass "
                        "and write OUT/:\nper_char.csv/.png, curve.png, heatmap.png, "
                        "neurons.html, report.html, analysis.json (a transformer:\n"
                        "attention.png, its attention maps, in place of heatmap.png and "
                        "neurons.html).",
            epilog="examples:\n  charwise analyze runs/shk\n  charwise analyze runs/shk "
                   "held_out.txt --out an --oov skip\n  charwise analyze runs/pp --text \"Mr "
                   "Bennet replied that he had not.\" --state c"),
    Command("info", "what a run is: config, parameters, vocabulary, best loss, time", _info,
            function="charwise.runs.runinfo:describe", api="info", args=(RUN_DIR, JSON),
            epilog="example:\n  charwise info runs/shk\n  charwise info runs/shk --json | jq "
                   ".best_val_loss"),
    Command("export", "export a run's inference step (ONNX) to run outside Python", _export,
            ExportOptions, "charwise.exporting.command:export", "export",
            args=(RUN_DIR,
                  arg("--out", default=None, path=True,
                      help="output file (default: RUN_DIR/model.onnx or model.html; for a bundled "
                           "model NAME.onnx or NAME.html here)")),
            description="Write the model's one-character step as an ONNX graph: inputs x "
                        "(batch,) int64 ids, h [and c for an LSTM] (layers, batch, hidden); "
                        "outputs logits (batch, vocab), h_out [, c_out]. The vocabulary is in the "
                        "file's metadata (charwise.vocab). Needs pip install charwise[onnx].",
            epilog="examples:\n  charwise export runs/shk --format onnx --out shk.onnx\n"
                   "  charwise export runs/shk --format web --quantize int8 --out shk.html"),
    Command("serve", "local playground web page: type a prime, watch text stream in", _serve,
            ServeOptions, "charwise.server:serve", "serve", args=(RUN_DIR,),
            description="Serve a page where you type a prime, set temperature and top-p, watch "
                        "the text stream in character by character and hover any character to "
                        "see the model's top-5 alternatives. Needs pip install charwise[serve].",
            epilog="example:\n  charwise serve runs/shk            # then open "
                   "http://127.0.0.1:8000/"),
    Command("pack", "a run as one file to share (weights, run.json and a model card)", _pack,
            PackOptions, "charwise.packing:pack", "pack",
            args=(arg("run_dir", help="a run directory, or base (the model bundled with charwise)",
                      path=True),
                  arg("-o", "--out", default=None, path=True,
                      help="the file to write (default: the run directory's name + .charwise, "
                           "beside it; NAME.charwise here for a bundled model)")),
            description="Write a run's best weights as one safetensors file whose header holds "
                        "run.json and a model card (the text it learned, how long it trained, its "
                        "held-out loss). sample, eval, serve, export, info, analyze and train "
                        "--init-from take the file wherever they take a run directory. Nothing "
                        "in it is code.",
            epilog="examples:\n  charwise pack runs/shk -o shk.charwise\n"
                   "  charwise sample shk.charwise --prime ROMEO: -n 200\n"
                   "  charwise train more.txt --init-from shk.charwise --out runs/more"),
)

BY_NAME = {c.name: c for c in COMMANDS}

# The public API, charwise.<name>: each function's name -> "module:name" where it is defined.
# The commands' functions, then the two that are no command: load (a model to use from Python)
# and open_run (a run in a notebook). charwise.api imports them all (for type checkers and
# `from charwise.api import ...`); charwise/__init__ imports each from here when first used.
API: dict[str, str] = {
    **{c.api: c.function for c in COMMANDS if c.api is not None and c.function is not None},
    "load": "charwise.generation.charmodel:load", "open_run": "charwise.notebook:open_run"}
