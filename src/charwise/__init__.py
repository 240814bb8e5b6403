"""charwise: character-level language models you can train, sample and look inside.

The API (train, sample, evaluate, analyze, export, info, prepare, serve, load, demo, open_run)
is imported on first use, so that `charwise.reference` (the pure-NumPy engine) and
`charwise.options` can be imported without loading torch.

Several API functions share their name with the module that implements the command (sample,
evaluate, export, info, prepare, serve). `charwise.NAME` is always the function, even after the
module has been imported (which would otherwise bind the module there); reach a module with
`from charwise.sample import ...`.
"""
import sys
import types

__version__ = "0.1.0"

from .config import CharwiseError  # noqa: E402  (torch-free)

_API = ("train", "load", "evaluate", "demo", "sample", "analyze", "export", "info", "prepare",
        "serve", "plot")
__all__ = [*_API, "open_run", "CharwiseError", "__version__"]


def _function(name: str):
    if name == "open_run":                      # a run for notebooks (charwise.notebook)
        from .notebook import open_run
        return open_run
    from . import api
    return getattr(api, name)


class _Package(types.ModuleType):
    def __getattribute__(self, name: str):
        if name in _API or name == "open_run":
            return _function(name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
