"""The batched generation loop behind sampling with stop strings, end-of-item symbols and
byte vocabularies.

Each of S samples runs through its own pipeline: symbol id -> decoder (a character, or UTF-8
bytes assembled into characters) -> stop matcher -> text. A sample ends on its own when it meets
a stop string, draws the end-of-item symbol, or has `n` characters; its row then leaves the
batch (the state is compacted), so finished samples cost nothing and the loop stops as soon as
the last one is done.

`run` is independent of the model: it takes a step function `step(ids, state) -> (logits,
state)` and a `pick(logits) -> ids` rule (temperature/top-k/top-p sampling, or argmax), so the
tests drive it with toy steps.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .stops import StopMatcher

BYTES_PER_CHAR_MAX = 4          # UTF-8: at most 4 steps make a character


class Decoder(Protocol):
    invalid: int

    def feed(self, i: int) -> str: ...

    def flush(self) -> str: ...


def take_rows(state: Any, rows: np.ndarray) -> Any:
    """Rows `rows` of a recurrent state: a tuple of (layers, batch, hidden) arrays or tensors;
    or of a state that takes its own rows (a transformer's KV cache: `take`)."""
    if hasattr(state, "take"):
        return state.take(rows)
    out = []
    for s in state:
        if isinstance(s, np.ndarray):
            out.append(s[:, rows])
        else:                                            # a torch tensor; no torch import here
            out.append(s.index_select(1, s.new_tensor(rows, dtype=None).long()))
    return tuple(out)


@dataclass
class SampleEnd:
    """How each sample ended: "stop" (a stop string, in `stop`), "end" (the end-of-item
    symbol), or "length" (n characters); `invalid` counts replaced UTF-8 sequences."""
    reason: str = "length"
    stop: str | None = None
    chars: int = 0
    steps: int = 0
    invalid: int = 0


@dataclass
class Generation:
    """What `run` produced for each sample once it is exhausted (`ends`)."""
    ends: list[SampleEnd] = field(default_factory=list)

    @property
    def invalid(self) -> int:
        return sum(e.invalid for e in self.ends)


class SampleText:
    """One sample's text pipeline: symbol id -> decoder -> stop matcher -> text. `feed` returns
    the text that became final (a stop string's possible start is held back); `decoded` is
    what the last feed (and a close after it) decoded, final or not; `end` how it ended."""

    def __init__(self, decoder: Decoder, stops: Sequence[str], keep_stop: bool, n: int):
        self.decoder = decoder
        self.matcher = StopMatcher(stops, keep_stop)
        self.left = n                                    # characters still allowed
        self.end = SampleEnd()
        self.decoded = ""

    def feed(self, sym: int, end_id: int | None) -> str:
        self.end.steps += 1
        self.decoded = ""
        if end_id is not None and sym == end_id:
            return self.close("end")
        text = self.decoder.feed(sym)[: self.left]
        self.decoded = text
        self.left -= len(text)
        self.end.chars += len(text)
        out = self.matcher.feed(text)
        if self.matcher.done:
            self.end.reason, self.end.stop = "stop", self.matcher.matched
            self.end.invalid = self.decoder.invalid
        elif self.left <= 0:
            out += self.close("length")
        return out

    def close(self, reason: str) -> str:
        """End the sample: release what the decoder and the matcher still hold."""
        if self.matcher.done:
            return ""
        tail = self.decoder.flush()[: max(self.left, 0)]
        self.decoded += tail
        self.left -= len(tail)
        self.end.chars += len(tail)
        out = self.matcher.feed(tail)
        if self.matcher.done:
            self.end.reason, self.end.stop = "stop", self.matcher.matched
        else:
            out += self.matcher.finish()
            self.end.reason = reason
        self.end.invalid = self.decoder.invalid
        return out

    @property
    def done(self) -> bool:
        return self.matcher.done


def run(step: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]], logits: np.ndarray, state: Any,
        n: int, pick: Callable[[np.ndarray], np.ndarray], decoders: Sequence[Decoder],
        stops: Sequence[str] = (), keep_stop: bool = False, end_id: int | None = None,
        max_steps: int | None = None, result: Generation | None = None) -> Iterator[list[str]]:
    """Generate from S = len(decoders) samples whose next-symbol logits are `logits` (S, V)
    and whose state is `state`. Yields, per step, the list of S texts that became final at that
    step ("" for a sample with nothing new or already finished). Each sample stops at `n`
    characters, a stop string, or `end_id`; the loop also stops after `max_steps` steps
    (default: n, or n x 4 when a decoder assembles UTF-8 bytes). `result`, if given, receives
    how each sample ended."""
    samples = [SampleText(d, stops, keep_stop, n) for d in decoders]
    if result is not None:
        result.ends = [s.end for s in samples]
    if max_steps is None:
        max_steps = n * (1 if all(hasattr(d, "chars") for d in decoders) else BYTES_PER_CHAR_MAX)
    active = np.arange(len(samples))
    if n <= 0:
        active = active[:0]
    for i in range(max_steps):
        if len(active) == 0:
            return
        ids = np.asarray(pick(logits))
        out = [""] * len(samples)
        for row, sym in zip(active, ids):
            out[row] = samples[row].feed(int(sym), end_id)
        keep = np.array([not samples[r].done and samples[r].left > 0 for r in active], dtype=bool)
        yield out
        if not keep.all():
            rows = np.flatnonzero(keep)
            active, ids, logits = active[rows], ids[rows], logits[rows]
            if len(active):
                state = take_rows(state, rows)
        if len(active) and i + 1 < max_steps:
            logits, state = step(ids, state)
    # out of steps: close what is still open (a byte sample short of n characters)
    final = [""] * len(samples)
    for row in active:
        final[row] = samples[row].close("length")
    if any(final):
        yield final
