"""How much a quantized export (ONNX or web page) raises the loss, and the refusal beyond
--max-loss-increase: the text it is measured on, the exact losses, the report and the phrase
the summary line shows. The ONNX and web exports share it; each computes the exported loss its
own way (onnxruntime, or the page's dequantized weights in torch)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import CharwiseError
from ..generation.charmodel import CharModel
from ..inspect.analysis import analysis_text

CHECK_CHARS = 120_000          # loss check on at most this many characters (tiny-shakespeare's
                               # validation split is 111,540): seconds, even for 1x640 in ONNX


def check_text(run_dir, model, textfile=None) -> tuple[str, str]:
    """(text, where it came from): TEXTFILE, else the run's validation split (else its
    training text), at most CHECK_CHARS characters."""
    t = analysis_text(run_dir, model.info, model.vocab, textfile, oov="skip")
    ids = np.asarray(t.ids)[:CHECK_CHARS]
    if len(ids) < 2:
        raise CharwiseError(f"{t.source}: too short to check the export's loss")
    chars = model.vocab.chars
    where = t.source if len(ids) == len(t.ids) else f"first {len(ids):,} characters of {t.source}"
    return "".join(chars[i] for i in ids), where


def torch_loss(model, text: str, net=None) -> float:
    """Exact fp32 nats/char of `text` under `net` (default: the model's own)."""
    m = model if net is None else CharModel(net, model.vocab, model.info)
    return float(m.evaluate(text, precision="fp32")["loss"])


def loss_report(original: float, exported: float, chars: int, where: str) -> dict:
    return {"original": original, "exported": exported, "delta": exported - original,
            "chars": chars, "text": where}


def refuse_if_worse(report: dict, quantize: str, max_increase: float, what: str) -> None:
    if not math.isfinite(report["exported"]) or report["delta"] > max_increase:
        raise CharwiseError(
            f"{quantize} {what} raises the loss by {report['delta']:+.4f} nats/char "
            f"({report['original']:.4f} -> {report['exported']:.4f} on {report['text']}), beyond "
            f"--max-loss-increase {max_increase:g}; nothing written")


def loss_phrase(loss: dict | None) -> str:
    if not loss:
        return ""
    return (f"; loss on {loss['text']}: {loss['original']:.4f} -> {loss['exported']:.4f} "
            f"nats/char ({loss['delta']:+.5f})")
