"""Config files: `charwise train --config FILE.toml`, keys = the train flags, flags win."""
import json
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:     # Python 3.10
    import tomli as tomllib

import pytest

from charwise.cli import main
from charwise.errors import CharwiseError
from charwise.settings.toml import read_config

REPO = Path(__file__).resolve().parents[1]
TINY = {"hidden-size": 16, "embed-dim": 8, "max-steps": 12, "eval-every": 6, "batch-size": 4,
        "seq-len": 16}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def toml_lines(d: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in d.items())


def history(run: Path) -> list:
    return [(r["step"], r["val_loss"]) for r in json.loads((run / "run.json").read_text())["history"]]


def test_config_file_trains_and_saved_config_reproduces_the_run(tmp_path, capsys):
    cfg = write(tmp_path / "run.toml", toml_lines({**TINY, "cell": "gru", "quiet": True, "out": "a"}))
    assert main(["train", "--config", str(cfg)]) == 0
    run = tmp_path / "a"                              # out is relative to the file's directory
    info = json.loads((run / "run.json").read_text())
    assert info["model"]["cell"] == "gru" and info["model"]["hidden_size"] == 16
    assert info["train"]["max_steps"] == 12 and info["step"] == 12
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["preset"] == "none" and saved["hidden-size"] == 16 and "max-time" not in saved
    assert main(["train", "--config", str(run / "config.toml"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    assert history(tmp_path / "b") == history(run)    # same settings, same seed: same numbers
    again = json.loads((tmp_path / "b" / "run.json").read_text())
    assert again["model"] == info["model"] and again["train"] == info["train"]


def test_flags_override_the_file_and_underscores_work(tmp_path):
    cfg = write(tmp_path / "run.toml", "hidden_size = 16\nembed_dim = 8\nmax_steps = 4\n"
                                       "eval_every = 0\nlr = 0.5\ntensorboard = true\n")
    from charwise.cli import build_parser
    from charwise.settings.toml import merge_cli
    a = build_parser().parse_args(["train", "--config", str(cfg), "--lr", "0.002", "--no-tensorboard",
                                   "--out", str(tmp_path / "o")])
    kw = merge_cli(a)
    assert kw["lr"] == 0.002 and kw["hidden_size"] == 16 and kw["tensorboard"] is False
    assert kw["out"] == str(tmp_path / "o") and kw["preset"] == "auto"


def test_example_configs_are_valid():
    spec = read_config(REPO / "configs" / "spec.toml")
    assert spec["preset"] == "spec" and spec["hidden_size"] == 128 and "corpus" not in spec
    shk = read_config(REPO / "configs" / "shakespeare.toml")
    assert Path(shk["corpus"]).resolve() == (REPO / "data" / "tinyshakespeare.txt").resolve()
    assert shk["preset"] == "small" and shk["max_time"] == 180 and shk["hidden_size"] == 640


def test_shakespeare_config_runs_from_another_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                       # the corpus path still resolves
    code = main(["train", "--config", str(REPO / "configs" / "shakespeare.toml"), "--out", "shk",
                 "--max-steps", "2", "--hidden-size", "16", "--embed-dim", "8", "--batch-size", "2",
                 "--seq-len", "8", "--val-fraction", "0.002", "--max-time", "60", "--quiet"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "shk" / "run.json").read_text())
    assert info["corpus"]["chars"] == 1115394 and info["train"]["lr"] == 0.007


@pytest.mark.parametrize("text, match", [
    ("hiden-size = 64\n", "unknown key 'hiden-size' (did you mean 'hidden-size'?)"),
    ("hidden-size = \"big\"\n", "hidden-size must be an integer, got 'big'"),
    ("hidden_size = 0\n", "hidden_size must be >= 1, got 0"),
    ("lr = true\n", "lr must be a number, not True"),
    ("cell = \"mamba\"\n", "cell must be one of lstm, gru, rnn, transformer"),
    ("tensorboard = \"yes\"\n", "tensorboard must be true or false"),
    ("quiet = 1\n", "'quiet' must be true or false"),
    ("corpus = 3\n", "'corpus' must be a string"),
    ("preset = \"huge\"\n", "preset must be one of spec, small, transformer, medium, large, finetune or 'none'"),
    ("hidden-size = 64\nhidden_size = 32\n", "'hidden_size' is given twice (also as 'hidden-size')"),
    ("[model]\nhidden-size = 64\n", "'model' is a table; a charwise config is flat"),
    ("resume = true\n", "'resume' is not allowed in a config file"),
    ("hidden-size = \n", "not valid TOML"),
])
def test_bad_config_one_line_error_naming_the_key(tmp_path, capsys, text, match):
    cfg = write(tmp_path / "bad.toml", text)
    with pytest.raises(CharwiseError, match=None) as e:
        read_config(cfg)
    assert match in str(e.value) and str(e.value).startswith(str(cfg))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("charwise: error:") and match in err[0]
    assert not (tmp_path / "never").exists()


def test_missing_config_and_resume_mix(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    cfg = write(tmp_path / "ok.toml", "max-steps = 2\n")
    assert main(["train", "--config", str(cfg), "--resume", "--out", str(tmp_path)]) == 2
    assert "--config and --resume do not mix" in capsys.readouterr().err
