"""charwise: character-level language models you can train, sample and look inside.

The API (train, load, evaluate, demo) is imported on first use, so that `charwise.reference`
(the pure-NumPy engine) can be imported without loading torch.
"""
__version__ = "0.1.0"

from .config import CharwiseError  # noqa: E402  (torch-free)

__all__ = ["train", "load", "evaluate", "demo", "CharwiseError", "__version__"]
_API = ("train", "load", "evaluate", "demo")


def __getattr__(name):
    if name in _API:
        from . import api
        # Bind all four at once (one import of the API serves every name).
        globals().update({n: getattr(api, n) for n in _API})
        return globals()[name]
    raise AttributeError(f"module 'charwise' has no attribute {name!r}")
