"""Command line: thin subcommands over the same functions the Python API exposes.

Every flag is generated from a dataclass field -- train's settings from config.py, every other
subcommand's options from options.py -- so its name, default, help text and choices have one
declaration. Each cmd_* builds the options object from the parsed flags and calls the API
function, which checks it: `charwise sample RUN -n -1` and `charwise.sample(RUN, n=-1)` fail
with the same message.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings
from typing import Any

from ._version import __version__
from .errors import CharwiseError, CharwiseWarning
from .settings.options import (
    AnalyzeOptions,
    EvalOptions,
    ExportOptions,
    GradcheckOptions,
    Options,
    PackOptions,
    PlotOptions,
    PrepareOptions,
    SampleOptions,
    ServeOptions,
    flag_name,
    kind,
)
from .settings.train import ModelConfig, TrainConfig, TrainRun, config_fields, preset_values

EXAMPLES = """examples:
  charwise demo                                   # the chapter's whole pipeline in < 1 minute
  charwise train --out runs/pp                    # bundled corpus, spec model
  charwise train input.txt --preset small --max-time 180 --out runs/shk
  charwise prepare books/ --out data/books        # huge or many files: encode once, then
  charwise train data/books --preset small        #   training memory-maps the tokens
  charwise sample runs/shk --prime "ROMEO:" -n 300 --temperature 0.8
  charwise eval runs/shk held_out.txt
  charwise analyze runs/shk --out runs/shk/analysis   # per-char loss, heatmap, neurons, report.html
  charwise train --config configs/shakespeare.toml --max-time 60   # a TOML file, flags override
  charwise info runs/shk                          # config, parameters, vocabulary, best loss
  charwise export runs/shk --format onnx          # runs/shk/model.onnx for onnxruntime
  charwise export runs/shk --format web --quantize int8   # one HTML page, runs in any browser
  charwise serve runs/shk                         # playground page on http://127.0.0.1:8000/
  charwise pack runs/shk -o shk.charwise          # one file to share; sample/eval/serve take it
"""

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



def _number(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value
    return parse


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def option_help(f: dataclasses.Field, note: str = "", switch_default: bool = False) -> str:
    """A field's documentation with its default (a switch's only when asked: it is off)."""
    text = f.metadata["help"]
    if switch_default or kind(f).base is not bool:
        text += f" (default: {f.metadata.get('shown', _shown(f.default))}{note})"
    return text.replace("%", "%%")          # argparse formats help with %


def _argument(f: dataclasses.Field, note: str = "", unset: bool = False,
              checked: bool = False) -> dict[str, Any]:
    """add_argument's keywords for a field. unset: the default is None ("not given"), and a
    switch has a --no- form, so that a config file's value stands unless a flag overrides it.
    checked: the options object checks the choices (argparse only shows them), so a bad choice
    gets the dataclass's message, as from the API."""
    m, k = f.metadata, kind(f)
    kw: dict[str, Any] = {"default": None if unset else f.default,
                          "help": option_help(f, note, switch_default=unset)}
    if "positional" not in m:
        kw["dest"] = f.name
    if k.base is bool:
        kw["action"] = argparse.BooleanOptionalAction if unset else "store_true"
        return kw
    kw["type"] = _number(int) if k.base is int else _number(float) if k.base is float else str
    kw.update({key: m[key] for key in ("choices", "metavar") if key in m})
    if checked and "choices" in m:
        kw["metavar"] = "{" + ",".join(kw.pop("choices")) + "}"
    if m.get("append"):
        kw["action"] = "append"
    elif k.many:
        kw["nargs"] = "+"
    if "positional" in m:
        kw["nargs"] = m["positional"]
    return kw


def add_option_flags(parser, cls) -> None:
    """One flag (or positional argument) per field of the dataclass `cls`."""
    for f in dataclasses.fields(cls):
        name = f.name if "positional" in f.metadata else flag_name(f)
        parser.add_argument(name, **_argument(f, checked=issubclass(cls, Options)))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    for cls, title in ((ModelConfig, "model"), (TrainConfig, "training")):
        group = parser.add_argument_group(f"{title} settings (override the preset)")
        for f in config_fields(cls):
            values = preset_values(f.name)
            group.add_argument(flag_name(f), **_argument(f, f"; presets: {values}" if values else "",
                                                          unset=True))


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (plus exit 2), like every other charwise error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="charwise", description="Train character-level language models, "
                      "sample from them, and see what they learned.", epilog=EXAMPLES,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"charwise {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_train_parser, _prepare_parser, _sample_parser, _eval_parser, _demo_parser,
                _gradcheck_parser, _plot_parser, _analyze_parser, _info_parser, _export_parser,
                _serve_parser, _pack_parser):
        add(sub)
    return p


