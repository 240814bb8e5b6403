"""charwise: character-level language models you can train, sample and look inside.

The API (train, load, evaluate, demo) is imported on first use, so that `charwise.reference`
(the pure-NumPy engine) can be imported without loading torch.
"""
__version__ = "0.1.0"

from .config import CharwiseError  # noqa: E402  (torch-free)

__all__ = ["train", "load", "evaluate", "demo", "open_run", "CharwiseError", "__version__"]
_API = ("train", "load", "evaluate", "demo")


def __getattr__(name):
    if name in _API or name == "open_run":
        from . import api
        # Bind all four at once (one import of the API serves every name).
        globals().update({n: getattr(api, n) for n in _API})
        if name == "open_run":                  # a run for notebooks (charwise.notebook)
            from .notebook import open_run
            globals()["open_run"] = open_run
        return globals()[name]
    raise AttributeError(f"module 'charwise' has no attribute {name!r}")
