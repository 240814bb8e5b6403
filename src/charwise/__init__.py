"""charwise: character-level language models you can train, sample and look inside.

The API is plain functions: train, sample, evaluate, analyze, export, info, prepare, plot, serve,
pack, load, demo and open_run (charwise.api, and charwise.notebook for open_run). They are
imported on first use (PEP 562 `__getattr__`), so that `import charwise`,
`charwise.reference` (the pure-NumPy engine) and `charwise.settings` do not load torch. Type
checkers see the real functions through the TYPE_CHECKING imports below.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import CharwiseError

if TYPE_CHECKING:
    from .api import analyze, demo, evaluate, export, info, load, pack, plot, prepare, sample, serve, train
    from .notebook import open_run

__all__ = ["train", "sample", "evaluate", "analyze", "export", "info", "prepare", "plot", "serve",
           "pack", "load", "demo", "open_run", "CharwiseError", "__version__"]
# name -> the module that defines it: open_run is the notebook's, the rest charwise.api's
_LAZY = {name: "charwise.notebook" if name == "open_run" else "charwise.api" for name in __all__[:13]}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value                 # later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module 'charwise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
