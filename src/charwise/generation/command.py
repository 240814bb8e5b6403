"""What `charwise sample` and `charwise eval` print, apart from parsing their flags: plain
sampling (streamed), several samples, stop strings, beam search, line-mode items with
--new-only, and the evaluation summary (per item for line mode, per byte for a byte model)."""
from __future__ import annotations

from typing import TextIO

from ..errors import CharwiseError
from ..scoring import LN2
from .beam import check_beam
from .charmodel import CharModel, check_precision, check_sampling_args, make_step
from .loop import Generation
from .stops import parse_stops


def sample_command(model: CharModel, out: TextIO, err: TextIO, *, prime: str = "", n: int = 200,
                   temperature: float | None = None, top_k: int | None = None,
                   top_p: float | None = None, seed: int | None = None, num_samples: int = 1,
                   oov: str = "error", stop: list[str] | None = None, keep_stop: bool = False,
                   beam: int | None = None, new_only: bool = False, threads: int | None = None,
                   precision: str = "fp32") -> int:
    """Print what `charwise sample` prints. temperature None means "not given" (1.0)."""
    stops = parse_stops(stop)                       # the CLI's text: escapes understood
    if beam is not None:
        if precision != "fp32":
            raise CharwiseError("--beam scores continuations exactly: it runs in fp32 (drop --precision)")
        width = check_beam(beam, temperature, top_k, top_p, temperature_given=temperature is not None)
        if stops or new_only or num_samples != 1:
            raise CharwiseError("--beam returns the K likeliest texts: it does not combine with "
                                "--stop, --new-only or --num-samples")
        for i, (text, lp) in enumerate(model.beam(prime, n, width, oov=oov)):
            out.write(f"--- beam {i + 1}: log-probability {lp:.4f} ({-lp / LN2:.2f} bits)\n{text}\n")
        return 0
    t = 1.0 if temperature is None else temperature
    check_sampling_args(n, t, top_k, top_p, num_samples)
    if check_precision(precision, model.net) != "fp32":
        # made (and kept) now: a CPU without the int8 kernel fails before anything is printed
        make_step(model.net, num_samples, precision=precision)
    if model.line_mode:
        return _items(model, out, err, prime, n, t, top_k, top_p, seed, oov, new_only, stops, precision)
    if new_only:
        raise CharwiseError("--new-only needs a run trained with --line-mode (it compares whole "
                            "items with the training text's lines)")
    model.vocab.encode(prime, oov=oov)              # a bad prime fails before anything is printed
    res = Generation()
    if num_samples == 1:
        out.write(prime)
        for chars in model.stream(prime, n, t, top_k, top_p, seed, oov=oov, threads=threads,
                                  stop=stops, keep_stop=keep_stop, result=res, precision=precision):
            out.write(chars[0])
            out.flush()
        out.write("\n")
    else:
        texts = model.generate(prime, n, t, top_k=top_k, top_p=top_p, seed=seed,
                               num_samples=num_samples, oov=oov, stop=stops, keep_stop=keep_stop,
                               result=res, threads=threads, precision=precision)
        for i, text in enumerate(texts):
            out.write(f"--- sample {i + 1}\n{text}\n")
    _report_invalid(res, err)
    return 0


def _items(model: CharModel, out: TextIO, err: TextIO, prime: str, n: int, t: float,
           top_k: int | None, top_p: float | None, seed: int | None, oov: str, new_only: bool,
           stops: tuple[str, ...], precision: str) -> int:
    if stops:
        raise CharwiseError("--stop: a line-mode model ends each item itself (at its end symbol)")
    items, report = model.items(n, prime, t, top_k, top_p, seed, oov=oov, new_only=new_only,
                                precision=precision)
    for item in items:
        out.write(item + "\n")
    if new_only:
        err.write(report["message"] + "\n")
        if len(items) < n:
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
    if "loss_per_item" in res:
        lines.append(f"{res['items']:,} items: {res['loss_per_item']:.4f} nats/item "
                     f"({res['bits_per_item']:.2f} bits/item; end-of-item symbols included)")
    if "loss_per_byte" in res:
        lines.append(f"{res['bytes']:,} bytes: {res['loss_per_byte']:.4f} nats/byte, "
                     f"{res['bits_per_byte']:.4f} bits/byte ({res['bytes_per_char']:.2f} bytes/char)")
    return "\n".join(lines)
