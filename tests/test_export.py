"""charwise export --format onnx: the step graph agrees with the torch model."""
import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

import charwise  # noqa: E402
from charwise.cli import main  # noqa: E402
from charwise.exporting.onnx import export_onnx, onnx_session  # noqa: E402


def test_cli_export_onnx_matches_torch(trained_run, tmp_path, capsys):
    out = tmp_path / "spec.onnx"
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"wrote {out}" in line and "checked with onnxruntime over 64 steps" in line
    model = charwise.load(trained_run)
    sess = onnx_session(out)
    assert [i.name for i in sess.get_inputs()] == ["x", "h", "c"]
    assert [o.name for o in sess.get_outputs()] == ["logits", "h_out", "c_out"]
    meta = sess.get_modelmeta().custom_metadata_map
    vocab = json.loads(meta["charwise.vocab"])
    assert vocab == list(model.vocab.chars) and meta["charwise.cell"] == "lstm"

    # Logits of torch and ONNX over a whole text, stream by stream (batch of 2 with different
    # texts, so the dynamic batch axis and the state wiring are both exercised).
    import torch
    texts = ["Mr Bennet was among the earliest", "It is a truth universally acknowledged"]
    n = min(map(len, texts))
    ids = np.array([model.vocab.encode(t[:n]) for t in texts], dtype=np.int64)   # (2, n)
    with torch.inference_mode():
        ref, _ = model.net(torch.from_numpy(ids))                                 # (2, n, V)
    h = np.zeros((1, 2, 128), np.float32)
    c = np.zeros_like(h)
    worst = 0.0
    for t in range(n):
        logits, h, c = sess.run(None, {"x": ids[:, t], "h": h, "c": c})
        worst = max(worst, float(np.abs(logits - ref[:, t].numpy()).max()))
    assert worst < 1e-4

    # Greedy decoding through onnxruntime alone gives the text `charwise sample` gives.
    prime = "Mr Bennet"
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros_like(h)
    for ch in prime:
        logits, h, c = sess.run(None, {"x": np.array([vocab.index(ch)]), "h": h, "c": c})
    text = prime
    for _ in range(60):
        j = int(logits[0].argmax())
        text += vocab[j]
        logits, h, c = sess.run(None, {"x": np.array([j]), "h": h, "c": c})
    assert text == model.generate(prime, 60, temperature=0)


def test_gru_export_has_no_cell_state(tmp_path):
    run = tmp_path / "gru"
    charwise.train(None, out=run, cell="gru", layers=2, hidden_size=16, embed_dim=8, max_steps=3,
                   progress=False, log=lambda *a: None)
    res = export_onnx(run)                               # default: RUN_DIR/model.onnx
    assert res["path"] == str(run / "model.onnx") and res["inputs"] == ["x", "h"]
    assert res["outputs"] == ["logits", "h_out"] and res["max_abs_logit_diff"] < 1e-4


def test_export_errors_are_one_line(trained_run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--out", str(tmp_path / "no" / "x.onnx")]) == 2
    assert "no such directory" in capsys.readouterr().err
