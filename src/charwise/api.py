"""The Python API: the same functions the CLI calls, with the same options and checks.

    import charwise
    result = charwise.train("input.txt", out="runs/x", preset="small", max_time=120)
    text = charwise.sample("runs/x", prime="ROMEO:", n=200, temperature=0.8, seed=0)
    charwise.evaluate("runs/x", "held_out.txt")              # {'loss': ..., 'bits_per_char': ...}
    charwise.analyze("runs/x", out="runs/x/analysis")        # report.html and the numbers
    charwise.export("runs/x", "web", quantize="int8")        # one HTML page
    charwise.pack("runs/x", "x.charwise")                     # one file to share; load() takes it
    model = charwise.load("runs/x")                          # generate / stream / evaluate

Each command's options are a dataclass in settings/options.py (SampleOptions, EvalOptions, ...):
pass one as `options`, or its fields as keyword arguments. A bad value raises the CharwiseError
that the CLI prints for the same flag. Which function each command calls, and so what is
exported as charwise.<name>, is declared once in commands.py (COMMANDS, API); this module
imports them all, for `from charwise.api import ...` and type checkers.
"""
from __future__ import annotations

import dataclasses
import inspect as pyinspect
import io
import math
import os
import stat
import sys
import time
from typing import Any, Callable, TextIO, TypedDict

from .data.corpus import read_text
from .data.prepare import prepare  # noqa: F401  (re-exported: charwise.prepare)
from .errors import CharwiseError
from .exporting.command import export  # noqa: F401  (re-exported: charwise.export)
from .generation.charmodel import load
from .generation.command import sample_command
from .generation.params import SamplingParams
from .inspect import analysis as A
from .inspect.neurons import heatmap
from .inspect.plots import heatmap_chart, per_char_chart, plot, training_curve  # noqa: F401
from .inspect.report import analyze  # noqa: F401  (re-exported: charwise.analyze)
from .packing import pack  # noqa: F401  (re-exported: charwise.pack)
from .runs.rundir import CURVE, check_run_start
from .runs.runinfo import describe as info  # noqa: F401  (re-exported: charwise.info)
from .scoring import pick_device  # noqa: F401  (re-exported)
from .server import serve  # noqa: F401  (re-exported: charwise.serve)
from .settings.commands import EvalOptions, Options, SampleOptions
from .threads import check_threads
from .training import train

if sys.version_info >= (3, 11):
    from typing import Unpack
else:                                   # typing_extensions comes with torch
    from typing_extensions import Unpack


class _Tee(io.StringIO):
    """Keeps what is written, and passes it on to `out` as it comes (streamed sampling)."""

    def __init__(self, out: TextIO | None):
        super().__init__()
        self.out = out

    def write(self, s: str) -> int:
        if self.out is not None:
            self.out.write(s)
        return super().write(s)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()


class SampleKeywords(TypedDict, total=False):
    """SampleOptions's fields as the keyword arguments of `sample`, for type checkers (a
    TypedDict cannot be made from the dataclass where mypy sees it). Names and types only: the
    defaults are the dataclass's; tests/test_api.py checks that the two agree."""
    prime: str
    n: int
    temperature: float | None
    top_k: int | None
    top_p: float | None
    seed: int | None
    num_samples: int
    oov: str
    which: str
    threads: int | None
    stop: tuple[str, ...] | None
    keep_stop: bool
    beam: int | None
    new_only: bool
    precision: str
    device: str


