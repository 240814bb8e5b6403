"""`charwise export` and `charwise.export()`: the options checked once, then the format's own
writer from the FORMATS registry (formats.py), and the line the command prints."""
from __future__ import annotations

import importlib
from typing import Any

from ..settings.commands import ExportOptions
from .formats import FORMATS


def _function(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def export(run_dir, format: str | None = None, out=None, options: ExportOptions | None = None,
           **kw) -> dict:
    """What `charwise export` writes: the ONNX step graph or (format "web") one HTML page, at
    `out` (default: beside the run). Options: ExportOptions (format, which, quantize, text,
    max_loss_increase, force, device), or its fields as keyword arguments."""
    o = ExportOptions.make(options, **kw if format is None else {**kw, "format": format})
    res = _function(FORMATS[o.format].write)(run_dir, out, o)
    return {**res, "format": o.format}


def summary_line(res: dict) -> str:
    """The line `charwise export` prints for what export() returned."""
    return _function(FORMATS[res.get("format", "onnx")].summary)(res)
