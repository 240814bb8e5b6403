"""Byte vocabulary: encoding any text, the incremental UTF-8 decoder, per-character scores."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charwise.data.bytevocab import END, ByteVocab, CharDecoder, Utf8Decoder, per_char_losses
from charwise.errors import CharwiseError


def feed_all(data: bytes):
    d = Utf8Decoder()
    pieces = [d.feed(b) for b in data]
    pieces.append(d.flush())
    return pieces, d


def test_vocab_shape_and_roundtrip():
    v = ByteVocab()
    assert len(v) == 257 and v.end_id == END == 256
    text = "Grüße, 世界! 😀"
    ids = v.encode(text)
    assert ids.dtype == np.int64 and ids.max() < 256 and len(ids) == len(text.encode())
    assert v.decode(ids) == text
    assert v.decode(np.append(ids, END)) == text       # the end symbol is not text
    assert v.unknown("anything at all ✓") == []
    with pytest.raises(CharwiseError, match="surrogate"):
        v.encode("a\ud800")
    assert v.decode(v.encode("a\ud800b", oov="skip")) == "ab"


def test_multibyte_held_back_until_complete():
    pieces, d = feed_all("a世😀".encode())
    # 'a' at once; 世 (3 bytes) on its third byte; 😀 (4 bytes) on its fourth
    assert pieces == ["a", "", "", "世", "", "", "", "😀", ""]
    assert d.invalid == 0


@pytest.mark.parametrize("data, text, invalid", [
    (b"\x80a", "\ufffda", 1),                      # stray continuation byte
    (b"\xe4\xb8a", "\ufffda", 1),                  # truncated 3-byte sequence, then ASCII
    (b"\xc0\xafz", "\ufffd\ufffdz", 2),            # overlong form
    (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd", 3),    # a surrogate is not valid UTF-8
    (b"ok\xe4\xb8", "ok\ufffd", 1),                # incomplete at the end: flushed as invalid
])
def test_invalid_sequences_replaced_and_counted(data, text, invalid):
    pieces, d = feed_all(data)
    out = "".join(pieces)
    assert out == text and d.invalid == invalid
    out.encode("utf-8")                             # always valid text
    assert out == data.decode("utf-8", "replace")   # same replacements as Python's decoder


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_give_valid_text(data):
    pieces, d = feed_all(data)
    out = "".join(pieces)
    out.encode("utf-8")
    assert out == data.decode("utf-8", "replace")
    assert d.invalid == out.count("\ufffd") - data.decode("utf-8", "ignore").count("\ufffd")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_valid_text_passes_through(text):
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    pieces, d = feed_all(data)
    assert "".join(pieces) == text and d.invalid == 0


def test_char_decoder():
    d = CharDecoder(("a", "b"))
    assert d.feed(1) == "b" and d.flush() == "" and d.invalid == 0


def test_per_char_losses_comparable():
    text = "aé世😀b"                                     # 5 characters, 1+2+3+4+1 = 11 bytes
    ids = ByteVocab().encode(text)
    losses = np.ones(len(ids) - 1)                     # 1 nat for every predicted byte
    r = per_char_losses(losses, ids)
    assert r["bytes"] == 10 and r["loss_per_byte"] == 1.0
    # characters 2..5 are é世😀b: 2+3+4+1 = 10 bytes -> 10 nats over 4 characters
    assert r["chars"] == 4 and r["loss"] == pytest.approx(10 / 4)
    assert r["bits_per_char"] == pytest.approx(10 / 4 / np.log(2))
    assert r["bytes_per_char"] == pytest.approx(11 / 5)
    with pytest.raises(CharwiseError):
        per_char_losses(np.ones(1), ByteVocab().encode("世"))
