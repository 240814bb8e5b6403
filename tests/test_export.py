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


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_transformer_step_graph_matches_its_kv_cache_step(transformer_runs, tmp_path, positions):
    """The KV-cache step graph, stepped the way its docstring tells a caller (zeros in, every
    *_out fed back), gives CharTransformer.step's logits, past the context too (the slide runs
    in the graph), and greedy text through onnxruntime alone is `charwise sample`'s."""
    import torch
    run = transformer_runs[positions]
    res = export_onnx(run, out=tmp_path / "t.onnx")
    assert res["max_abs_logit_diff"] < 1e-4 and res["checked_steps"] >= 2 * 12
    model = charwise.load(run)
    net, C = model.net, model.net.context
    sess = onnx_session(tmp_path / "t.onnx")
    ins = [i.name for i in sess.get_inputs()]
    assert ins == ["x", "k0", "v0", "k1", "v1", "tokens", "window"]
    assert [o.name for o in sess.get_outputs()] == ["logits"] + [f"{n}_out" for n in ins[1:]]
    meta = sess.get_modelmeta().custom_metadata_map
    assert (meta["charwise.cell"], meta["charwise.context"], meta["charwise.keep"]) == ("transformer", "12", "6")
    assert meta["charwise.positions"] == positions and "feed x (batch, 1)" in sess.get_modelmeta().description
    vocab = json.loads(meta["charwise.vocab"])

    def zeros(batch):
        return [np.zeros([batch if d == "batch" else d for d in i.shape],
                         np.int64 if "int64" in i.type else np.float32) for i in sess.get_inputs()[1:]]

    texts = ["It is a truth universally acknowledged, that a", "Mr Bennet was among the earliest of th"]
    ids = np.array([model.vocab.encode(t[:len(texts[1])]) for t in texts], dtype=np.int64)   # (2, n > 3C)
    with torch.inference_mode():
        ref, _ = net.step(torch.from_numpy(ids), net.new_cache(2), 0)        # (2, n, V), in one call
    cache, worst = zeros(2), 0.0
    for t in range(ids.shape[1]):
        logits, *cache = sess.run(None, dict(zip(ins, [ids[:, t:t + 1], *cache])))
        worst = max(worst, float(np.abs(logits - ref[:, t].numpy()).max()))
    assert worst < 1e-4 and ids.shape[1] > 3 * C
    assert cache[-1].tolist() == [[30, 8]] * 2          # start s_p = 6 * ((38 - 6) // 6), 8 slots

    prime, cache = "Mr Bennet", zeros(1)
    for ch in prime:
        logits, *cache = sess.run(None, dict(zip(ins, [np.array([[vocab.index(ch)]]), *cache])))
    text = prime
    for _ in range(40):
        j = int(logits[0].argmax())
        text += vocab[j]
        logits, *cache = sess.run(None, dict(zip(ins, [np.array([[j]]), *cache])))
    assert text == model.generate(prime, 40, temperature=0)


def test_fp16_export_of_a_transformer_keeps_what_fp16_cannot_hold_in_float32(transformer_runs, tmp_path,
                                                                               recwarn, capsys):
    """The attention mask's -3.4e38 overflowed to -inf in fp16, with NumPy's "overflow
    encountered in cast" printed on stderr: such an initializer now stays float32."""
    import onnx
    from onnx import numpy_helper
    export_onnx(transformer_runs["learned"], out=tmp_path / "h.onnx", quantize="fp16")
    assert not [w for w in recwarn if "overflow" in str(w.message)]
    inits = onnx.load(str(tmp_path / "h.onnx")).graph.initializer
    kept = [i.name for i in inits if i.data_type == onnx.TensorProto.FLOAT
            and np.abs(numpy_helper.to_array(i)).max(initial=0.0) > np.finfo(np.float16).max]
    halves = [i.name for i in inits if i.data_type == onnx.TensorProto.FLOAT16]
    assert kept and halves
    assert main(["export", str(transformer_runs["learned"]), "--format", "web", "--quantize", "int8",
                 "--max-loss-increase", "-1", "--out", str(tmp_path / "neg.html")]) == 2
    assert "--max-loss-increase must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "neg.html").exists()