# Arguments that are paths or output formats, not options of the function a command calls.
RUN_DIR_HELP = ("a run directory, a model packed by charwise pack (FILE.charwise), or base (the "
                "model bundled with charwise)")


def _run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help=RUN_DIR_HELP)


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on a text file",
                       description="Train a character model. Without CORPUS, the bundled corpus "
                                   "(the chapter's opening of Pride and Prejudice) is used.",
                       epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_option_flags(p, TrainRun)
    add_config_flags(p)


def _prepare_parser(sub) -> None:
    p = sub.add_parser(
        "prepare", help="encode huge or many text files once into a corpus that train memory-maps",
        description="Join text files and directories (every regular file inside, recursively, "
                    "sorted by path; hidden ones skipped) into one corpus, separated by --separator, "
                    "and encode it in chunks into OUT/tokens.bin + OUT/prepared.json. Memory stays "
                    "flat however large the input; `charwise train OUT` then starts in seconds.",
        epilog="examples:\n  charwise prepare books/ --out data/books\n  charwise prepare a.txt "
               "b.txt --out data/ab --separator '\\n'\n  charwise train data/books --preset small",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="*", help="text files and/or directories")
    p.add_argument("--out", default=None, help="directory for tokens.bin and prepared.json")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="check a prepared corpus instead: re-hash DIR/tokens.bin against the "
                        "sha256 recorded in DIR/prepared.json (and the sources still present)")
    add_option_flags(p, PrepareOptions)


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained run")
    _run_dir(p)
    add_option_flags(p, SampleOptions)


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="exact loss of a run on a text file")
    _run_dir(p)
    p.add_argument("textfile", help="the text to score")
    _json(p)
    add_option_flags(p, EvalOptions)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the chapter's pipeline end to end on the bundled corpus")
    p.add_argument("--out", default="runs/demo", help="where to write the run and pictures (default: runs/demo)")
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")


def _gradcheck_parser(sub) -> None:
    p = sub.add_parser("gradcheck", help="check the NumPy engine's analytic gradients numerically",
                       description="Central differences (eps 1e-5, float64) against the NumPy "
                                   "engine's hand-written backward pass, for every parameter array "
                                   "and the initial state. Exit 0 when all relative errors < 1e-6.")
    add_option_flags(p, GradcheckOptions)


def _plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="training-curve PNG of a run (works while it trains)")
    _run_dir(p)
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curve.png)")
    add_option_flags(p, PlotOptions)


