import json
import subprocess
import sys

import pytest

from charwise import hardware
from charwise.cli import main


def run(*args):
    """The real console entry point in a subprocess: exit code, stdout, stderr."""
    p = subprocess.run([sys.executable, "-m", "charwise", *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def one_line_error(code, err, match):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charwise") and "error:" in lines[0], err
    assert match in lines[0], err


def test_train_sample_eval_end_to_end(tmp_path):
    out = tmp_path / "run"
    code, o, e = run("train", "--out", out, "--max-steps", 150, "--quiet")
    assert code == 0, e
    assert o.startswith("done: 150 steps") and o.count("\n") == 1 and e == ""   # --quiet: the summary only
    code, o, e = run("sample", out, "--prime", "Mr Bennet", "-n", 40, "--seed", 3, "--temperature", 0.5)
    assert code == 0 and o.startswith("Mr Bennet") and len(o.rstrip("\n")) == 49
    code2, o2, _ = run("sample", out, "--prime", "Mr Bennet", "-n", 40, "--seed", 3, "--temperature", 0.5)
    assert o2 == o
    text = tmp_path / "t.txt"
    text.write_text("It is a truth universally acknowledged")
    code, o, e = run("eval", out, text, "--json")
    res = json.loads(o)
    assert code == 0 and res["chars"] == len("It is a truth universally acknowledged") - 1
    assert res["bits_per_char"] == pytest.approx(res["loss"] / 0.6931471805599453)
    assert res["precision"] == "fp32"                   # auto: 128 units score in fp32
    code, o, e = run("eval", out, text, "--precision", "bf16")
    if hardware.cpu_has_fast_bf16():
        assert code == 0 and o.rstrip().endswith("(bf16)"), e
        assert float(o.split(": ")[1].split()[0]) == pytest.approx(res["loss"], abs=0.02)
    else:                                 # an AVX2 laptop: one sentence naming what is missing
        assert code == 2 and o == "" and e.startswith("charwise: error: --precision bf16: this CPU")


def test_demo_learns_and_draws(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "Parameters: embed=1216, LSTM=82944, out=4902" in out
    for t in ("0.5", "1.0", "1.5"):
        assert f"Temperature {t}:" in out
    for name in ("curve.png", "per_char.png", "heatmap.png"):    # the chapter's three pictures
        assert (tmp_path / "demo" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    info = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert info["history"][-1]["val_loss"] < 0.5            # the whole text, one exact pass


def test_python_dash_m_and_version():
    code, o, _ = run("--version")
    assert code == 0 and o.startswith("charwise ")


def test_help_shows_config_docs():
    code, o, _ = run("train", "--help")
    assert code == 0
    assert "--hidden-size" in o and "hidden units per layer" in o and "--max-time" in o
    flat = " ".join(o.split())
    assert "presets: spec 128, small 640, medium 512, large 1024" in flat    # the values, not "their own"
    assert "presets: small 180" in flat


@pytest.mark.parametrize("args, match", [
    (["train", "{missing}"], "no such file"),
    (["train", "{dir}"], "is a directory"),
    (["train", "{empty}"], "empty"),
    (["train", "{binary}"], "not valid utf-8"),
    (["train", "{short}"], "too short"),
    (["train", "--lr", "nan"], "finite"),
    (["train", "--hidden-size", "0"], "--hidden-size must be >= 1"),
    (["sample", "{dir}"], "not a charwise run"),
    (["sample", "{run}", "--temperature", "-1"], "temperature"),
    (["sample", "{run}", "--top-p", "0"], "top-p"),
    (["sample", "{run}", "--top-p", "1.5"], "top-p"),
    (["sample", "{run}", "--top-k", "0"], "top-k"),
    (["sample", "{run}", "-n", "-3"], "-n"),
    (["sample", "{run}", "--prime", "Zq@"], "not in the model's vocabulary"),
    (["eval", "{run}", "{missing}"], "no such file"),
])
def test_bad_input_one_line_error(tmp_path, trained_run, capsys, args, match):
    files = {"missing": tmp_path / "nope.txt", "dir": tmp_path, "run": trained_run,
             "empty": tmp_path / "empty.txt", "binary": tmp_path / "bin.txt",
             "short": tmp_path / "short.txt"}
    files["empty"].write_text("")
    files["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\xff\xff")
    files["short"].write_text("abc")
    argv = [a.format(**files) for a in args]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "o"), "--quiet"]
    code = main(argv)
    err = capsys.readouterr().err
    one_line_error(code, err, match)
    assert not (tmp_path / "o" / "run.json").exists()


def test_existing_out_refused_without_force(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["train", "--out", str(out), "--quiet", "--max-steps", "2"])
    one_line_error(code, capsys.readouterr().err, "not empty")
    assert (out / "notes.txt").read_text() == "mine"


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    code, _, err = run("sample", tmp_path / "nope")
    one_line_error(code, err, "no such run directory")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradcheck_command(capsys, cell):
    assert main(["gradcheck", "--cell", cell, "--layers", "2"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "rnn.weight_hh_l1" in out and "state.h" in out
