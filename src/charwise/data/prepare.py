"""`charwise prepare`: many or huge text files -> one encoded corpus that training memory-maps.

    DIR/tokens.bin     the token ids, flat, in the smallest unsigned dtype that fits
    DIR/prepared.json  format_version, vocabulary, dtype, length, the sources (path, bytes,
                       chars, sha256), separator, encoding, and a sha256 naming the whole corpus

Inputs are text files and/or directories (every regular file inside, recursively, sorted by
path; hidden files and directories are skipped, as is any directory holding a prepared.json,
which is a charwise output and not text). The documents, in that order, are joined by a
separator (default "\\n\\n": a blank line, so a paragraph never runs into the next file).

Like `data.prepare_corpus`, everything is read in chunks twice -- pass 1 builds the
vocabulary, pass 2 encodes straight into the output file -- so memory stays flat however
large the corpus is. `charwise train DIR` then maps tokens.bin as it is: no re-encoding and
no copy into the run, so a run on gigabytes starts in seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CharwiseError
from ..guards import check_own_run, check_utf8_path
from ..runs.bundled import sha256_file
from ..runs.rundir import atomic_write_json, atomic_writer, check_run_start, read_json
from ..runs.runlock import RunLock
from ..settings.commands import PrepareOptions
from . import corpus as data
from .corpus import META, TOKENS, load_prepared
from .corpus import PREPARED_VERSION as FORMAT_VERSION
from .vocab import Vocab, token_dtype

_MAX_CP = 0x110000              # every code point (and surrogate) is below this


@dataclass
class Source:
    path: Path
    size: int
    mtime_ns: int
    sha256: str = ""
    chars: int = 0


# ----------------------------------------------------------------------------- inputs

def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, skip: Path | None) -> list[Path]:
    """The regular files under `root`, sorted by path (as a tree: a/b before a-c/...)."""
    if (root / META).exists():
        raise CharwiseError(f"{root}: is already a prepared corpus, not text "
                            f"(train on it directly: charwise train {root})")
    found = []
    # symlinked directories are not followed (no loops); symlinked files are read
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        here = Path(dirpath)
        # prune in place: hidden dirs, the output itself, and earlier prepare outputs
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)
                       and (here / d).resolve() != skip and not (here / d / META).exists()]
        for name in filenames:
            p = here / name
            try:
                st = p.stat()
            except OSError:
                continue                        # a dangling link is not a document
            if not _is_hidden(name) and stat.S_ISREG(st.st_mode):
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _raise(err: OSError):
    raise CharwiseError(f"{err.filename}: cannot read ({err.strerror})")


def collect_sources(inputs, out: Path | None = None) -> list[Source]:
    """Files named directly must be non-empty text files; inside directories empty files are
    skipped (they contribute nothing but a doubled separator)."""
    if not inputs:
        raise CharwiseError("no corpus files given")
    skip = out.resolve() if out is not None else None
    sources: list[Source] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = [p for p in _walk(item, skip) if p.stat().st_size > 0]
            if not files:
                raise CharwiseError(f"{item}: no non-empty text files inside (hidden files are skipped)")
        else:
            files = [data.check_text_file(item)]     # missing, empty, not regular: said here
        for p in files:
            check_utf8_path(p)                      # prepared.json records each source's path
            if not os.access(p, os.R_OK):
                raise CharwiseError(f"{p}: permission denied")
            st = p.stat()
            sources.append(Source(p, st.st_size, st.st_mtime_ns))
    return sources


def _unchanged(s: Source) -> None:
    st = s.path.stat()
    if (st.st_size, st.st_mtime_ns) != (s.size, s.mtime_ns):
        raise CharwiseError(f"{s.path}: changed while it was being prepared; run charwise prepare again")


def _check_out(inputs, out, force: bool) -> Path:
    if not inputs or not out:
        raise CharwiseError("prepare needs input files or directories and --out DIR "
                            "(or --verify DIR)")
    check_own_run(check_utf8_path(out) / META, None)    # a run's directory, or one inside it
    out = check_run_start(out, force=force, hint="use --force to replace a prepared corpus there",
                          prepared=True)
    if force and ((out / META).exists() or (out / TOKENS).exists()):
        _check_prepared(out)
    return out


def _check_prepared(out: Path) -> None:
    """--force replaces a prepared corpus: a prepared.json that is charwise's (a JSON object
    with its format_version), not a user's files that share the names."""
    why = f"no {META} beside {TOKENS}"
    if (out / META).is_file():
        try:
            meta = read_json(out / META)
            why = "" if isinstance(meta, dict) and "format_version" in meta else f"{META} is not charwise's"
        except CharwiseError as e:
            why = str(e)
    if why:
        raise CharwiseError(f"{out}: not a prepared corpus ({why}); --force replaces only one of "
                            "those (move these files yourself)")


