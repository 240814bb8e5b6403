"""Vocabularies: the code-point Vocab (encode/decode, vectorised), the run.json record of a
vocabulary of either kind (chars, or bytes: bytevocab.py), and the token dtype that fits one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CharwiseError
from .bytevocab import ByteVocab, CharDecoder


class UnknownChars(CharwiseError):
    """Characters outside the vocabulary, with oov="error". The message names the CLI's flag
    (--oov skip); a caller that speaks another language (serve's HTTP fields) words the same
    facts with `message(hint)`."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        super().__init__(self.message("use --oov skip to drop them"))

    def message(self, hint: str) -> str:
        bad = self.chars
        shown = ", ".join(repr(c) for c in bad[:10]) + (" ..." if len(bad) > 10 else "")
        return f"{len(bad)} character(s) not in the model's vocabulary: {shown} ({hint})"


@dataclass(frozen=True)
class Vocab:
    """chars[i] is the character with id i; ids follow sorted code points, as `sorted(set(text))`.
    With `end_of_item` (line mode) one more id, `end_id` = len(chars), is the end-of-item symbol:
    not a character of the text."""
    chars: tuple[str, ...]
    end_of_item: bool = False
    kind = "chars"

    def __post_init__(self):
        if len(self.chars) == 0:
            raise CharwiseError("vocabulary is empty")
        if list(self.chars) != sorted(set(self.chars)) or any(len(c) != 1 for c in self.chars):
            raise CharwiseError("vocabulary must be distinct single characters in sorted order")

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars) + self.end_of_item

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(len(self))

    @property
    def end_id(self) -> int | None:
        return len(self.chars) if self.end_of_item else None

    @property
    def labels(self) -> tuple[str, ...]:
        """A printable name for every id (the end-of-item symbol's is "<end>")."""
        return self.chars + (("<end>",) if self.end_of_item else ())

    def decoder(self) -> CharDecoder:
        return CharDecoder(self.chars)

    def _lut(self) -> np.ndarray:
        # code point -> id table; -1 where the character is not in the vocabulary
        cps = np.array([ord(c) for c in self.chars], dtype=np.int64)
        lut = np.full(int(cps.max()) + 1, -1, dtype=np.int64)
        lut[cps] = np.arange(len(cps))
        return lut

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that the vocabulary lacks, in order of appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(c for c in text if c not in known))

    def encode(self, text: str, oov: str = "error") -> np.ndarray:
        """str -> int64 ids. oov='error' raises naming unknown characters; 'skip' drops them."""
        cps = codepoints(text)
        lut = self._lut()
        ids = np.where(cps < len(lut), lut[np.minimum(cps, len(lut) - 1)], -1)
        if (ids < 0).any():
            if oov == "skip":
                return ids[ids >= 0]
            raise UnknownChars(self.unknown(text))
        return ids

    def encode_text(self, text: str, oov: str = "error", what: str = "text") -> tuple[np.ndarray, int]:
        """(ids, number of characters dropped by oov='skip'), for text a user gave: never
        silently changes it (oov='error' names the unknown characters; `what` names the text
        in the message) and an empty text, or one with no known character, is an error."""
        if oov not in ("error", "skip"):
            raise CharwiseError(f"--oov must be 'error' or 'skip', got {oov!r}")
        if not text:
            raise CharwiseError(f"{what} is empty")
        try:
            ids = self.encode(text, oov=oov)
        except CharwiseError as e:
            raise CharwiseError(f"{what}: {e}") from None
        if len(ids) == 0:
            raise CharwiseError(f"{what}: none of its characters is in the model's vocabulary")
        return ids, len(text) - len(ids)

    def decode(self, ids: Any) -> str:
        """ids -> str without a Python loop over the text (code points gathered, then UTF-32)."""
        cps = np.array([ord(c) for c in self.chars], dtype="<u4")
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        a = a[a < len(self.chars)]                        # the end-of-item symbol is not text
        return cps[a].tobytes().decode("utf-32-le", "surrogatepass")


AnyVocab = Vocab | ByteVocab


def vocab_from_info(info: dict) -> AnyVocab:
    """The vocabulary a run.json describes: its kind ("chars" or "bytes") and line mode."""
    kind, line_mode = info.get("vocab_kind", "chars"), info.get("line_mode", False)
    if kind not in ("chars", "bytes"):
        raise CharwiseError(f"vocab_kind must be \"chars\" or \"bytes\", got {kind!r}")
    if not isinstance(line_mode, bool):
        raise CharwiseError(f"line_mode must be true or false, got {line_mode!r}")
    if kind == "bytes":
        return ByteVocab()
    return Vocab(tuple(info["vocab"]), end_of_item=line_mode)


def vocab_record(vocab: AnyVocab, line_mode: bool) -> dict:
    """What run.json keeps of a vocabulary (vocab_from_info reads it back)."""
    chars = list(vocab.chars) if isinstance(vocab, Vocab) else []
    return {"vocab": chars, "vocab_kind": vocab.kind, "line_mode": line_mode}


def token_dtype(vocab_size: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise CharwiseError(f"vocabulary of {vocab_size:,} characters is too large: token ids "
                        "must fit in uint32")


def codepoints(text: str) -> np.ndarray:
    """str -> int64 code points, one per character."""
    # UTF-32 gives one fixed-width unit per code point: a vectorised str -> int conversion.
    # surrogatepass keeps lone surrogates as themselves instead of raising mid-way.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
