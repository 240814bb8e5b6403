import json

import pytest
import torch

import charwise
from charwise.errors import CharwiseError
from charwise.runs.checkpoint import load_model
from charwise.runs.rundir import atomic_write_bytes, read_run


def test_round_trip_same_logits(trained_run):
    m1 = charwise.load(trained_run)
    m2 = charwise.load(trained_run)
    x = torch.from_numpy(m1.vocab.encode("It is a truth"))[None]
    with torch.no_grad():
        assert torch.equal(m1.net(x)[0], m2.net(x)[0])
    # and equal to the weights the trainer held: the best file holds exactly the state dict
    from safetensors.torch import load_file
    w = load_file(trained_run / "model.safetensors")
    assert all(torch.equal(w[k], v) for k, v in m1.net.state_dict().items())


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    atomic_write_bytes(p, b"old")
    import os
    real_replace = os.replace

    def boom(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CharwiseError, match="disk full"):
        atomic_write_bytes(p, b"new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.json"]     # no temp file left behind


def _copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache"))
    return dst


def test_refuses_pickle_and_non_runs(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04fake pickle")
    with pytest.raises(CharwiseError, match="pickle"):
        charwise.load(pt)
    with pytest.raises(CharwiseError, match="not a charwise run"):
        charwise.load(tmp_path)
    with pytest.raises(CharwiseError, match="no such run"):
        charwise.load(tmp_path / "missing")


def test_damaged_files(trained_run, tmp_path):
    r = _copy_run(trained_run, tmp_path / "r")
    w = (r / "model.safetensors").read_bytes()
    (r / "model.safetensors").write_bytes(w[: len(w) // 2])              # truncated
    with pytest.raises(CharwiseError, match="not a valid safetensors"):
        charwise.load(r)
    r2 = _copy_run(trained_run, tmp_path / "r2")
    info = json.loads((r2 / "run.json").read_text())
    info["format_version"] = 99
    (r2 / "run.json").write_text(json.dumps(info))
    with pytest.raises(CharwiseError, match="format_version"):
        read_run(r2)
    r3 = _copy_run(trained_run, tmp_path / "r3")
    info = json.loads((r3 / "run.json").read_text())
    info["vocab"] = info["vocab"][:-1]
    info["model"]["vocab_size"] -= 1
    info["char_counts"] = info["char_counts"][:-1]           # consistent run.json, other weights
    (r3 / "run.json").write_text(json.dumps(info))
    with pytest.raises(CharwiseError, match="shape"):
        load_model(r3)
    r4 = _copy_run(trained_run, tmp_path / "r4")
    (r4 / "run.json").write_text("{not json")
    with pytest.raises(CharwiseError, match="damaged JSON"):
        charwise.load(r4)
