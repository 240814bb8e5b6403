"""Line mode: a corpus where each line is one item (names, titles, tweets).

Each item is its own sequence, trained from a fresh (zero) state: the model reads the
end-of-item symbol (an id after the text's characters, never a character of the text) and then
the item, and learns to predict the item's characters followed by the end symbol. Sampling starts
the same way and stops at the end symbol, so every sample is one whole item.

Here: splitting and checking the lines (and spotting a corpus that looks like a list), a
train/validation split by item, padded arrays of whole items (training/batches.py batches
them), the exact per-item evaluation, and the filter that keeps only items not found in the
training text.
"""
from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CharwiseError
from ..runs.bundled import corpus_path as bundled_corpus_path
from ..runs.bundled import sha256_file
from ..scoring import LN2, fp32_flags, window_losses
from .bytevocab import ByteVocab
from .corpus import check_text_file, read_text
from .vocab import AnyVocab, Vocab

IGNORE = -100                  # target id of padding: F.cross_entropy skips it by default
HINT_MAX_BYTES = 50 << 20     # look for a list (to suggest line mode) only in texts up to this
HUGE_LINE = 2000               # characters: a line longer than this is one very long sequence
SHORT_LINE = 64                # characters: what "short" means when suggesting line mode


def split_items(text: str) -> list[str]:
    """The non-empty lines of `text` ("\\r\\n" and "\\r" ends too), without their line ends."""
    return [line for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class LineStats:
    lines: int                 # non-empty lines
    blank: int                 # empty lines
    distinct: int
    median: float              # characters per line
    p99: float
    longest: int
    short_share: float         # share of lines of at most SHORT_LINE characters

    @classmethod
    def of(cls, text: str) -> "LineStats":
        all_lines = text.splitlines()
        items = [s for s in all_lines if s.strip()]
        lens = np.array([len(s) for s in items] or [0])
        return cls(len(items), len(all_lines) - len(items), len(set(items)), float(np.median(lens)),
                   float(np.percentile(lens, 99)), int(lens.max()),
                   float((lens <= SHORT_LINE).mean()) if items else 0.0)


def suggest_line_mode(stats: LineStats) -> str | None:
    """A note when the text looks like a list of items (many short, distinct lines and no blank
    ones between paragraphs), or None. Prose and plays have blank lines; lists do not."""
    if stats.lines < 50 or stats.blank > 0.01 * stats.lines:
        return None
    if stats.short_share < 0.9 or stats.distinct < 0.9 * stats.lines:
        return None
    return (f"note: this text looks like a list of items ({stats.lines:,} lines, "
            f"{stats.distinct / stats.lines:.0%} distinct, median {stats.median:.0f} characters, "
            f"no blank lines): consider --line-mode, which trains each line as one item")


def huge_lines_warning(stats: LineStats) -> str | None:
    """A warning with numbers when line mode would train very long sequences."""
    if stats.longest <= HUGE_LINE:
        return None
    n_huge = "the longest line" if stats.p99 <= HUGE_LINE else "over 1% of the lines"
    return (f"warning: --line-mode trains each line as one sequence from a fresh state, but "
            f"{n_huge} is long (longest {stats.longest:,} characters, 99th percentile "
            f"{stats.p99:,.0f}, median {stats.median:,.0f}): long lines cost memory and time and "
            f"lose the carried state; is this corpus really one item per line?")


def is_validation(item: str, val_fraction: float) -> bool:
    """Items go to the validation split by a hash of their text: the split does not depend on
    the order of the lines (a sorted list would otherwise hold out only its tail) and copies
    of an item land on the same side."""
    return (zlib.crc32(item.encode("utf-8", "surrogatepass")) % 10_000) < val_fraction * 10_000


def split_train_val(items: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    train = [s for s in items if not is_validation(s, val_fraction)]
    val = [s for s in items if is_validation(s, val_fraction)]
    return train, val


def encode_items(encode, items: Iterable[str]) -> list[np.ndarray]:
    """Each item's ids (int64) through the vocabulary's `encode`."""
    return [np.asarray(encode(s), dtype=np.int64) for s in items]


def item_arrays(items: Sequence[np.ndarray], end_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs [END, c1..cn] and targets [c1..cn, END] of several items, padded to the longest:
    (B, T) each; padding reads END and is scored as IGNORE."""
    T = max(len(a) for a in items) + 1
    x = np.full((len(items), T), end_id, dtype=np.int64)
    y = np.full((len(items), T), IGNORE, dtype=np.int64)
    for r, a in enumerate(items):
        x[r, 1:len(a) + 1] = a
        y[r, :len(a)] = a
        y[r, len(a)] = end_id
    return x, y


@torch.inference_mode()
def evaluate_items(net: torch.nn.Module, items: Sequence[np.ndarray], end_id: int,
                   batch_size: int = 64) -> dict:
    """Exact loss of whole items, each from a zero state, end symbol included: per item, per
    character (total nats / characters: the cost of ending each item is part of the total) and
    per symbol (characters + end symbols). In IEEE fp32 on a GPU too (fp32_flags: cuDNN's RNNs
    default to TF32 there), as the results say: training's evaluation, its time-budget sample
    and CharModel.evaluate all score items here. A transformer's item longer than its context
    (END + the item does not fit) is scored over context windows, as eval scores a text
    (scoring.context_windows) and as sampling slides its window."""
    if not items:
        raise CharwiseError("line mode: nothing to evaluate (no non-empty lines)")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    context = getattr(net, "context", None)             # a transformer's; a recurrent net: none
    by_len = sorted(range(len(items)), key=lambda i: len(items[i]))
    longer = [items[i] for i in by_len if context is not None and len(items[i]) + 1 > context]
    by_len = by_len[:len(by_len) - len(longer)]
    total = 0.0
    try:
        with fp32_flags(device, "fp32"):
            for s in range(0, len(by_len), batch_size):
                x, y = item_arrays([items[i] for i in by_len[s:s + batch_size]], end_id)
                logits, _ = net(torch.from_numpy(x).to(device))
                V, target = logits.shape[-1], torch.from_numpy(y).to(device).reshape(-1)
                total += float(F.cross_entropy(logits.float().reshape(-1, V), target,
                                               ignore_index=IGNORE, reduction="sum"))
            for a in longer:                            # [END, c1..cn, END]: n + 1 predictions
                tokens = np.concatenate([[end_id], a, [end_id]]).astype(np.int64)
                for lo, _ in window_losses(net, tokens, device, threads=1):    # type: ignore[arg-type]
                    total += float(lo.sum())
    finally:
        net.train(was_training)
    n_items = len(items)
    n_chars = sum(len(a) for a in items)
    per_char = total / max(n_chars, 1)
    return {"loss": per_char, "bits_per_char": per_char / LN2, "perplexity": math.exp(min(per_char, 700)),
            "chars": n_chars, "items": n_items, "loss_per_item": total / n_items,
            "bits_per_item": total / n_items / LN2, "loss_per_symbol": total / (n_chars + n_items)}


class NoveltyFilter:
    """Which generated items are new: not a line of the training text, and not empty (a model
    that ends an item at once has drawn no item; training items are never empty)."""

    def __init__(self, known: Iterable[str]):
        self.known = set(known)
        self.seen = 0
        self.new = 0
        self.empty = 0

    def __call__(self, item: str) -> bool:
        self.seen += 1
        self.empty += item == ""
        fresh = item != "" and item not in self.known
        self.new += fresh
        return fresh

    def report(self) -> str:
        share = self.new / self.seen if self.seen else 0.0
        empty = f", {self.empty} empty" if self.empty else ""
        return (f"{self.new} of {self.seen} generated items were new ({share:.0%}); the rest were "
                f"lines of the training text{empty}")


@dataclass
class ItemCorpus:
    """A line-mode corpus: the vocabulary (with its end-of-item symbol) and each split's items."""
    vocab: AnyVocab
    train: list[np.ndarray]
    val: list[np.ndarray]
    stats: LineStats
    source: str
    sha256: str

    @property
    def end_id(self) -> int:
        end = self.vocab.end_id
        assert end is not None
        return end


def read_items(path: str | os.PathLike | None, encoding: str = "utf-8") -> tuple[str, list[str]]:
    """(path, the non-empty lines) of a line-mode corpus (the bundled corpus when None)."""
    p = check_text_file(path if path is not None else bundled_corpus_path())
    items = split_items(read_text(p, encoding))
    if not items:
        raise CharwiseError(f"{p}: --line-mode found no non-empty lines")
    return str(p), items


def prepare_items(path: str | os.PathLike | None, vocab_kind: str = "chars", encoding: str = "utf-8",
                  val_fraction: float = 0.1, log=print) -> ItemCorpus:
    """Read a one-item-per-line corpus, warn about huge lines, split it by item and encode it."""
    if path is not None and os.path.isdir(path):
        raise CharwiseError(f"{path}: --line-mode trains from a text file, not a directory")
    source, items = read_items(path, encoding)
    stats = LineStats.of("\n".join(items))
    warning = huge_lines_warning(stats)
    if warning:
        log(warning)
    vocab: AnyVocab = (ByteVocab() if vocab_kind == "bytes"
                       else Vocab(tuple(sorted(set("".join(items)))), end_of_item=True))
    train, val = split_train_val(items, val_fraction)
    if not train:
        train, val = list(items), []
    return ItemCorpus(vocab, encode_items(vocab.encode, train), encode_items(vocab.encode, val),
                      stats, source, sha256_file(Path(source)))


def line_mode_hint(path: str | os.PathLike | None, encoding: str = "utf-8") -> str | None:
    """The suggestion to use --line-mode for a text that looks like a list (small texts only:
    the check reads the whole file)."""
    if path is None or os.path.isdir(path) or os.path.getsize(path) > HINT_MAX_BYTES:
        return None
    return suggest_line_mode(LineStats.of(read_text(path, encoding)))