# ----------------------------------------------------------------------------- prepare

def prepare(inputs, out, options: PrepareOptions | None = None, **kw) -> dict:
    """Join and encode `inputs` (text files and directories) into the directory `out`; returns
    prepared.json's content plus timings. Options: PrepareOptions (separator: the text itself,
    encoding, force), or its fields as keyword arguments. `out`'s run lock is held while it is
    written (no `charwise train` writes there meanwhile, nor another prepare); on a failure
    (a full disk, a source changed) the files and the directory this call created go again."""
    o = PrepareOptions.make(options, **kw)
    t0 = time.perf_counter()
    out = _check_out(inputs, out, o.force)
    sources = collect_sources(inputs, out)
    with RunLock(out):
        _check_out(inputs, out, o.force)           # again, now that no one else writes there
        made = [p for p in (out / TOKENS, out / META) if not p.exists()]
        try:
            meta = _encode(out, sources, o.separator, o.encoding)
        except BaseException:
            for p in made:
                p.unlink(missing_ok=True)
            raise                                  # the lock's release removes a dir it made
    seconds = time.perf_counter() - t0
    size = sum(s["bytes"] for s in meta["sources"])
    return {**meta, "out": str(out), "bytes": size, "seconds": seconds}


def _vocabulary(sources: list[Source], separator: str, encoding: str) -> tuple[list[Source], np.ndarray]:
    """Pass 1: (the documents, the code points of the corpus). Which code points occur (a
    1.1M-entry mask: a scatter per chunk, no sorting), and how many characters each document
    has, for the separator rule below. The files' SHA-256 run on a second thread meanwhile
    (hashlib lets go of the GIL)."""
    seen = np.zeros(_MAX_CP, dtype=bool)
    chunk = data.CHUNK_BYTES                   # read at call time: tests shrink it
    with ThreadPoolExecutor(1) as pool:
        shas = [pool.submit(sha256_file, s.path) for s in sources]
        for s in sources:
            for text in data.iter_text_chunks(s.path, encoding, chunk):
                seen[_cps(text)] = True
                s.chars += len(text)
        for s, sha in zip(sources, shas):
            s.sha256 = sha.result()
    docs = [s for s in sources if s.chars]     # a file of only a BOM is no document
    if not docs:
        raise CharwiseError("the inputs hold no text")
    # The separator goes *between* documents only, so its characters join the vocabulary
    # only when it is written: the vocabulary is always exactly sorted(set(corpus text)).
    if len(docs) > 1:
        seen[_cps(separator)] = True
    return docs, np.flatnonzero(seen)


