"""charwise: character-level language models you can train, sample and look inside.

The API is plain functions: train, sample, evaluate, analyze, export, info, prepare, plot, serve,
pack, load, demo and open_run (commands.API names each one's module; charwise.api imports them
all). They are imported on first use (PEP 562 `__getattr__`), each from its own module, so that
`import charwise`, `charwise.reference` (the pure-NumPy engine) and `charwise.settings` do not
load torch. Type checkers see the real functions through the TYPE_CHECKING imports below (a
test checks that they name the same functions as commands.API).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .commands import API
from .errors import CharwiseError

if TYPE_CHECKING:                               # `x as x`: re-exported, for type checkers
    from .api import analyze as analyze
    from .api import demo as demo
    from .api import evaluate as evaluate
    from .api import export as export
    from .api import info as info
    from .api import load as load
    from .api import pack as pack
    from .api import plot as plot
    from .api import prepare as prepare
    from .api import sample as sample
    from .api import serve as serve
    from .api import train as train
    from .notebook import open_run as open_run

__all__ = [*API, "CharwiseError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in API:
        module, _, attr = API[name].partition(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value                 # later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module 'charwise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
