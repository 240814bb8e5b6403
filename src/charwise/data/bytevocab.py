"""The byte-level vocabulary: a model of UTF-8 bytes instead of code points.

Ids 0-255 are the bytes, id 256 (`END`) the end-of-item symbol of line mode, never a byte of
the text. Any text trains (its alphabet cannot explode: CJK text needs 257 symbols, not
thousands) and any prime works. The price: a character outside ASCII takes two to four steps.

Sampling emits text through `Utf8Decoder`, which holds back an incomplete multi-byte sequence
until it is complete and replaces an invalid one with U+FFFD, counting each, so what comes out
is always valid UTF-8. `CharDecoder` is the same interface for a code-point vocabulary.
Scores per character are comparable with a code-point model's: `per_char_losses` sums the
losses of each character's bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CharwiseError
from ..settings.options import LN2

END = 256                      # the end-of-item symbol's id
SIZE = 257                     # 256 bytes + END
REPLACEMENT = "\ufffd"


def _label(b: int) -> str:
    if b == END:
        return "<end>"
    return chr(b) if 0x20 <= b < 0x7F or b in (9, 10, 13) else f"<{b:02X}>"


LABELS = tuple(_label(b) for b in range(SIZE))


@dataclass(frozen=True)
class ByteVocab:
    """UTF-8 bytes as symbols; `kind` is what run.json records. `chars` (= `labels`) names
    every id for display: ASCII bytes as themselves, the others as <HH>, the end as <end>."""
    kind: str = "bytes"
    end_of_item = True
    chars = LABELS
    labels = LABELS

    def __len__(self) -> int:
        return SIZE

    @property
    def end_id(self) -> int:
        return END

    @property
    def dtype(self) -> np.dtype:
        # a stream of text never holds END (it is only an item boundary in line mode, whose
        # batches are built as int64), so a byte corpus is stored one byte per token
        return np.dtype(np.uint8)

    def encode(self, text: str, oov: str = "error") -> np.ndarray:
        """str -> int64 byte ids. Every character has bytes; only lone surrogates (not text)
        fail, or are dropped with oov='skip'."""
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            if oov != "skip":
                raise CharwiseError("the text contains a lone surrogate (not valid Unicode text)") from None
            raw = text.encode("utf-8", "ignore")
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)

    def encode_text(self, text: str, oov: str = "error", what: str = "text") -> tuple[np.ndarray, int]:
        """(ids, 0): as Vocab.encode_text; a byte vocabulary drops nothing."""
        if not text:
            raise CharwiseError(f"{what} is empty")
        return self.encode(text, oov), 0

    def decode(self, ids) -> str:
        """Ids -> text; END symbols are dropped, invalid UTF-8 becomes U+FFFD."""
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        return a[a < 256].astype(np.uint8).tobytes().decode("utf-8", "replace")

    def unknown(self, text: str) -> list[str]:
        return []

    def decoder(self) -> "Utf8Decoder":
        return Utf8Decoder()


class Utf8Decoder:
    """Bytes in one at a time, text out as soon as it is complete, never invalid.

    `feed(byte)` returns the characters completed by that byte ("" while a multi-byte sequence
    is incomplete); an invalid sequence (a stray continuation byte, a truncated sequence, an
    overlong form, a surrogate) comes out as one U+FFFD and adds 1 to `invalid`. `flush()` ends
    the stream: a sequence still incomplete then is invalid too.
    """

    def __init__(self) -> None:
        self.pending = b""
        self.invalid = 0

    def feed(self, byte: int) -> str:
        if not 0 <= byte < 256:
            raise ValueError(f"not a byte: {byte}")
        self.pending += bytes((byte,))
        return self._drain(final=False)

    def flush(self) -> str:
        return self._drain(final=True)

    def _drain(self, final: bool) -> str:
        out = []
        while self.pending:
            try:
                out.append(self.pending.decode("utf-8"))
                self.pending = b""
            except UnicodeDecodeError as e:
                out.append(self.pending[:e.start].decode("utf-8"))
                incomplete = e.reason == "unexpected end of data" and e.end == len(self.pending)
                if incomplete and not final:
                    self.pending = self.pending[e.start:]          # wait for the rest
                    break
                out.append(REPLACEMENT)
                self.invalid += 1
                self.pending = self.pending[max(e.end, e.start + 1):]
        return "".join(out)


class CharDecoder:
    """The same interface for a code-point vocabulary: one id, one character."""

    def __init__(self, chars: tuple[str, ...] | list[str]):
        self.chars = chars
        self.invalid = 0

    def feed(self, i: int) -> str:
        return self.chars[i]

    def flush(self) -> str:
        return ""


def char_starts(byte_ids: np.ndarray) -> np.ndarray:
    """True where a byte begins a character (it is not a UTF-8 continuation byte 10xxxxxx)."""
    b = np.asarray(byte_ids, dtype=np.int64)
    return (b & 0xC0) != 0x80


def per_char_losses(losses: np.ndarray, byte_ids: np.ndarray) -> dict:
    """Scores of a byte model over `byte_ids` (losses[i] = nats of predicting byte i+1), per byte
    and per character. Per character counts only characters whose bytes were all predicted
    (the first character's are not, as a code-point model's first character is not), so
    bits/char is comparable with a code-point model's on the same text: total nats of
    characters 2..n / (n - 1)."""
    losses = np.asarray(losses, dtype=np.float64)
    starts = char_starts(byte_ids)
    n_chars = int(starts.sum())
    if n_chars < 2 or len(losses) < 1:
        raise CharwiseError("need at least 2 characters to evaluate")
    second = int(np.flatnonzero(starts)[1])                   # first byte of character 2
    per_char = float(losses[second - 1:].sum()) / (n_chars - 1)
    per_byte = float(losses.sum()) / len(losses)
    return {"loss": per_char, "bits_per_char": per_char / LN2, "perplexity": float(np.exp(per_char)),
            "chars": n_chars - 1, "loss_per_byte": per_byte, "bits_per_byte": per_byte / LN2,
            "bytes": len(losses), "bytes_per_char": (len(losses) + 1) / n_chars}