def _analyze_parser(sub) -> None:
    p = sub.add_parser(
        "analyze", help="what a run learned: per-character loss, hidden states, neurons, samples, "
                        "novelty; PNGs and a self-contained report.html",
        description="Score TEXTFILE (default: the run's validation split, or its training text when\n"
                    "it has none, as with the spec preset) in one stateful pass and write OUT/:\n"
                    "per_char.csv/.png, curve.png, heatmap.png, neurons.html, report.html, analysis.json.",
        epilog="examples:\n  charwise analyze runs/shk\n  charwise analyze runs/shk held_out.txt "
               "--out an --oov skip\n  charwise analyze runs/pp --text \"Mr Bennet replied that he "
               "had not.\" --state c",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_dir(p)
    p.add_argument("textfile", nargs="?", help="text to score (default: the run's validation split)")
    p.add_argument("--out", default=None,
                   help="output directory (default: RUN_DIR/analysis; NAME-analysis here for a "
                        "bundled model)")
    add_option_flags(p, AnalyzeOptions)


def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="what a run is: config, parameters, vocabulary, best loss, time",
                       epilog="example:\n  charwise info runs/shk\n  charwise info runs/shk --json | jq .best_val_loss",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_dir(p)
    _json(p)


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run's inference step (ONNX) to run outside Python",
                       description="Write the model's one-character step as an ONNX graph: inputs x "
                                   "(batch,) int64 ids, h [and c for an LSTM] (layers, batch, hidden); "
                                   "outputs logits (batch, vocab), h_out [, c_out]. The vocabulary is in "
                                   "the file's metadata (charwise.vocab). Needs pip install charwise[onnx].",
                       epilog="examples:\n  charwise export runs/shk --format onnx --out shk.onnx\n"
                              "  charwise export runs/shk --format web --quantize int8 --out shk.html",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_dir(p)
    p.add_argument("--out", default=None,
                   help="output file (default: RUN_DIR/model.onnx or model.html; for a bundled "
                        "model NAME.onnx or NAME.html here)")
    add_option_flags(p, ExportOptions)


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="local playground web page: type a prime, watch text stream in",
                       description="Serve a page where you type a prime, set temperature and top-p, "
                                   "watch the text stream in character by character and hover any "
                                   "character to see the model's top-5 alternatives. Needs pip install "
                                   "charwise[serve].",
                       epilog="example:\n  charwise serve runs/shk            # then open http://127.0.0.1:8000/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_dir(p)
    add_option_flags(p, ServeOptions)


def _pack_parser(sub) -> None:
    p = sub.add_parser("pack", help="a run as one file to share (weights, run.json and a model card)",
                       description="Write a run's best weights as one safetensors file whose header "
                                   "holds run.json and a model card (the text it learned, how long it "
                                   "trained, its held-out loss). sample, eval, serve, export, info, "
                                   "analyze and train --init-from take the file wherever they take a "
                                   "run directory. Nothing in it is code.",
                       epilog="examples:\n  charwise pack runs/shk -o shk.charwise\n"
                              "  charwise sample shk.charwise --prime ROMEO: -n 200\n"
                              "  charwise train more.txt --init-from shk.charwise --out runs/more",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory, or base (the model bundled with charwise)")
    p.add_argument("-o", "--out", default=None,
                   help="the file to write (default: the run directory's name + .charwise, beside "
                        "it; NAME.charwise here for a bundled model)")
    add_option_flags(p, PackOptions)


def cmd_train(a) -> int:
    from .runs.rundir import check_run_dir, check_run_start
    from .runs.runlock import lock_run
    from .settings.toml import merge_cli
    kw = merge_cli(a)                       # --config file, then the flags given here
    if kw.get("tensorboard"):
        from .training.tblog import require_tensorboard
        require_tensorboard()               # before anything is written
    out = kw.get("out") or "runs/latest"
    if a.resume:
        check_run_dir(out)                  # a missing run is reported, not created
    check_run_start(out, a.resume, kw["force"], kw.get("corpus"), kw.get("init_from"))
    # the run directory's lock first, before torch is imported: a second writer learns at once
    lock = lock_run(out) if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        from .training import train
        res = train(resume=a.resume, **kw)
    finally:
        if lock is not None:
            lock.release()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0                                 # under torchrun, rank 0 reports
    best = f"{res.best_val_loss:.4f} nats/char at step {res.best_step}" if res.best_val_loss is not None else "n/a"
    print(f"done: {res.steps} steps in {res.train_seconds:.1f}s ({res.stopped_because}); "
          f"final train loss {res.final_train_loss:.4f}; best eval loss {best}; run in {res.run_dir}")
    return 0


def cmd_prepare(a) -> int:
    from .data.prepare import prepare, summary_line, unescape, verify
    if a.verify is not None:
        if a.corpus or a.out:
            raise CharwiseError("prepare --verify DIR takes no inputs and no --out")
        res = verify(a.verify)
        notes = "".join(f"; source {k.split('_')[1]}: {', '.join(res[k][:3])}"
                        for k in ("sources_changed", "sources_missing") if res[k])
        print(f"{res['path']}: {res['tokens']:,} tokens, sha256 matches prepared.json{notes}")
        return 0
    options = PrepareOptions.from_args(a)
    # a separator typed in a shell spells a newline \n: the API takes the text itself
    res = prepare(a.corpus, a.out, dataclasses.replace(options, separator=unescape(options.separator)))
    print(summary_line(res))
    return 0


def cmd_sample(a) -> int:
    from .api import sample
    sample(a.run_dir, SampleOptions.from_args(a), out=sys.stdout, err=sys.stderr)
    return 0


def cmd_eval(a) -> int:
    from .api import evaluate
    from .generation.command import eval_summary
    res = evaluate(a.run_dir, a.textfile, EvalOptions.from_args(a))
    print(json.dumps(res) if a.json else eval_summary(res))
    return 0


def cmd_demo(a) -> int:
    from .api import demo
    demo(a.out, force=a.force)
    return 0


def cmd_plot(a) -> int:
    from .inspect.plots import plot
    print(plot(a.run_dir, a.out, PlotOptions.from_args(a)))
    return 0


def cmd_gradcheck(a) -> int:
    from .bounds import check_gradcheck
    from .reference import format_table, passed, run_gradcheck
    o = GradcheckOptions.from_args(a)
    # train's size checks (memory, in float64), and a bound on the time, before anything is built
    cfg = ModelConfig(cell=o.cell, embed_dim=o.embed, hidden_size=o.hidden, layers=o.layers,
                      vocab_size=o.vocab)
    check_gradcheck(cfg, o.batch, o.seq, o.max_entries)
    rows = run_gradcheck(cell=o.cell, layers=o.layers, V=o.vocab, E=o.embed, H=o.hidden,
                         B=o.batch, T=o.seq, seed=o.seed, max_entries=o.max_entries)
    print(format_table(rows))
    return 0 if passed(rows) else 1


def cmd_info(a) -> int:
    from .runs.runinfo import describe, format_info
    d = describe(a.run_dir)
    print(json.dumps(d, ensure_ascii=False) if a.json else format_info(d))
    return 0


def cmd_export(a) -> int:
    from .exporting.command import export, summary_line
    print(summary_line(export(a.run_dir, out=a.out, options=ExportOptions.from_args(a))))
    return 0


def cmd_pack(a) -> int:
    from .packing import pack, summary_line
    print(summary_line(pack(a.run_dir, a.out, PackOptions.from_args(a))))
    return 0


def cmd_serve(a) -> int:
    from .server import serve
    serve(a.run_dir, ServeOptions.from_args(a))
    return 0


def cmd_analyze(a) -> int:
    from .inspect.report import analyze
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


COMMANDS = {"prepare": cmd_prepare, "info": cmd_info, "export": cmd_export, "serve": cmd_serve,
            "gradcheck": cmd_gradcheck, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval,
            "demo": cmd_demo, "plot": cmd_plot, "analyze": cmd_analyze, "pack": cmd_pack}


def _one_line_warnings() -> None:
    """A CharwiseWarning (a font to install, say) as one line, like the errors:
    charwise: warning: ...; other warnings as Python shows them."""
    plain = warnings.formatwarning
    if getattr(plain, "charwise", False):
        return

    def fmt(message, category, filename, lineno, line=None):
        if issubclass(category, CharwiseWarning):
            return f"charwise: warning: {message}\n"
        return plain(message, category, filename, lineno, line)
    fmt.charwise = True                                 # type: ignore[attr-defined]
    warnings.formatwarning = fmt


# The arguments that are paths, as the user names them (export's --text is a file; analyze's a
# sentence).
PATH_ARGS = {"out": "--out", "run_dir": "RUN_DIR", "corpus": "CORPUS", "textfile": "TEXTFILE",
             "config": "--config", "init_from": "--init-from", "verify": "--verify"}


def check_paths(args: argparse.Namespace) -> None:
    """An empty path (`--out "$OUT"` with OUT unset) is refused: read as a path it is ".", the
    current directory, and an empty --out would be the default."""
    names = {**PATH_ARGS, **({"text": "--text"} if args.command == "export" else {})}
    for attr, name in names.items():
        v = getattr(args, attr, None)
        if v == "" or (isinstance(v, list) and "" in v):
            raise CharwiseError(f"{name}: an empty path (an unset shell variable?); give a path")


def main(argv: list[str] | None = None) -> int:
    _one_line_warnings()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                 # --help, --version, usage errors: argparse's codes
        return e.code if isinstance(e.code, int) else 2
    try:
        check_paths(args)
        return COMMANDS[args.command](args)
    except CharwiseError as e:
        print(f"charwise: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("charwise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()                  # `charwise sample ... | head`: not an error
        return 0
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"charwise: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
