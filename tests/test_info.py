"""charwise info, --version and the help texts."""
import json

from charwise import __version__
from charwise.cli import main


def test_info_text(trained_run, capsys):
    assert main(["info", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "LSTM 1 x 128, embedding 32" in out and "89,062 parameters" in out
    assert "vocabulary   38 characters: ␣.BDEHILMNPTWY" in out
    assert "200 steps in" in out and "on the training text, step" in out and "bits/char" in out
    assert "seq-len=40" in out and "max-steps=200" in out
    assert "model.safetensors" in out


def test_info_json(trained_run, capsys):
    assert main(["info", str(trained_run), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    run = json.loads((trained_run / "run.json").read_text())
    assert d["parameters"] == 89062 and d["vocab"] == run["vocab"]
    assert d["best_val_loss"] == run["best"]["val_loss"] and d["best_step"] == run["best"]["step"]
    assert d["train_seconds"] == run["train_seconds"] > 0 and d["steps"] == 200
    assert d["model"]["hidden_size"] == 128 and d["train"]["seq_len"] == 40


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "not a charwise run directory" in capsys.readouterr().err


def test_version_and_help_examples(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"charwise {__version__}"
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for cmd in ("info", "export", "serve", "--config"):
        assert cmd in top
    for sub, needle in (("train", "charwise train --config configs/shakespeare.toml"),
                        ("train", "--tensorboard, --no-tensorboard"),
                        ("export", "charwise export runs/shk --format onnx"),
                        ("serve", "http://127.0.0.1:8000/"), ("info", "charwise info runs/shk")):
        assert main([sub, "--help"]) == 0
        assert needle in capsys.readouterr().out, (sub, needle)