def _encode(out: Path, sources: list[Source], separator: str, encoding: str) -> dict:
    """Both passes; writes tokens.bin, then prepared.json, and returns prepared.json's content."""
    docs, cps = _vocabulary(sources, separator, encoding)
    sep = _cps(separator) if len(docs) > 1 else np.zeros(0, np.uint32)
    try:
        dtype = token_dtype(len(cps))
    except CharwiseError:
        raise CharwiseError(f"the inputs use {len(cps):,} distinct characters, more than the "
                            f"largest token dtype (uint32) can number") from None
    vocab = Vocab(tuple(chr(c) for c in cps))
    # code point -> id, over all code points, so a lookup can never go out of range; a file
    # edited between the passes is caught by _unchanged instead.
    lut = np.zeros(_MAX_CP, dtype=dtype)
    lut[cps] = np.arange(len(cps))
    # Pass 2: encode chunk by chunk straight into tokens.bin. prepared.json goes first when
    # replacing and is written last: its presence marks a complete, consistent pair.
    (out / META).unlink(missing_ok=True)
    length = 0
    tokens_hash = hashlib.sha256()             # of tokens.bin as written: `prepare --verify`
    with atomic_writer(out / TOKENS) as f:
        for i, s in enumerate(docs):
            if i:
                f.write(lut[sep])
                tokens_hash.update(lut[sep])
                length += len(sep)
            for text in data.iter_text_chunks(s.path, encoding, data.CHUNK_BYTES):
                ids = lut[_cps(text)]
                f.write(ids)                   # numpy arrays write their buffer: no bytes copy
                tokens_hash.update(ids)
                length += len(text)
            _unchanged(s)
    expected = sum(s.chars for s in docs) + len(sep) * (len(docs) - 1)
    assert length == expected, (length, expected)
    meta = {
        "format_version": FORMAT_VERSION, "chars": list(vocab.chars), "dtype": dtype.name,
        "length": length, "separator": separator, "encoding": encoding,
        "sha256": corpus_digest([s.sha256 for s in docs], separator, encoding),
        "tokens_sha256": tokens_hash.hexdigest(),
        "sources": [{"path": str(s.path), "bytes": s.size, "chars": s.chars, "sha256": s.sha256}
                    for s in docs],
    }
    atomic_write_json(out / META, meta)
    return meta


def _cps(text: str) -> np.ndarray:
    # as vocab.codepoints, minus the int64 copy: uint32 indexes the tables just as well
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def corpus_digest(shas: list[str], separator: str, encoding: str) -> str:
    """Names the prepared corpus (what run.json records): its sources, in order, and how they
    were joined and decoded. Cheap to compute, unlike a hash of gigabytes of tokens."""
    key = json.dumps({"sources": shas, "separator": separator, "encoding": encoding})
    return hashlib.sha256(key.encode()).hexdigest()


def summary_line(res: dict) -> str:
    mb = res["bytes"] / 1e6
    files = len(res["sources"])
    return (f"prepared {files} file{'s' * (files != 1)} ({mb:,.1f} MB) -> {res['out']}: "
            f"{res['length']:,} chars, vocabulary {len(res['chars'])} ({res['dtype']}), "
            f"{res['seconds']:.1f}s ({mb / max(res['seconds'], 1e-9):,.1f} MB/s)")


# ----------------------------------------------------------------------------- load

def is_prepared(path) -> bool:
    return Path(path).is_dir() and (Path(path) / META).is_file()


def verify(path) -> dict:
    """`charwise prepare --verify DIR`: re-hash tokens.bin against the sha256 prepared.json
    recorded when it was written, and each source file still present against its sha256.
    Returns what was checked; a mismatch is a CharwiseError naming the file."""
    corpus = load_prepared(path)                 # the cheap checks first (sizes, ids at the ends)
    d = Path(path)
    meta = read_json(d / META)
    want = meta.get("tokens_sha256")
    if not isinstance(want, str):
        raise CharwiseError(f"{d / META}: records no tokens_sha256 (prepared by an older "
                            "charwise); prepare the corpus again to be able to verify it")
    got = sha256_file(d / TOKENS)
    if got != want:
        raise CharwiseError(f"{d / TOKENS}: sha256 {got[:12]}... differs from the "
                            f"{want[:12]}... recorded in {META}: the file was changed or damaged "
                            "(prepare the corpus again)")
    changed, missing = [], []
    for src in meta.get("sources") or []:
        sp = Path(str(src.get("path", "")))
        if not sp.is_file():
            missing.append(str(sp))
        elif sha256_file(sp) != src.get("sha256"):
            changed.append(str(sp))
    return {"path": str(d), "tokens": len(corpus.tokens), "tokens_sha256": got,
            "sources_changed": changed, "sources_missing": missing}
