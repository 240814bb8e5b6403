"""charwise: character-level language models you can train, sample and look inside.

The API (train, sample, evaluate, analyze, export, info, prepare, plot, serve, pack, load,
demo, open_run) is imported on first use, so that `charwise.reference` (the pure-NumPy engine) and
`charwise.options` can be imported without loading torch.

Seven commands share their name with the module that implements them: sample, evaluate, export,
info, prepare, serve, pack. `charwise.sample` is that module, made callable: calling it runs
`charwise.api.sample`. So `charwise.sample(RUN, n=100)`, `import charwise.sample as S` and
`from charwise.sample import CharModel` all work, in any order (a plain function there would be
replaced by the module as soon as something imported it, and `import charwise.evaluate as ev`
would get the function instead of the module).
"""
import importlib
import sys
import types

__version__ = "0.1.0"

from .config import CharwiseError  # noqa: E402  (torch-free)

_API = ("train", "load", "analyze", "plot", "demo", "open_run")
_COMMANDS = ("sample", "evaluate", "export", "info", "prepare", "serve", "pack")
__all__ = [*_API, *_COMMANDS, "CharwiseError", "__version__"]


class _Command(types.ModuleType):
    """A module that is also its command: calling it calls charwise.api's function of its name."""

    def __call__(self, *args, **kw):
        api = importlib.import_module("charwise.api")
        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kw)


class _Package(types.ModuleType):
    def __getattribute__(self, name: str):
        if name in _COMMANDS:
            module = importlib.import_module(f"charwise.{name}")
            if type(module) is types.ModuleType:
                module.__class__ = _Command
            return module
        if name in _API:
            if name == "open_run":                  # a run for notebooks (charwise.notebook)
                return importlib.import_module("charwise.notebook").open_run
            return getattr(importlib.import_module("charwise.api"), name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
