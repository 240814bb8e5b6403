"""The export formats, declared once: FORMATS.

`charwise export --format`, `charwise.export(..., format)` (exporting/command.py), the choices
of settings/commands.ExportOptions and so the docs' command-line page all read this table. Each
format names the function that writes it, so a new format is one entry and its module.

This module imports nothing of charwise but errors (settings/options.py reads it to declare
ExportOptions, and must stay torch-free).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import CharwiseError


@dataclass(frozen=True)
class Format:
    name: str
    write: str                  # "module:function": (run_dir, out, ExportOptions) -> result dict
    summary: str                # "module:function": result dict -> the line `charwise export` prints
    suffix: str                 # of the file it writes (RUN_DIR/model<suffix> by default)
    quantize: tuple[str, ...]   # --quantize values it takes; "none" keeps float32


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", "charwise.exporting.onnx:write", "charwise.exporting.onnx:summary_line", ".onnx",
           ("none", "fp16", "int8")),
    Format("web", "charwise.exporting.web:write", "charwise.exporting.web:summary_line", ".html",
           ("none", "fp16", "int8")),
)}

# Every --quantize value some format takes, in declaration order (ExportOptions's choices).
QUANTIZE: tuple[str, ...] = tuple(dict.fromkeys(q for f in FORMATS.values() for q in f.quantize))

# Default refusal threshold (nats/char) for a quantized export: the int8 target. fp16
# is ~100x inside it; an int8 export beyond it has lost something a user would notice.
DEFAULT_MAX_LOSS_INCREASE = 0.01


def check_quantize(quantize: str, format: str) -> str:
    """`quantize` if `format` takes it, else a one-line error naming the ones it takes."""
    choices = FORMATS[format].quantize
    if quantize not in choices:
        raise CharwiseError(f"unknown --quantize {quantize!r}; choose one of {', '.join(choices)}")
    return quantize
