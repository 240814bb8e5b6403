"""`charwise sample --stop/--keep-stop/--beam/--new-only`, `charwise train --line-mode/--vocab
bytes` and what `charwise eval` prints for them, through the CLI's main()."""
import math
from pathlib import Path

import pytest

from charwise.cli import main

NAMES = Path(__file__).parent / "data" / "first_names.txt"


def cli(capsys, *args):
    code = main([str(a) for a in args])
    o, e = capsys.readouterr()
    return code, o, e


def one_line_error(code, err, match):
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charwise: error:") and match in lines[0], err


def test_sample_stop_with_escapes(trained_run, capsys):
    code, free, _ = cli(capsys, "sample", trained_run, "--prime", "Mr", "-n", 400, "--seed", 2)
    body = free.rstrip("\n")[2:]
    cut = body.index(" ")                          # the first space
    code, o, e = cli(capsys, "sample", trained_run, "--prime", "Mr", "-n", 400, "--seed", 2,
                     "--stop", r"\x20")               # an escape: a space
    assert code == 0 and o == "Mr" + body[:cut] + "\n"
    code, o, e = cli(capsys, "sample", trained_run, "--prime", "Mr", "-n", 400, "--seed", 2,
                     "--stop", r"\x20", "--keep-stop")
    assert o == "Mr" + body[:cut + 1] + "\n"
    code, o, e = cli(capsys, "sample", trained_run, "--prime", "Mr", "-n", 400, "--seed", 2,
                     "--num-samples", 3, "--stop", "e", "--stop", r"\t")
    samples = o.split("--- sample ")[1:]
    assert len(samples) == 3 and all("e" not in s.split("\n", 1)[1].rstrip("\n")[2:] for s in samples)


@pytest.mark.parametrize("args, match", [
    (["--stop", ""], "cannot be empty"),
    (["--stop", r"\q"], "unknown escape"),
    (["--beam", 0], "--beam must be in 1..64"),
    (["--beam", 65], "--beam must be in 1..64"),
    (["--beam", 3, "--temperature", 0.7], "drop --temperature"),
    (["--beam", 3, "--top-p", 0.9], "drop --top-p"),
    (["--beam", 3, "--top-k", 5], "drop --top-k"),
    (["--beam", 3, "--stop", "x"], "does not combine"),
    (["--new-only"], "--line-mode"),
])
def test_bad_generation_flags(trained_run, capsys, args, match):
    code, o, e = cli(capsys, "sample", trained_run, "--prime", "Mr", "-n", 20, *args)
    one_line_error(code, e, match)
    assert o == ""


def test_sample_beam(trained_run, capsys):
    code, o, e = cli(capsys, "sample", trained_run, "--prime", "Mr Bennet", "-n", 20, "--beam", 3)
    assert code == 0, e
    heads = [line for line in o.splitlines() if line.startswith("--- beam ")]
    lps = [float(h.split("log-probability ")[1].split()[0]) for h in heads]
    assert len(heads) == 3 and lps == sorted(lps, reverse=True) and all(lp < 0 for lp in lps)
    assert cli(capsys, "sample", trained_run, "--prime", "Mr Bennet", "-n", 20, "--beam", 3)[1] == o
    code, g, _ = cli(capsys, "sample", trained_run, "--prime", "Mr Bennet", "-n", 20, "--temperature", 0)
    code, b1, _ = cli(capsys, "sample", trained_run, "--prime", "Mr Bennet", "-n", 20, "--beam", 1)
    assert b1.splitlines()[1] == g.rstrip("\n")


@pytest.fixture(scope="module")
def names_cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "names"
    code = main(["train", str(NAMES), "--out", str(out), "--preset", "spec", "--line-mode",
                 "--max-steps", "40", "--hidden-size", "48", "--batch-size", "32", "--lr", "0.01",
                 "--val-fraction", "0.1", "--threads", "1", "--quiet"])
    assert code == 0
    return out


def test_line_mode_cli(names_cli_run, capsys):
    code, o, e = cli(capsys, "sample", names_cli_run, "-n", 12, "--seed", 0, "--temperature", 0.8)
    items = o.splitlines()
    assert code == 0 and len(items) == 12 and all(items)
    code, o, e = cli(capsys, "sample", names_cli_run, "-n", 8, "--seed", 0, "--new-only")
    items = o.splitlines()
    assert len(items) == 8 and not set(items) & set(NAMES.read_text().split())
    assert "generated items were new" in e
    code, o, e = cli(capsys, "eval", names_cli_run, NAMES)
    assert code == 0 and "690 items:" in o and "nats/item" in o and "nats/char" in o
    one_line_error(*cli(capsys, "sample", names_cli_run, "--stop", "x")[::2], "end symbol")


def test_bytes_cli(tmp_path, capsys):
    corpus = tmp_path / "u.txt"
    corpus.write_text("日本語のテキスト。Ελληνικά και русский.\n" * 80, encoding="utf-8")
    out = tmp_path / "b"
    code, o, e = cli(capsys, "train", corpus, "--out", out, "--preset", "spec", "--vocab", "bytes",
                     "--max-steps", 10, "--hidden-size", 32, "--quiet")
    assert code == 0, e
    code, o, e = cli(capsys, "sample", out, "--prime", "Any prime ✓ works: ", "-n", 30, "--seed", 1)
    assert code == 0 and o.startswith("Any prime ✓ works: ")
    assert len(o.rstrip("\n")) == len("Any prime ✓ works: ") + 30 or "\n" in o.rstrip("\n")
    held = tmp_path / "h.txt"
    held.write_text("русский текст 日本語", encoding="utf-8")
    code, o, e = cli(capsys, "eval", out, held)
    assert code == 0 and "bytes:" in o and "nats/byte" in o and "bits/char" in o
    assert f"{len('русский текст 日本語') - 1} characters" in o
    assert not math.isnan(float(o.split(": ")[1].split()[0]))
