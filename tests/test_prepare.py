"""`charwise prepare`: many files -> one memory-mapped corpus, and training straight from it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import charwise.data.corpus as data
from charwise.cli import main
from charwise.data.corpus import load_prepared
from charwise.data.prepare import prepare
from charwise.data.vocab import token_dtype
from charwise.errors import CharwiseError
from charwise.runs.rundir import read_run

DOCS = {"b/2.txt": "second — café\n", "a.txt": "first document\n", "b/1.txt": "naïve 🙂 emoji",
        "c/3.txt": "third\r\nCRLF"}
JOINED_ORDER = ["a.txt", "b/1.txt", "b/2.txt", "c/3.txt"]          # sorted as a tree


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "texts"
    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8", newline="")
    (root / ".hidden.txt").write_text("not me")                       # skipped: hidden file
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text("nor me")                    # skipped: hidden directory
    (root / "c" / "empty.txt").write_text("")                         # skipped: empty
    return root


def decoded(corpus):
    return corpus.vocab.decode(corpus.tokens)


def test_directory_becomes_one_corpus_with_separators(tree, tmp_path):
    res = prepare([tree], tmp_path / "p")
    c = load_prepared(tmp_path / "p")
    expected = "\n\n".join(DOCS[k] for k in JOINED_ORDER)
    assert decoded(c) == expected
    assert isinstance(c.tokens, np.memmap) and c.tokens.dtype == np.uint8
    assert list(c.vocab.chars) == sorted(set(expected))
    assert [s["path"] for s in res["sources"]] == [str(tree / k) for k in JOINED_ORDER]
    assert res["length"] == len(expected) == len(c.tokens)
    meta = json.loads((tmp_path / "p" / "prepared.json").read_text())
    assert meta["format_version"] == 1 and meta["separator"] == "\n\n" and meta["dtype"] == "uint8"
    assert meta["sources"][0]["bytes"] == len(DOCS["a.txt"].encode())
    assert c.sha256 == meta["sha256"] and c.source == str(tmp_path / "p")


def test_many_files_custom_separator_and_cli(tree, tmp_path, capsys):
    files = [str(tree / k) for k in ("c/3.txt", "a.txt")]               # given order is kept
    assert main(["prepare", *files, "--out", str(tmp_path / "p"), "--separator", r"\n<|>\n"]) == 0
    assert "prepared 2 files" in capsys.readouterr().out
    assert decoded(load_prepared(tmp_path / "p")) == DOCS["c/3.txt"] + "\n<|>\n" + DOCS["a.txt"]
    # one document: no separator, so its characters are not in the vocabulary either
    prepare([tree / "a.txt"], tmp_path / "one", separator="§")
    assert "§" not in load_prepared(tmp_path / "one").vocab.chars
    # the shell's escapes are --stop's: \t, \\, \xHH read; an unknown one refused in one line,
    # with nothing written
    assert main(["prepare", *files, "--out", str(tmp_path / "e"), "--separator", r"a\tb\\n\x21"]) == 0
    assert decoded(load_prepared(tmp_path / "e")) == DOCS["c/3.txt"] + "a\tb\\n!" + DOCS["a.txt"]
    capsys.readouterr()
    assert main(["prepare", *files, "--out", str(tmp_path / "q"), "--separator", r"\q"]) == 2
    assert capsys.readouterr().err.strip().endswith("--separator: unknown escape '\\\\q' (write \\\\ for a backslash)")
    assert not (tmp_path / "q").exists()


def test_chunked_encoding_equals_whole_text(tmp_path, monkeypatch):
    text = "".join(chr(0x61 + (i * 7) % 26) + ("é" if i % 13 == 0 else "") + ("🙂" if i % 101 == 0 else "")
                   for i in range(6000))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    (tmp_path / "u.txt").write_text(text[::-1], encoding="utf-8")
    monkeypatch.setattr(data, "CHUNK_BYTES", 97)       # splits multi-byte characters across chunks
    prepare([tmp_path / "t.txt", tmp_path / "u.txt"], tmp_path / "p")
    whole = data.Corpus.from_text(text + "\n\n" + text[::-1])
    c = load_prepared(tmp_path / "p")
    assert c.vocab == whole.vocab and np.array_equal(c.tokens, whole.tokens)
    # train's character counts, taken a chunk at a time from the memmap, are exact too
    counts = data.token_counts(c.tokens, len(c.vocab), chunk=1000)
    assert np.array_equal(counts, np.bincount(whole.tokens, minlength=len(c.vocab)))


@pytest.fixture
def one_thread():
    # one torch thread: two oversubscribe a busy 2-core machine (10x slower); restored after
    import torch
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_train_from_prepared_dir_and_resume(tree, tmp_path, one_thread):
    from charwise.training import train
    prep = tmp_path / "p"
    prepare([tree] * 20, prep)                         # ~1.3k chars: enough windows for the spec model
    out = tmp_path / "run"
    r = train(str(prep), out=out, preset="spec", max_steps=5, threads=one_thread, progress=False,
              log=lambda *a: None)
    assert r.steps == 5
    info = read_run(out)
    assert info["corpus"]["source"] == str(prep) and info["vocab"] == list(load_prepared(prep).vocab.chars)
    assert not (out / "cache").exists() or not any((out / "cache").iterdir())   # never copied
    r2 = train(out=out, resume=True, max_steps=8, progress=False, log=lambda *a: None)
    assert r2.steps == 8 and read_run(out)["corpus"]["sha256"] == info["corpus"]["sha256"]


def test_train_on_plain_directory_says_prepare(tree, tmp_path, capsys):
    assert main(["train", str(tree), "--out", str(tmp_path / "r"), "--max-steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a prepared corpus" in err and "charwise prepare" in err and "\n" not in err


def _damage(prep, **changes):
    meta = json.loads((prep / "prepared.json").read_text())
    meta.update(changes)
    (prep / "prepared.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case, match", [
    ("short", r"bytes, but prepared.json says .* do not match"),
    ("bad_id", r"token id 200, outside the vocabulary"),
    ("version", r"format_version 99 is not one this charwise reads"),
    ("dtype", r"dtype uint8 does not fit a vocabulary of 300"),
    ("no_tokens", r"tokens.bin: missing"),
])
def test_prepared_dir_not_matching_its_metadata(tree, tmp_path, case, match):
    prep = tmp_path / "p"
    prepare([tree], prep)
    tok = prep / "tokens.bin"
    if case == "short":
        tok.write_bytes(tok.read_bytes()[:-1])
    elif case == "bad_id":
        tok.write_bytes(tok.read_bytes()[:-1] + bytes([200]))
    elif case == "version":
        _damage(prep, format_version=99)
    elif case == "dtype":
        _damage(prep, chars=[chr(0x100 + i) for i in range(300)])
    else:
        tok.unlink()
    with pytest.raises(CharwiseError, match=match):
        load_prepared(prep)


def test_bad_inputs(tree, tmp_path, capsys):
    out = str(tmp_path / "p")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    (tmp_path / "hollow").mkdir()
    (tmp_path / "hollow" / ".only-hidden").write_text("x")
    for argv, match in [
        ([str(tmp_path / "missing.txt")], "missing.txt: no such file"),
        ([str(tmp_path / "empty.txt")], "empty.txt: file is empty"),
        ([str(tmp_path / "bom.txt")], "the inputs hold no text"),
        ([str(tmp_path / "hollow")], "hollow: no non-empty text files inside"),
    ]:
        assert main(["prepare", *argv, "--out", out]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    assert main(["prepare", str(tree), "--out", out]) == 0
    assert main(["prepare", str(tree), "--out", out]) == 2            # non-empty --out
    assert "not empty (use --force" in capsys.readouterr().err
    assert main(["prepare", str(tree / "a.txt"), "--out", out, "--force"]) == 0
    assert decoded(load_prepared(out)) == DOCS["a.txt"]
    assert main(["prepare", out, "--out", str(tmp_path / "q")]) == 2  # a prepared dir is not text
    assert "already a prepared corpus" in capsys.readouterr().err
    with pytest.raises(CharwiseError, match="must fit in uint32"):
        token_dtype(2**32 + 1)


_CHILD = """
import os, sys, resource
import charwise.data.corpus as data
data.CHUNK_BYTES = 1 << 20                  # the same chunk for both sizes: only the size differs
from charwise.cli import main
rc = main(["prepare", sys.argv[1], "--out", sys.argv[2]])
sys.exit(rc)
"""


def _peak_rss_kb(text_path, out):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(text_path), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)     # this child's own rusage, not all children's max
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read()
    return usage.ru_maxrss                       # KiB on Linux


def test_peak_memory_does_not_grow_with_corpus_size(tmp_path):
    block = ("the quick brown fox jumps over the lazy dog — déjà vu 🙂\n" * 18000).encode()  # ~1 MB
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_bytes(block)
    with open(big, "wb") as f:
        for _ in range(20):
            f.write(block)
    base = _peak_rss_kb(small, tmp_path / "ps")
    grown = _peak_rss_kb(big, tmp_path / "pb")
    n_small, n_big = (len(load_prepared(tmp_path / d).tokens) for d in ("ps", "pb"))
    assert n_big == 20 * n_small
    assert grown - base < 10 * 1024, (base, grown)      # 20 MB of text adds < 10 MB of memory


@pytest.mark.parametrize("where", [".", "cache", "cache/deeper"])
def test_prepare_never_writes_into_a_run_directory(tree, tmp_path, capsys, where):
    """--force let prepare write tokens.bin and prepared.json into a run's directory (or one
    inside it, e.g. its cache/), like export and plot refuse to, --force or not."""
    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    out = run / where
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for force in ([], ["--force"]):
        assert main(["prepare", str(tree), "--out", str(out), *force]) == 2
        err = capsys.readouterr().err
        assert err.startswith("charwise: error: ") and err.count("\n") == 1, err
        assert f"lies in the run directory {run}" in err
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


@pytest.mark.parametrize("files", [{"tokens.bin": "my data", "prepared.json": '{"mine": 1}'},
                                   {"tokens.bin": "my data"}, {"prepared.json": "not json"}])
def test_force_replaces_a_prepared_corpus_not_a_users_files_of_the_same_names(tree, tmp_path, capsys, files):
    """prepare --force overwrote a user's tokens.bin and prepared.json that were no prepared corpus."""
    out = tmp_path / "foreign"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    assert main(["prepare", str(tree), "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert "not a prepared corpus" in err and err.count("\n") == 1, err
    assert {p.name: p.read_text() for p in out.iterdir()} == files


def test_nothing_else_writes_into_a_prepared_corpus(tree, tmp_path, capsys, trained_run):
    """`pack -o PREPARED/tokens.bin --force` broke a prepared corpus, and `train --out PREPARED
    --force` wrote a run beside it; prepare refuses the reverse (a run's directory) already."""
    out = tmp_path / "prep"
    assert main(["prepare", str(tree), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for argv in (["pack", str(trained_run), "-o", str(out / "tokens.bin"), "--force"],
                 ["train", str(tree / "a.txt"), "--out", str(out), "--force", "--max-steps", "1"],
                 ["export", str(trained_run), "--out", str(out / "m.onnx")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"lies in the prepared corpus {out.resolve()}" in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["prepare", str(tree), "--out", str(out), "--force"]) == 0      # prepare itself may
