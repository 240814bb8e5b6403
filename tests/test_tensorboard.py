"""train --tensorboard: event files with the training scalars and text samples."""
import importlib.util
import json

import pytest

from charwise.cli import main
from charwise.training import train

pytest.importorskip("tensorboard")


def test_tensorboard_scalars_and_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "tb"
    train(None, out=out, tensorboard=True, max_steps=20, eval_every=10, hidden_size=32,
          progress=False, log=lambda *a: None)
    assert (out / "metrics.jsonl").is_file()                 # always written as well
    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/bits_per_char", "train/lr", "train/grad_norm", "train/chars_per_s",
            "val/loss", "val/bits_per_char", "val/perplexity"} <= scalars
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(1, 21))
    assert [e.step for e in ea.Scalars("val/loss")] == [10, 20]
    hist = json.loads((out / "run.json").read_text())["history"]
    assert ea.Scalars("val/loss")[-1].value == pytest.approx(hist[-1]["val_loss"], rel=1e-6)
    assert all(e.value > 0 for e in ea.Scalars("train/chars_per_s"))
    texts = ea.Tensors("sample/text_summary")
    assert [t.step for t in texts] == [10, 20]
    sample = texts[-1].tensor_proto.string_val[0].decode()
    assert "temperature 0.8" in sample and sample.count("```") == 2


def test_tensorboard_does_not_change_training(tmp_path):
    """Logging (and its samples) must not touch the training RNG streams."""
    kw = dict(max_steps=12, eval_every=4, hidden_size=16, embed_dim=8, progress=False, log=lambda *a: None)
    a = train(None, out=tmp_path / "a", tensorboard=True, **kw)
    b = train(None, out=tmp_path / "b", **kw)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


def test_missing_tensorboard_is_one_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert main(["train", "--tensorboard", "--out", str(tmp_path / "never"), "--max-steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["charwise: error: --tensorboard needs the tensorboard package: "
                   "pip install charwise[tensorboard]"]
    assert not (tmp_path / "never").exists()
