import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charwise.data.corpus import Corpus, prepare_corpus, read_text
from charwise.data.vocab import Vocab, token_dtype
from charwise.errors import CharwiseError
from charwise.runs.bundled import corpus_path as bundled_corpus_path
from charwise.training.batches import StreamBatches


def test_vocab_is_sorted_set_as_in_spec():
    text = bundled_corpus_path().read_text(encoding="utf-8")
    v = Vocab.from_text(text)
    assert list(v.chars) == sorted(set(text))
    assert len(v) == 38                      # the chapter's corpus has 38 distinct characters
    assert v.decode(v.encode(text)) == text


@pytest.mark.parametrize("text", ["naïve café — “quoted”", "日本語のテキスト", "emoji 🙂🚀 mix\n", "tab\tand\r\nCRLF"])
def test_round_trip_any_script(text):
    v = Vocab.from_text(text)
    ids = v.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(text)
    assert v.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_round_trip_property(text):
    v = Vocab.from_text(text)
    assert v.decode(v.encode(text)) == text
    assert v.unknown(text) == []


def test_oov_error_names_characters_and_skip_drops_them():
    v = Vocab.from_text("abc")
    with pytest.raises(CharwiseError, match=r"'z'.*'é'"):
        v.encode("abzé")
    assert v.decode(v.encode("abzé", oov="skip")) == "ab"


def test_token_dtype_is_smallest_that_fits():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(70000) == np.uint32


def test_prepare_caches_by_content_hash(tmp_path, text_file):
    p = text_file("hello world, hello there\n" * 10)
    c1 = prepare_corpus(p, cache_dir=tmp_path / "cache")
    assert isinstance(c1.tokens, np.memmap) and c1.tokens.dtype == np.uint8
    assert c1.vocab.decode(c1.tokens) == p.read_text()
    files = sorted(f.name for f in (tmp_path / "cache").iterdir())
    assert files == [f"{c1.sha256}.json", f"{c1.sha256}.tokens"]
    c2 = prepare_corpus(p, cache_dir=tmp_path / "cache")           # reused
    assert c2.sha256 == c1.sha256 and np.array_equal(c2.tokens, c1.tokens)
    p.write_text("an edited file with new letters: XYZ\n" * 5)       # re-encoded
    c3 = prepare_corpus(p, cache_dir=tmp_path / "cache")
    assert c3.sha256 != c1.sha256 and "X" in c3.vocab.chars
    assert c3.vocab.decode(c3.tokens) == p.read_text()


def test_chunked_preparation_equals_whole_text(tmp_path, text_file, monkeypatch):
    import charwise.data.corpus as data
    text = "".join(chr(0x61 + (i * 7) % 26) + ("é" if i % 13 == 0 else "") for i in range(5000))
    p = text_file(text)
    monkeypatch.setattr(data, "CHUNK_BYTES", 97)    # split multi-byte characters across chunks
    c = prepare_corpus(p, cache_dir=tmp_path / "c")
    assert c.vocab.decode(c.tokens) == text
    assert list(c.vocab.chars) == sorted(set(text))


def test_bom_stripped_and_encoding_option(text_file):
    assert read_text(text_file("\ufeffhello".encode("utf-8"))) == "hello"
    assert read_text(text_file("déjà vu".encode("latin-1"), "l1.txt"), encoding="latin-1") == "déjà vu"


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"ok text \xff\xfe bad", r"not valid utf-8 text \(bad byte at offset 8\)"),
    (b"abc\x00def", "NUL"),
])
def test_bad_files(text_file, content, match):
    with pytest.raises(CharwiseError, match=match):
        read_text(text_file(content))


def test_missing_and_directory(tmp_path):
    with pytest.raises(CharwiseError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(CharwiseError, match="is a directory"):
        read_text(tmp_path)
    with pytest.raises(CharwiseError, match="not a regular file"):
        read_text("/dev/zero")


def test_split_is_contiguous_tail():
    c = Corpus.from_text("abcdefghij" * 10)
    tr, va = c.split(0.1)
    assert len(va) == 10 and len(tr) == 90
    assert np.array_equal(np.concatenate([tr, va]), c.tokens)


def test_tbptt_windows_are_contiguous_per_stream():
    tokens = np.arange(1000) % 251
    b = StreamBatches(tokens.astype(np.uint8), batch_size=4, seq_len=10, seed=3)
    L = b.stream_len
    for epoch in (0, 1):
        prev = None
        for k in range(b.windows_per_epoch):
            x, y = b.window(k, epoch)
            assert x.shape == y.shape == (4, 10)
            starts = b.start_offsets(k, epoch)
            assert np.array_equal(x[:, 0], tokens[starts] % 251)
            idx = (starts[:, None] + np.arange(10)) % b.n_inputs   # wraps at the text's end
            assert np.array_equal(x, tokens[idx]) and np.array_equal(y, tokens[idx + 1])
            if prev is not None:
                # window k+1 of a stream starts exactly where window k ended
                assert np.array_equal(starts, (prev + 10) % b.n_inputs)
            prev = starts
        # the streams are B disjoint stretches L apart
        s0 = b.start_offsets(0, epoch)
        assert np.array_equal((s0 - s0[0]) % b.n_inputs, np.arange(4) * L)
    assert b.phase(0) != b.phase(1) or b.phase(1) != b.phase(2)


def test_too_short_for_a_window():
    with pytest.raises(CharwiseError, match="too short"):
        StreamBatches(np.zeros(10, np.uint8), batch_size=1, seq_len=40)
