"""Command line: thin subcommands over the same functions the Python API exposes.

Every setting flag of `train` is generated from the dataclass fields in config.py, so the help
text is the field's documentation and there is one declaration to keep true.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from . import __version__
from .config import PRESETS, CharwiseError, ModelConfig, TrainConfig, config_fields, preset_values
from .threads import check_threads

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


PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_HELP = ("arithmetic of the scoring pass: auto (default) = what training picks on this "
                  "hardware (bf16 on CPUs with fast bf16, from 256 units; 1.5-1.7x faster, the "
                  "loss moves in the 4th decimal), fp32, or bf16")


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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    for cls, title in ((ModelConfig, "model"), (TrainConfig, "training")):
        group = parser.add_argument_group(f"{title} settings (override the preset)")
        for f in config_fields(cls):
            kind = str(f.type).split("|")[0].strip()
            kw = {"type": _number(int) if kind == "int" else _number(float) if kind == "float" else str}
            if kind == "bool":          # --tensorboard / --no-tensorboard (the latter beats a file)
                kw = {"action": argparse.BooleanOptionalAction}
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
            default = f.default if f.default is not None else "none"
            values = preset_values(f.name)
            note = f"; presets: {values}" if values else ""
            group.add_argument("--" + f.name.replace("_", "-"), default=None, dest=f.name,
                               help=f"{f.metadata['help']} (default: {default}{note})", **kw)


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
                _serve_parser):
        add(sub)
    return p


# Flags several subcommands share, declared once.
def _which(p: argparse.ArgumentParser) -> None:
    p.add_argument("--which", choices=("best", "last"), default="best", help="which weights (default: best)")


def _oov(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--oov", choices=("error", "skip"), default="error", help=help)


def _force_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out file (never a run's own file or a non-regular file)")


def _encoding(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--encoding", default="utf-8", help=help)


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_number(int), default=None,
                   help="CPU threads (default: measured as it runs: one, or all this process may "
                        "use, whichever is faster; a count above the CPUs available is capped)")


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on a text file",
                       description="Train a character model. Without CORPUS, the bundled corpus "
                                   "(the chapter's opening of Pride and Prejudice) is used.",
                       epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", help="UTF-8 text file, or a directory made by charwise "
                   "prepare (default: the bundled corpus)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="read settings from a TOML file whose keys are these flags (hidden-size = "
                        "256, corpus = \"in.txt\", ...); flags given here override it. Every run "
                        "saves RUN_DIR/config.toml, which trains the same run again")
    p.add_argument("--out", default=None, help="run directory (default: runs/latest)")
    p.add_argument("--preset", choices=["auto", *PRESETS, "none"], default=None,
                   help="model size and training recipe; auto = spec for texts under 100 kB, small "
                        "above, finetune with --init-from; none = only the built-in defaults "
                        "(default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped (not --init-from)")
    p.add_argument("--init-from", metavar="SOURCE", default=None,
                   help="start a NEW run from SOURCE's weights: a run directory, or base (the "
                        "model bundled with charwise). The model's shape comes from SOURCE, the "
                        "vocabulary is SOURCE's merged with the corpus's; preset auto means "
                        "finetune. Not --resume, which continues the run in --out")
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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
    p.add_argument("--separator", default="\n\n",
                    help="text between documents; \\n \\t \\r \\\\ escapes are understood "
                         "(default: \\n\\n, a blank line)")
    _encoding(p, "text encoding of the inputs (default: utf-8)")
    p.add_argument("--force", action="store_true", help="replace a prepared corpus in --out")


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("run_dir")
    p.add_argument("--prime", default="", help="text to start from (default: none)")
    p.add_argument("-n", type=_number(int), default=500,
                   help="characters to generate; items for a --line-mode run (default: 500)")
    p.add_argument("--temperature", type=_number(float), default=None,
                   help="softmax temperature; 0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=_number(int), default=None, help="sample from the k likeliest only")
    p.add_argument("--top-p", type=_number(float), default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=_number(int), default=None, help="random seed (repeatable output)")
    p.add_argument("--num-samples", type=_number(int), default=1, help="independent samples (default: 1)")
    _oov(p, "prime characters outside the vocabulary: error (default) or skip them")
    _which(p)
    _threads(p)
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help='end each sample at the first occurrence of TEXT (repeatable; escapes such as '
                        '"\\n\\n" understood); the stop string itself is not printed')
    p.add_argument("--keep-stop", action="store_true", help="print the stop string that ended a sample")
    p.add_argument("--beam", type=_number(int), default=None, metavar="K",
                   help="beam search: the K (1-64) most likely continuations of -n symbols with "
                        "their log-probabilities, instead of sampling")
    p.add_argument("--new-only", action="store_true",
                   help="line mode: drop items that are lines of the training text (and say how many were new)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32 (default): exact, a seed repeats the text on any path; int8: LSTMs on "
                        "an x86 CPU, int8 recurrent weights, faster, greedy text and sample loss "
                        "close to fp32's but not identical")


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="exact loss of a run on a text file")
    p.add_argument("run_dir")
    p.add_argument("textfile")
    p.add_argument("--json", action="store_true", help="print JSON")
    _oov(p)
    _encoding(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    _threads(p)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the chapter's pipeline end to end on the bundled corpus")
    p.add_argument("--out", default="runs/demo", help="where to write the run and pictures")


def _gradcheck_parser(sub) -> None:
    p = sub.add_parser("gradcheck", help="check the NumPy engine's analytic gradients numerically",
                       description="Central differences (eps 1e-5, float64) against the NumPy "
                                   "engine's hand-written backward pass, for every parameter array "
                                   "and the initial state. Exit 0 when all relative errors < 1e-6.")
    p.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm")
    p.add_argument("--layers", type=_number(int), default=1)
    p.add_argument("--vocab", type=_number(int), default=7, help="vocabulary size V (default 7)")
    p.add_argument("--embed", type=_number(int), default=5, help="embedding size E (default 5)")
    p.add_argument("--hidden", type=_number(int), default=6, help="hidden size H (default 6)")
    p.add_argument("--batch", type=_number(int), default=2, help="streams B (default 2)")
    p.add_argument("--seq", type=_number(int), default=4, help="window T (default 4)")
    p.add_argument("--max-entries", type=_number(int), default=None,
                   help="check a random sample of this many entries per array (default: all)")
    p.add_argument("--seed", type=_number(int), default=0)


def _plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="training-curve PNG of a run (works while it trains)")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curve.png)")
    p.add_argument("--window", type=_number(int), default=10,
                    help="moving-average window in steps (default: 10, as in the chapter)")
    _force_out(p)


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
    p.add_argument("run_dir")
    p.add_argument("textfile", nargs="?", help="text to score (default: the run's validation split)")
    p.add_argument("--out", default=None,
                   help="output directory (default: RUN_DIR/analysis; NAME-analysis here for a "
                        "bundled model)")
    _oov(p, "characters outside the vocabulary: error (default) or skip them (counted)")
    _encoding(p)
    p.add_argument("--text", default=None,
                    help="sentence for the hidden-state heatmap (default: the chapter's "
                         "\"Mr Bennet replied that he had not.\" if the vocabulary allows)")
    p.add_argument("--state", choices=("h", "c"), default="h",
                    help="hidden state h or LSTM cell state c (heatmap and neuron view; default: h)")
    p.add_argument("--layer", type=_number(int), default=-1, help="layer, 0 = first (default: -1, the top)")
    p.add_argument("--sort", choices=("cluster", "variance", "none"), default="cluster",
                    help="heatmap row order (default: cluster, similar units together)")
    p.add_argument("--max-units", type=_number(int), default=128,
                    help="heatmap rows: the most variable units beyond this are left out (default: 128)")
    p.add_argument("--unit", type=_number(int), default=None, help="also colour the neuron view by this unit")
    p.add_argument("--neuron-chars", type=_number(int), default=1000,
                    help="characters of text in the neuron view (default: 1000)")
    p.add_argument("--temperatures", type=_number(float), nargs="+", default=[0.5, 1.0, 1.5],
                    help="sampling temperatures (default: 0.5 1.0 1.5)")
    p.add_argument("--prime", default=None, help="prime for the samples (default: \"Mr Bennet\" if possible)")
    p.add_argument("-n", type=_number(int), default=200, help="characters per sample (default: 200)")
    p.add_argument("--seed", type=_number(int), default=1, help="sampling seed (default: 1)")
    _which(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    _threads(p)


def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="what a run is: config, parameters, vocabulary, best loss, time",
                       epilog="example:\n  charwise info runs/shk\n  charwise info runs/shk --json | jq .best_val_loss",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print JSON")


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run's inference step (ONNX) to run outside Python",
                       description="Write the model's one-character step as an ONNX graph: inputs x "
                                   "(batch,) int64 ids, h [and c for an LSTM] (layers, batch, hidden); "
                                   "outputs logits (batch, vocab), h_out [, c_out]. The vocabulary is in "
                                   "the file's metadata (charwise.vocab). Needs pip install charwise[onnx].",
                       epilog="examples:\n  charwise export runs/shk --format onnx --out shk.onnx\n"
                              "  charwise export runs/shk --format web --quantize int8 --out shk.html",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--format", choices=("onnx", "web"), default="onnx",
                   help="onnx, or web: one self-contained HTML page that runs the model in any "
                        "browser, offline (default: onnx)")
    p.add_argument("--out", default=None,
                   help="output file (default: RUN_DIR/model.onnx or model.html; for a bundled "
                        "model NAME.onnx or NAME.html here)")
    _which(p)
    # --format web / --quantize (webexport.py, onnxquant.py)
    p.add_argument("--quantize", choices=("none", "fp16", "int8"), default="none",
                   help="weights as float16 or int8 with per-row scales (default: none = float32); "
                        "the loss change is checked on the validation split (or --text)")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="check a quantized export's loss on this text (default: the run's validation split)")
    p.add_argument("--max-loss-increase", type=_number(float), default=None, metavar="NATS",
                   help="refuse a quantized export whose loss rises more than this, in nats/char "
                        "(default: 0.01)")
    _force_out(p)


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="local playground web page: type a prime, watch text stream in",
                       description="Serve a page where you type a prime, set temperature and top-p, "
                                   "watch the text stream in character by character and hover any "
                                   "character to see the model's top-5 alternatives. Needs pip install "
                                   "charwise[serve].",
                       epilog="example:\n  charwise serve runs/shk            # then open http://127.0.0.1:8000/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_number(int), default=8000, help="TCP port (default: 8000)")
    _which(p)
    p.add_argument("--max-chars", type=_number(int), default=2000,
                   help="most characters one request may generate (default: 2000)")
    p.add_argument("--max-concurrent", type=_number(int), default=4,
                   help="generations running at once; more get HTTP 429 (default: 4)")
    _threads(p)


def cmd_train(a) -> int:
    from .configfile import merge_cli
    from .rundir import check_run_dir
    from .runlock import lock_run
    kw = merge_cli(a)                       # --config file, then the flags given here
    if kw.get("tensorboard"):
        from .training.tblog import require_tensorboard
        require_tensorboard()               # before anything is written
    out = kw.get("out") or "runs/latest"
    if a.resume:
        check_run_dir(out)                  # a missing run is reported, not created
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
    from .prepare import prepare, summary_line, unescape, verify
    if a.verify is not None:
        if a.corpus or a.out:
            raise CharwiseError("prepare --verify DIR takes no inputs and no --out")
        res = verify(a.verify)
        notes = "".join(f"; source {k.split('_')[1]}: {', '.join(res[k][:3])}"
                        for k in ("sources_changed", "sources_missing") if res[k])
        print(f"{res['path']}: {res['tokens']:,} tokens, sha256 matches prepared.json{notes}")
        return 0
    if not a.corpus or not a.out:
        raise CharwiseError("prepare needs input files or directories and --out DIR "
                            "(or --verify DIR)")
    res = prepare(a.corpus, a.out, separator=unescape(a.separator), encoding=a.encoding, force=a.force)
    print(summary_line(res))
    return 0


def cmd_sample(a) -> int:
    from .api import load
    from .sample import check_sampling_args
    from .samplecmd import sample_command
    check_sampling_args(a.n, 1.0 if a.temperature is None else a.temperature, a.top_k, a.top_p,
                        a.num_samples, a.seed)
    threads = check_threads(a.threads)
    model = load(a.run_dir, which=a.which)
    prime, note = model.fit_prime(a.prime, a.oov)
    model.vocab.encode(prime, oov=a.oov)                 # a bad prime fails before anything is printed
    if note:
        print(f"note: {note}", file=sys.stderr)
    return sample_command(model, sys.stdout, sys.stderr, prime=prime, n=a.n,
                          temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, seed=a.seed,
                          num_samples=a.num_samples, oov=a.oov, stop=a.stop, keep_stop=a.keep_stop,
                          beam=a.beam, new_only=a.new_only, threads=threads, precision=a.precision)


def cmd_eval(a) -> int:
    from .api import evaluate
    res = evaluate(a.run_dir, a.textfile, oov=a.oov, encoding=a.encoding, precision=a.precision,
                   threads=check_threads(a.threads))
    if a.json:
        print(json.dumps(res))
    else:
        from .samplecmd import eval_summary
        print(eval_summary(res))
    return 0


def cmd_demo(a) -> int:
    from .api import demo
    demo(a.out)
    return 0


def cmd_plot(a) -> int:
    from .guards import check_out_path
    from .inspect.plots import training_curve
    from .rundir import CURVE, check_run_dir
    run = check_run_dir(a.run_dir)
    if a.window < 1:
        raise CharwiseError(f"--window must be >= 1, got {a.window}")
    # an --out given is never an existing file without --force, a run's own file or a
    # non-regular file; the default RUN_DIR/curve.png is this command's own, replaced
    out = check_out_path(a.out, a.force, protect=run) if a.out else check_out_path(run / CURVE, True)
    path = training_curve(run, out, window=a.window)
    print(path)
    return 0


def cmd_gradcheck(a) -> int:
    from .reference import format_table, passed, run_gradcheck
    for name in ("layers", "vocab", "embed", "hidden", "batch", "seq"):
        if getattr(a, name) < 1:
            raise CharwiseError(f"--{name} must be >= 1")
    if a.max_entries is not None and a.max_entries < 1:
        raise CharwiseError("--max-entries must be >= 1")
    rows = run_gradcheck(cell=a.cell, layers=a.layers, V=a.vocab, E=a.embed, H=a.hidden,
                         B=a.batch, T=a.seq, seed=a.seed, max_entries=a.max_entries)
    print(format_table(rows))
    return 0 if passed(rows) else 1


def cmd_info(a) -> int:
    from .info import describe, format_info
    d = describe(a.run_dir)
    print(json.dumps(d, ensure_ascii=False) if a.json else format_info(d))
    return 0


def cmd_export(a) -> int:
    from .export import export, summary_line
    print(summary_line(export(a.run_dir, a.format, a.out, a.which, a.quantize, a.force, a.text,
                              a.max_loss_increase)))
    return 0


def cmd_serve(a) -> int:
    from .serve import Limits, serve
    if not 0 <= a.port <= 65535:
        raise CharwiseError(f"--port must be in 0..65535, got {a.port}")
    if a.max_chars < 1 or a.max_concurrent < 1:
        raise CharwiseError("--max-chars and --max-concurrent must be >= 1")
    serve(a.run_dir, a.host, a.port, a.which, Limits(max_chars=a.max_chars, max_concurrent=a.max_concurrent),
          threads=check_threads(a.threads))
    return 0


def cmd_analyze(a) -> int:
    from .inspect.report import analyze
    for name, flag in (("max_units", "--max-units"), ("neuron_chars", "--neuron-chars"), ("n", "-n")):
        if getattr(a, name) < 1:
            raise CharwiseError(f"{flag} must be >= 1, got {getattr(a, name)}")
    if any(t < 0 for t in a.temperatures):
        raise CharwiseError("--temperatures must be >= 0")
    res = analyze(a.run_dir, a.textfile, a.out, oov=a.oov, text=a.text, state=a.state,
                  layer=a.layer, sort=a.sort, unit=a.unit, temperatures=a.temperatures,
                  prime=a.prime, n=a.n, seed=a.seed, which=a.which, encoding=a.encoding,
                  max_units=a.max_units, neuron_chars=a.neuron_chars, precision=a.precision,
                  threads=check_threads(a.threads))
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
            "demo": cmd_demo, "plot": cmd_plot, "analyze": cmd_analyze}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                 # --help, --version, usage errors: argparse's codes
        return e.code if isinstance(e.code, int) else 2
    try:
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
