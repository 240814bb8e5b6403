"""Text in, tokens out: reading text files, corpus preparation and caching, the
train/validation split, and reading a prepared corpus (the vocabulary itself is vocab.py's; the
training batches cut from a corpus are training/batches.py's).

A corpus is read in chunks twice (once for the vocabulary, once to encode), so memory does
not grow with its size; the tokens land in a flat binary file (uint8/16/32, the smallest that
fits) that is memory-mapped for training and keyed by the file's content hash, so an edited
file is re-encoded and an unchanged one is not.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CharwiseError
from ..guards import PREPARED_JSON
from ..runs.bundled import corpus_path as bundled_corpus_path
from ..runs.bundled import sha256_file
from ..runs.rundir import atomic_write_json, atomic_writer, read_json
from ..settings.options import check_encoding
from .bytevocab import ByteVocab
from .vocab import AnyVocab, Vocab, codepoints

# UnknownChars, vocab_from_info and vocab_record are re-exported for generation/charmodel.py,
# training/trainer.py and server.py, which import them from here (being rewritten elsewhere);
# new code imports them from data/vocab.py.

CHUNK_BYTES = 1 << 24            # 16 MiB of text per chunk: fast, and bounded memory


# ----------------------------------------------------------------------------- reading text

def check_text_file(path: str | os.PathLike) -> Path:
    """A readable regular, non-empty file, or a CharwiseError saying what it is instead."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CharwiseError(f"{p}: no such file") from None
    except OSError as e:
        raise CharwiseError(f"{p}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CharwiseError(f"{p}: is a directory, expected a text file")
    if not stat.S_ISREG(st.st_mode):
        raise CharwiseError(f"{p}: is not a regular file")
    if not os.access(p, os.R_OK):
        raise CharwiseError(f"{p}: permission denied")
    if st.st_size == 0:
        raise CharwiseError(f"{p}: file is empty")
    return p


def iter_text_chunks(path: Path, encoding: str = "utf-8", chunk_bytes: int | None = None,
                     hasher: Any = None):
    """Decoded text of `path` in chunks; BOM stripped; bad bytes reported with their offset.
    `hasher` (a hashlib object) is fed the bytes as they are read."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES     # looked up now, not at import: tests shrink it
    decoder = codecs.getincrementaldecoder(check_encoding(encoding))("strict")
    offset, first = 0, True
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = len(raw) < chunk_bytes
            if hasher is not None:
                hasher.update(raw)
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as e:
                raise CharwiseError(f"{path}: not valid {encoding} text (bad byte at offset "
                                    f"{offset + e.start})") from None
            offset += len(raw)
            if first and text.startswith("\ufeff"):
                text = text[1:]
            first = first and not text
            if "\x00" in text:
                raise CharwiseError(f"{path}: contains NUL bytes (binary file?), "
                                    f"first near byte {offset - len(raw) + text.index(chr(0))}")
            if text:
                yield text
            if final:
                return


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    p = check_text_file(path)
    text = "".join(iter_text_chunks(p, encoding))
    if not text:
        raise CharwiseError(f"{p}: holds no text")
    return text


# ----------------------------------------------------------------------------- corpus

@dataclass
class Corpus:
    """Encoded text: `tokens` is a (possibly memory-mapped) 1-D array of ids into `vocab`."""
    vocab: AnyVocab
    tokens: np.ndarray
    source: str = ""
    sha256: str = ""

    @classmethod
    def from_text(cls, text: str, vocab: Vocab | None = None) -> "Corpus":
        if not text:
            raise CharwiseError("text is empty")
        vocab = vocab or Vocab.from_text(text)
        return cls(vocab, vocab.encode(text).astype(vocab.dtype))

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Contiguous split: the last `val_fraction` of the text is validation (as nanoGPT)."""
        n_val = int(len(self.tokens) * val_fraction)
        return self.tokens[: len(self.tokens) - n_val], self.tokens[len(self.tokens) - n_val:]


def byte_corpus(path: str | os.PathLike | None, encoding: str = "utf-8") -> Corpus:
    """A text file as UTF-8 bytes (--vocab bytes): checked as text chunk by chunk (bad bytes
    reported with their offset), then memory-mapped as it is, a BOM skipped: no copy, no cache."""
    if path is not None and Path(path).is_dir():
        raise CharwiseError(f"{path}: --vocab bytes trains from a text file, not a prepared "
                            "directory")
    if codecs.lookup(encoding).name != "utf-8":
        raise CharwiseError(f"--vocab bytes models UTF-8 bytes; the corpus is {encoding} "
                            "(convert it to UTF-8 first, e.g. with iconv)")
    p = check_text_file(path if path is not None else bundled_corpus_path())
    if sum(1 for _ in iter_text_chunks(p, "utf-8")) == 0:      # reads (checks) the whole file
        raise CharwiseError(f"{p}: holds no text")
    with open(p, "rb") as f:
        skip = 3 if f.read(3) == codecs.BOM_UTF8 else 0
    tokens = np.memmap(p, dtype=np.uint8, mode="r", offset=skip)
    return Corpus(ByteVocab(), tokens, str(p), sha256_file(p))


def prepare_corpus(path: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None,
                   encoding: str = "utf-8", vocab_kind: str = "chars") -> Corpus:
    """Read, build the vocabulary and encode `path` (the bundled corpus when None); with
    vocab_kind="bytes", its UTF-8 bytes (byte_corpus).

    With `cache_dir`, the tokens are stored there as `<sha256>.tokens` + `<sha256>.json` and
    memory-mapped; a later call with an unchanged file reuses them. A file that changes while
    it is read is a CharwiseError, and nothing of it is cached.
    """
    if vocab_kind == "bytes":
        return byte_corpus(path, encoding)
    if path is not None and Path(path).is_dir():
        # a `charwise prepare` output is used as it is (memory-mapped, never copied); any
        # other directory is an error that says how to make one
        return load_prepared(path)
    p = check_text_file(path if path is not None else bundled_corpus_path())
    digest = sha256_file(p)
    if cache_dir is not None:
        cache = Path(cache_dir)
        meta_path, tok_path = cache / f"{digest}.json", cache / f"{digest}.tokens"
        if meta_path.exists() and tok_path.exists():
            try:
                meta = read_json(meta_path)            # bounded, a regular file only
                if meta.get("encoding") == encoding:
                    vocab = Vocab(tuple(meta["chars"]))
                    tokens = np.memmap(tok_path, dtype=vocab.dtype, mode="r")
                    if len(tokens) == meta["length"]:
                        return Corpus(vocab, tokens, str(p), digest)
            except (ValueError, KeyError, TypeError, AttributeError, CharwiseError):
                pass                                    # a damaged cache is rebuilt below
    # Pass 1: vocabulary from the code points of every chunk; pass 2: encode chunk by chunk,
    # straight to the output (a file when caching). Each pass hashes the bytes it reads, and
    # both must be the bytes `digest` names: a file edited while it is read is refused, never
    # encoded with a vocabulary it does not match, never cached.
    hasher = hashlib.sha256()
    seen: set[int] = set()
    for text in iter_text_chunks(p, encoding, hasher=hasher):
        seen.update(np.unique(codepoints(text)).tolist())
    _read_as_hashed(p, hasher, digest)
    if not seen:
        raise CharwiseError(f"{p}: holds no text")
    vocab = Vocab(tuple(chr(c) for c in sorted(seen)))
    lut = np.zeros(0x110000, dtype=vocab.dtype)      # every code point: no index out of range
    lut[sorted(seen)] = np.arange(len(seen))
    hasher = hashlib.sha256()
    if cache_dir is None:
        parts = [lut[codepoints(t)] for t in iter_text_chunks(p, encoding, hasher=hasher)]
        _read_as_hashed(p, hasher, digest)
        return Corpus(vocab, np.concatenate(parts), str(p), digest)
    cache.mkdir(parents=True, exist_ok=True)
    length = 0
    with atomic_writer(tok_path) as out:
        for text in iter_text_chunks(p, encoding, hasher=hasher):
            ids = lut[codepoints(text)]
            out.write(ids.tobytes())
            length += len(ids)
        _read_as_hashed(p, hasher, digest)             # inside: a mismatch keeps no file
    atomic_write_json(meta_path, {"source": str(p), "sha256": digest, "encoding": encoding,
                                  "chars": list(vocab.chars), "dtype": vocab.dtype.name,
                                  "length": length})
    return Corpus(vocab, np.memmap(tok_path, dtype=vocab.dtype, mode="r"), str(p), digest)


def _read_as_hashed(path: Path, hasher: Any, digest: str) -> None:
    if hasher.hexdigest() != digest:
        raise CharwiseError(f"{path}: changed while it was read (its sha256 differs between "
                            "passes); run again once it is no longer being written")


def token_counts(tokens: np.ndarray, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """Occurrences of each id, a chunk at a time: np.bincount widens its whole input to int64,
    8 bytes per token, which for a memory-mapped gigabyte corpus would not fit."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i in range(0, len(tokens), chunk):
        counts += np.bincount(np.asarray(tokens[i:i + chunk]), minlength=vocab_size)
    return counts


# ----------------------------------------------------------------------------- prepared corpora

# A `charwise prepare` output (prepare.py writes it; training reads it here):
#     DIR/tokens.bin     the token ids, flat, in the smallest unsigned dtype that fits
#     DIR/prepared.json  format_version, vocabulary, dtype, length, sources, sha256
PREPARED_VERSION = 1
META, TOKENS = PREPARED_JSON, "tokens.bin"
CHECK_TOKENS = 1 << 20          # load_prepared checks this many ids at each end: cheap, catches junk


def load_prepared(path) -> Corpus:
    """A `charwise prepare` directory as a Corpus whose tokens are memory-mapped, read-only."""
    d = Path(path)
    if not d.exists():
        raise CharwiseError(f"{d}: no such file or directory")
    if not (d / META).is_file():
        raise CharwiseError(f"{d}: is a directory but not a prepared corpus (no {META}); "
                            f"make one with: charwise prepare {d} --out PREPARED_DIR")
    meta = read_json(d / META)
    where = d / META
    if not isinstance(meta, dict) or meta.get("format_version") != PREPARED_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CharwiseError(f"{where}: format_version {version!r} is not one this charwise reads "
                            f"({PREPARED_VERSION}); prepare the corpus again")
    try:
        vocab = Vocab(tuple(meta["chars"]))
        dtype, length, digest = np.dtype(meta["dtype"]), int(meta["length"]), str(meta["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise CharwiseError(f"{where}: damaged metadata ({e.__class__.__name__}: {e})") from None
    if dtype != vocab.dtype:
        raise CharwiseError(f"{where}: dtype {dtype.name} does not fit a vocabulary of "
                            f"{len(vocab)} characters (expected {vocab.dtype.name})")
    tok = d / TOKENS
    try:
        size = tok.stat().st_size
    except FileNotFoundError:
        raise CharwiseError(f"{tok}: missing; prepare the corpus again") from None
    if length < 1 or size != length * dtype.itemsize:
        raise CharwiseError(f"{tok}: {size:,} bytes, but {META} says {length:,} tokens of "
                            f"{dtype.itemsize} byte(s); the files do not match (prepare again)")
    tokens = np.memmap(tok, dtype=dtype, mode="r", shape=(length,))
    # A quick look at both ends, not a full scan (which would cost seconds per gigabyte).
    for part in (tokens[:CHECK_TOKENS], tokens[-CHECK_TOKENS:]):
        if int(part.max()) >= len(vocab):
            raise CharwiseError(f"{tok}: holds token id {int(part.max())}, outside the "
                                f"vocabulary of {len(vocab)}; the files do not match (prepare again)")
    return Corpus(vocab, tokens, str(d), digest)
