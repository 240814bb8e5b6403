"""charwise: character-level language models you can train, sample and look inside."""
__version__ = "0.1.0"

from .api import demo, evaluate, load, train  # noqa: E402
from .config import CharwiseError  # noqa: E402

__all__ = ["train", "load", "evaluate", "demo", "CharwiseError", "__version__"]
