"""The Python API: the same functions the CLI calls.

    import charwise
    result = charwise.train("input.txt", out="runs/x", preset="small", max_time=120)
    model = charwise.load("runs/x")
    print(model.generate("ROMEO:", 200, temperature=0.8, seed=0))
    charwise.evaluate("runs/x", "held_out.txt")
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from .config import CharwiseError
from .data import read_text
from .evaluate import pick_device  # noqa: F401  (re-exported)
from .inspect import analysis as A
from .inspect.neurons import heatmap
from .inspect.plots import heatmap_chart, per_char_chart, training_curve
from .rundir import CURVE
from .sample import load
from .training import train


def evaluate(run_dir, textfile, oov: str = "error", encoding: str = "utf-8",
             precision: str = "auto", threads: int | None = None) -> dict:
    """Exact loss of a run's best weights on a text file: nats/char, bits/char, perplexity.
    precision "auto" scores in the arithmetic training would use here; "fp32" for the last digit.
    threads: a fixed CPU thread count, or None to measure and choose."""
    model = load(run_dir)
    text = read_text(textfile, encoding)
    res = model.evaluate(text, oov=oov, precision=precision, threads=threads)
    if res["chars"] < 1:
        raise CharwiseError(f"{textfile}: too short to evaluate")
    return res


def demo(out="runs/demo", log=print) -> dict:
    """The chapter's pipeline on the bundled corpus: train the spec model, print its parameter
    count and samples primed with "Mr Bennet" at temperatures 0.5, 1.0 and 1.5, and save the
    training curve, the per-character loss chart (Stage 3, one stateful pass) and a heatmap of
    the hidden state over "Mr Bennet replied that he had not." (extension 3). Returns the
    paths and numbers."""
    t0 = time.perf_counter()
    out = Path(out)
    result = train(None, out=out, preset="spec", force=True, progress=False, log=log)
    model = load(out)
    cfg = model.net.cfg
    emb = model.net.embed.weight.numel()
    rnn = sum(p.numel() for p in model.net.rnn.parameters())
    head = sum(p.numel() for p in model.net.head.parameters())
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
    per_char = per_char_chart(table, out / "per_char.png",
                              title="Per-character average loss (hardest to predict), whole text")
    hard, min_count, _ = table.hardest(5)
    log(f"Hardest characters (mean loss, nats; among those seen >= {min_count} times): " + ", ".join(
        f"{A.visible(c)} {m:.3f}" for c, m in zip(hard.chars, hard.mean_nats)))
    log(f"per-character loss: {per_char}")
    heat = heatmap_chart(heatmap(model.net, model.vocab, A.SPEC_SENTENCE), out / "heatmap.png")
    log(f"hidden-state heatmap of {A.SPEC_SENTENCE!r}: {heat}")
    log(f"demo took {time.perf_counter() - t0:.1f}s")
    return {"run_dir": out, "result": result, "samples": samples, "curve": curve,
            "per_char": per_char, "heatmap": heat, "per_char_table": table}
