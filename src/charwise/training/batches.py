"""What a run trains on and what its evaluations score, one interface whichever the mode:
B contiguous streams of a text (truncated BPTT), or batches of whole items (line mode).

The batches (StreamBatches, ItemBatches):

    windows_per_epoch     windows in one pass over the training data
    rows                  this process's rows of the B (its share of the streams under torchrun)
    batch(step)           the step's inputs and targets, (rows, T) int64 each
    keep(step)            which rows carry their hidden state into `step` (None: no row carries
                          any: every batch starts from the model's own zero state)

The evaluations (TokenEvaluation, ByteEvaluation, ItemEvaluation):

    chars                 the characters one evaluation scores
    split                 "val", or "train" when there is no validation split to score
    score(model, ...)     the exact loss of the whole split (scoring.py, lines.py)
    sample(model, n, ...) about `n` of its characters scored the same way (the time budget's
                          measure of what the whole will cost); returns how many it scored
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from ..data.lines import evaluate_items, item_arrays
from ..errors import CharwiseError
from ..model import CharModule
from ..scoring import evaluate_bytes, evaluate_tokens
from ..threads import ThreadPolicy


def stream_keep_mask(step: int, rows: np.ndarray, every: int) -> np.ndarray:
    """Which streams keep their carried state at `step`: stream b starts cold again every
    `every` windows, the streams staggered so that a few restart at each step. Sampling and
    evaluation always start from a zero state; a model that has only met it at epoch starts
    (16 times an epoch, say) can blow its cell state up from there (seen: 9 nats/char after
    a quarter epoch). A pure function of the step, so resuming reproduces it."""
    return (step + rows) % every != 0


class StreamBatches:
    """B parallel contiguous streams over `tokens`, cut into windows of T characters.

    Stream b reads L = (n-1) // B characters starting at b*L + phase. Window k of every stream
    starts where window k-1 ended, so the hidden state at the end of one window is the right
    starting state for the next (the spec's extension 1). One epoch is L // T windows. Each
    epoch shifts all streams by a phase drawn from (seed, epoch), wrapping at the end of the
    text, so the cold starts of the state fall on different characters every epoch (and
    resuming at any step reproduces the same windows). `streams` selects a subset of the B
    streams (a rank's share in distributed training). Every stream starts cold at an epoch's
    start and, with `reset_every`, every that many windows besides (stream_keep_mask).
    """

    carries_state = True

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0,
                 streams: slice | None = None, reset_every: int = 0):
        n = len(tokens)
        if n - 1 < seq_len:
            raise CharwiseError(f"text too short: {n} characters cannot fill one training window "
                                f"of {seq_len}+1 (use a smaller --seq-len or a longer text)")
        if (n - 1) // batch_size < seq_len:
            raise CharwiseError(f"text too short for {batch_size} streams of {seq_len} characters "
                                f"({n} characters); lower --batch-size or --seq-len")
        self.tokens, self.B, self.T, self.seed = tokens, batch_size, seq_len, seed
        self.reset_every = reset_every
        self.n_inputs = n - 1                                     # positions that have a target
        self.stream_len = self.n_inputs // batch_size             # L
        self.windows_per_epoch = self.stream_len // seq_len
        self.rows = np.arange(batch_size)[streams or slice(None)]
        self._offsets = np.arange(seq_len)                       # (T,)

    def phase(self, epoch: int) -> int:
        return int(np.random.default_rng([self.seed, epoch]).integers(self.stream_len))

    def start_offsets(self, k: int, epoch: int = 0) -> np.ndarray:
        """Where each stream's window k of `epoch` begins in the token array."""
        return (self.rows * self.stream_len + self.phase(epoch) + k * self.T) % self.n_inputs

    def window(self, k: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Window k (0 <= k < windows_per_epoch) -> inputs, targets, each (B, T) int64."""
        idx = (self.start_offsets(k, epoch)[:, None] + self._offsets[None, :]) % self.n_inputs  # (B, T)
        x = np.asarray(self.tokens[idx], dtype=np.int64)
        y = np.asarray(self.tokens[idx + 1], dtype=np.int64)      # idx + 1 <= n - 1: in range
        return x, y

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self.window(step % self.windows_per_epoch, step // self.windows_per_epoch)

    def keep(self, step: int) -> np.ndarray:
        if step % self.windows_per_epoch == 0:                    # a new epoch starts cold
            return np.zeros(len(self.rows), dtype=bool)
        if self.reset_every:
            return stream_keep_mask(step, self.rows, self.reset_every)       # (B,)
        return np.ones(len(self.rows), dtype=bool)


class ItemBatches:
    """Batches of B whole items, shuffled per epoch by (seed, epoch), each item in a row of its
    own from a zero state. The same `window(k, epoch)` interface as StreamBatches (a window's
    length is that batch's longest item + 1); no row carries state (`keep` is None)."""

    carries_state = False

    def __init__(self, items: Sequence[np.ndarray], batch_size: int, end_id: int, seed: int = 0):
        if not items:
            raise CharwiseError("line mode: no items to train on (every line is empty?)")
        self.items, self.end_id, self.seed = list(items), end_id, seed
        self.B = batch_size
        self.rows = np.arange(batch_size)
        self.windows_per_epoch = max(1, math.ceil(len(self.items) / batch_size))

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def window(self, k: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        perm = self.order(epoch)
        idx = np.arange(k * self.B, (k + 1) * self.B) % len(perm)      # a short last batch wraps
        return item_arrays([self.items[i] for i in perm[idx]], self.end_id)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self.window(step % self.windows_per_epoch, step // self.windows_per_epoch)

    def keep(self, step: int) -> None:
        return None


# ----------------------------------------------------------------------------- evaluations

OnChunk = Callable[[int, int], Any]


class TokenEvaluation:
    """A text scored in one stateful pass (scoring.evaluate_tokens): every character after the
    first is predicted from all before it."""

    def __init__(self, tokens: np.ndarray, split: str):
        self.tokens, self.split = tokens, split
        self.chars = len(tokens) - 1

    def score(self, model: CharModule, precision: str, threads: ThreadPolicy,
              on_chunk: OnChunk | None = None) -> dict:
        return evaluate_tokens(model, self.tokens, precision, threads=threads, on_chunk=on_chunk)

    def sample(self, model: CharModule, n: int, precision: str, threads: ThreadPolicy) -> int:
        part = self.tokens[:n + 1]
        evaluate_tokens(model, part, precision, threads=threads)
        return len(part) - 1


class ByteEvaluation(TokenEvaluation):
    """The same pass over UTF-8 bytes (--vocab bytes), whose losses are also reported per
    character (scoring.evaluate_bytes)."""

    def score(self, model: CharModule, precision: str, threads: ThreadPolicy,
              on_chunk: OnChunk | None = None) -> dict:
        return evaluate_bytes(model, self.tokens, precision)

    def sample(self, model: CharModule, n: int, precision: str, threads: ThreadPolicy) -> int:
        part = self.tokens[:n + 1]
        evaluate_bytes(model, part, precision)
        return len(part) - 1


class ItemEvaluation:
    """Line mode: every item from a fresh state, end symbols included (lines.evaluate_items, in
    IEEE fp32 on a GPU too, whatever the run's precision)."""

    def __init__(self, items: list[np.ndarray], end_id: int, split: str):
        self.items, self.end_id, self.split = items, end_id, split
        self.chars = sum(len(a) for a in items)

    def score(self, model: CharModule, precision: str, threads: ThreadPolicy,
              on_chunk: OnChunk | None = None) -> dict:
        return evaluate_items(model, self.items, self.end_id)

    def sample(self, model: CharModule, n: int, precision: str, threads: ThreadPolicy) -> int:
        every = max(1, round(self.chars / max(n, 1)))               # items of every length, spread out
        items = self.items[::every]
        evaluate_items(model, items, self.end_id)
        return sum(len(a) for a in items)


Evaluation = TokenEvaluation | ItemEvaluation
Batches = StreamBatches | ItemBatches