def options_signature(func: Callable, cls: type[Options]) -> pyinspect.Signature:
    """`func`'s signature with its **kw replaced by `cls`'s fields as keyword-only parameters,
    with their declared types and defaults: what inspect.signature and help() show."""
    sig = pyinspect.signature(func)
    kept = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    return sig.replace(parameters=kept + [
        pyinspect.Parameter(f.name, pyinspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in dataclasses.fields(cls)])  # type: ignore[arg-type]


def sample(run_dir, options: SampleOptions | None = None, *, out: TextIO | None = None,
           err: TextIO | None = None, **kw: Unpack[SampleKeywords]) -> str:
    """What `charwise sample` prints, as text; also written to `out` as it is generated when
    given. Options: SampleOptions (prime, n, temperature, top_k, top_p, seed, num_samples, stop,
    beam, ...), or its fields as keyword arguments. Notes (a prime fitted to the vocabulary,
    ...) go to `err` (default: stderr)."""
    o = SampleOptions.make(options, **kw)
    params = SamplingParams.from_options(o)
    threads = check_threads(o.threads)
    model = load(run_dir, which=o.which, device=o.device)
    prime, note = model.fit_prime(o.prime, o.oov)
    model.vocab.encode(prime, oov=o.oov)                 # a bad prime fails before anything is printed
    err = sys.stderr if err is None else err
    if note:
        print(f"note: {note}", file=err)
    text = _Tee(out)
    sample_command(model, params, text, err, prime=prime, oov=o.oov, threads=threads,
                   precision=o.precision)
    return text.getvalue()


# what inspect.signature and help() show: SampleOptions's fields, typed, with their defaults
sample.__signature__ = options_signature(sample, SampleOptions)  # type: ignore[attr-defined]


def evaluate(run_dir, textfile, options: EvalOptions | None = None, **kw: Any) -> dict:
    """Exact loss of a run's best weights on a text file: nats/char, bits/char, perplexity.
    Options: EvalOptions (oov, encoding, precision, threads, device). precision "auto" scores in
    the precision the run trained in where this device runs it natively; "fp32" for the last
    digit."""
    o = EvalOptions.make(options, **kw)
    model = load(run_dir, device=o.device)
    text = read_text(textfile, o.encoding)
    res = model.evaluate(text, oov=o.oov, precision=o.precision, threads=check_threads(o.threads))
    if res["chars"] < 1:
        raise CharwiseError(f"{textfile}: too short to evaluate")
    return res


DEMO_PICTURES = (CURVE, "per_char.png", "heatmap.png")      # what demo draws into its run


def demo(out="runs/demo", log=print, force: bool = False) -> dict:
    """The chapter's pipeline on the bundled corpus: train the spec model, print its parameter
    count and samples primed with "Mr Bennet" at temperatures 0.5, 1.0 and 1.5, and save the
    training curve, the per-character loss chart (Stage 3, one stateful pass) and a heatmap of
    the hidden state over "Mr Bennet replied that he had not." (extension 3). Returns the
    paths and numbers. A run already in `out` is replaced only with `force`."""
    t0 = time.perf_counter()
    out = check_run_start(out, force=force, hint="use --force to replace it")
    for name in DEMO_PICTURES:                  # before training: --force replaces files only
        p = out / name
        if os.path.lexists(p) and not stat.S_ISREG(os.lstat(p).st_mode):
            raise CharwiseError(f"{p}: is not a regular file (a directory, a symbolic link, a "
                                "FIFO); refusing to replace it (--force or not)")
    result = train(None, out=out, preset="spec", force=force, quiet=True)
    model = load(out)
    cfg = model.net.cfg
    emb = model.net.embed.weight.numel()
    head = sum(p.numel() for p in model.net.head.parameters())
    rnn = model.net.num_parameters - emb - head
    log(f"Parameters: embed={emb}, {cfg.cell.upper()}={rnn}, out={head}, total={emb + rnn + head:,}")
    whole = result.history[-1]["val_loss"]
    log(f"Final training loss {result.final_train_loss:.4f} nats/char (last window); "
        f"{whole:.4f} over the whole text in one pass; uniform guessing: "
        f"ln {len(model.vocab)} = {math.log(len(model.vocab)):.2f}\n")
    log("Generated text at different temperatures:\n")
    samples = {}
    for temp in (0.5, 1.0, 1.5):
        samples[temp] = model.generate("Mr Bennet", 120, temperature=temp, seed=1)
        log(f"Temperature {temp}:\n  {samples[temp]!r}\n")
    curve = training_curve(out, out / CURVE)
    log(f"training curve: {curve}")
    text = A.analysis_text(out, model.info, model.vocab)        # the spec has no validation split
    table = A.char_table(model.vocab, text.ids, *A.position_losses(model.net, text.ids))
    per_char = per_char_chart(table, out / DEMO_PICTURES[1],
                              title="Per-character average loss (hardest to predict), whole text")
    hard, min_count, _ = table.hardest(5)
    log(f"Hardest characters (mean loss, nats; among those seen >= {min_count} times): " + ", ".join(
        f"{A.visible(c)} {m:.3f}" for c, m in zip(hard.chars, hard.mean_nats)))
    log(f"per-character loss: {per_char}")
    heat = heatmap_chart(heatmap(model.net, model.vocab, A.SPEC_SENTENCE), out / DEMO_PICTURES[2])
    log(f"hidden-state heatmap of {A.SPEC_SENTENCE!r}: {heat}")
    log(f"demo took {time.perf_counter() - t0:.1f}s")
    return {"run_dir": out, "result": result, "samples": samples, "curve": curve,
            "per_char": per_char, "heatmap": heat, "per_char_table": table}
