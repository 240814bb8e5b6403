"""What `charwise sample` and `charwise eval` print, apart from parsing their flags: plain
sampling (streamed), several samples, stop strings, beam search, line-mode items with
--new-only, and the evaluation summary (per item for line mode, per byte for a byte model)."""
from __future__ import annotations

from typing import TextIO

from ..errors import CharwiseError
from ..settings.options import LN2
from .charmodel import CharModel
from .loop import Generation
from .params import SamplingParams
from .steps import check_precision, make_step


def sample_command(model: CharModel, params: SamplingParams, out: TextIO, err: TextIO, *,
                   prime: str = "", oov: str = "error", threads: int | None = None,
                   precision: str = "fp32") -> int:
    """Print what `charwise sample` prints for `params` (checked when it was made) after
    `prime` (fitted to the vocabulary and encodable)."""
    if params.beam is not None:
        if precision != "fp32":
            raise CharwiseError("--beam scores continuations exactly: it runs in fp32 (drop --precision)")
        for i, (text, lp) in enumerate(model.beam(prime, params.n, params.beam, oov=oov)):
            out.write(f"--- beam {i + 1}: log-probability {lp:.4f} ({max(-lp, 0.0) / LN2:.2f} bits)\n{text}\n")
        return 0
    if check_precision(precision, model.net) != "fp32":
        # made (and kept) now: a CPU without the int8 kernel fails before anything is printed
        make_step(model.net, params.num_samples, precision=precision)
    if model.line_mode:
        return _items(model, params, out, err, prime, oov, precision)
    if params.new_only:
        raise CharwiseError("--new-only needs a run trained with --line-mode (it compares whole "
                            "items with the training text's lines)")
    res = Generation()
    chunks = model.sample_texts(prime, params, oov=oov, threads=threads, result=res, precision=precision)
    if params.num_samples == 1:
        out.write(prime)
        for chars in chunks:
            out.write(chars[0])
            out.flush()
        out.write("\n")
    else:
        for i, text in enumerate(model.joined(prime, chunks, params.num_samples, oov)):
            out.write(f"--- sample {i + 1}\n{text}\n")
    _report_invalid(res, err)
    return 0


def _items(model: CharModel, params: SamplingParams, out: TextIO, err: TextIO, prime: str,
           oov: str, precision: str) -> int:
    if params.stops:
        raise CharwiseError("--stop: a line-mode model ends each item itself (at its end symbol)")
    items, report = model.sample_items(prime, params, oov=oov, precision=precision)
    for item in items:
        out.write(item + "\n")
    if params.new_only:
        err.write(report["message"] + "\n")
        if len(items) < params.n:
            err.write(f"note: only {len(items)} new items in {report['drawn']} draws\n")
    if report["unfinished"]:
        err.write(f"note: {report['unfinished']} item(s) reached the length limit before their end symbol\n")
    return 0


def _report_invalid(res: Generation, err: TextIO) -> None:
    if res.invalid:
        err.write(f"note: the model produced {res.invalid} invalid UTF-8 sequence(s), each "
                  "replaced with U+FFFD\n")


def eval_summary(res: dict) -> str:
    """One line per kind of score `evaluate` returned."""
    lines = [f"{res['chars']:,} characters: {res['loss']:.4f} nats/char, {res['bits_per_char']:.4f} "
             f"bits/char, perplexity {res['perplexity']:.3f} ({res['precision']})"]
    if "context" in res:
        c = res["context"]
        lines.append(f"context: windows of {c['window']} characters, each {c['stride']} after the "
                     f"last; every character after the first {c['window']} is scored with "
                     f"{c['min_before']} to {c['window'] - 1} characters before it")
    if "loss_per_item" in res:
        lines.append(f"{res['items']:,} items: {res['loss_per_item']:.4f} nats/item "
                     f"({res['bits_per_item']:.2f} bits/item; end-of-item symbols included)")
    if "loss_per_byte" in res:
        lines.append(f"{res['bytes']:,} bytes: {res['loss_per_byte']:.4f} nats/byte, "
                     f"{res['bits_per_byte']:.4f} bits/byte ({res['bytes_per_char']:.2f} bytes/char)")
    return "\n".join(lines)
