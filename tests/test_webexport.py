"""charwise export --format web and --quantize, without a browser: what the page holds, its
size, the quantization error, the loss check, and bad input (one line, exit 2, nothing written)."""
import base64
import json
import re

import numpy as np
import pytest
import torch

from charwise.cli import main
from charwise.data.vocab import Vocab
from charwise.exporting.web import build_html, encode_weights, quantized_net
from charwise.generation.charmodel import CharModel
from charwise.generation.quant import dequantize_rows, quantize_rows
from charwise.model import CharLSTM
from charwise.settings.train import ModelConfig


def page_parts(html: str):
    desc = json.loads(re.search(r'id="charwise-model">(.*?)</script>', html, re.DOTALL).group(1))
    blob = base64.b64decode(re.search(r'id="charwise-weights">(.*?)</script>', html, re.DOTALL).group(1))
    return desc, blob


def decode(desc, blob) -> dict:
    """The page's decoding, in NumPy."""
    out = {}
    for t in desc["tensors"]:
        n = int(np.prod(t["shape"]))
        if t["dtype"] == "f32":
            a = np.frombuffer(blob, "<f4", n, t["offset"])
        elif t["dtype"] == "f16":
            a = np.frombuffer(blob, "<f2", n, t["offset"]).astype(np.float32)
        else:
            q = np.frombuffer(blob, np.int8, n, t["offset"]).reshape(t["shape"])
            s = np.frombuffer(blob, "<f4", t["shape"][0], t["scale"])
            a = dequantize_rows(q, s)
        out[t["name"]] = np.asarray(a, np.float32).reshape(t["shape"])
    return out


def random_model(cell="lstm", layers=1, hidden=64, embed=16, chars="abcdefgh \n"):
    torch.manual_seed(0)
    net = CharLSTM(ModelConfig(cell=cell, layers=layers, hidden_size=hidden, embed_dim=embed,
                               vocab_size=len(chars))).eval()
    return CharModel(net, Vocab(tuple(sorted(chars))), {})


@pytest.mark.parametrize("quantize", ["none", "fp16", "int8"])
def test_page_holds_the_weights(quantize):
    model = random_model("gru", layers=2)
    html, _ = build_html(model, quantize, "m")
    desc, blob = page_parts(html)
    assert desc["cell"] == "gru" and desc["layers"] == 2 and desc["vocab"] == list(model.vocab.chars)
    got = decode(desc, blob)
    want = {k: v.numpy() for k, v in model.net.state_dict().items()}
    assert set(got) == set(want)
    sim = {k: v.numpy() for k, v in quantized_net(model.net, quantize).state_dict().items()}
    for k, w in want.items():
        assert np.array_equal(got[k], sim[k])          # the page holds what the check simulates
        if quantize == "none" or w.ndim == 1:
            assert np.array_equal(got[k], w)           # biases always float32
        elif quantize == "fp16":
            assert np.abs(got[k] - w).max() <= np.abs(w).max() * 2.0 ** -11
        else:
            step = np.abs(w).max(axis=1, keepdims=True) / 127
            assert (np.abs(got[k] - w) <= step / 2 * (1 + 1e-6)).all()
    # self-contained: no external scripts, styles, images or links of any kind
    assert not re.search(r"""\b(src|href)\s*=""", html) and "://" not in html


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_transformer_page_holds_what_its_step_reads(positions):
    """A transformer's page: its shape (width, heads, context, keep = context // 2, positions)
    and every tensor the page's Transformer step reads, as the loss check simulates them."""
    from charwise.model import build_model
    torch.manual_seed(0)
    chars = "abcdefgh \n"
    net = build_model(ModelConfig(cell="transformer", layers=2, embed_dim=16, heads=4, context=10,
                                  positions=positions, vocab_size=len(chars))).eval()
    html, _ = build_html(CharModel(net, Vocab(tuple(sorted(chars))), {}), "int8", "m")
    desc, blob = page_parts(html)
    assert {k: desc[k] for k in ("cell", "layers", "width", "heads", "context", "keep", "positions")} == {
        "cell": "transformer", "layers": 2, "width": 16, "heads": 4, "context": 10, "keep": 5,
        "positions": positions}
    got = decode(desc, blob)
    sim = {k: v.numpy() for k, v in quantized_net(net, "int8").state_dict().items()}
    assert set(got) == set(sim) and ("pos.weight" in got) == (positions == "learned")
    assert all(np.array_equal(got[k], sim[k]) for k in sim)
    assert "const MODEL_STEPS = {\n    transformer: Transformer," in html


def test_quantize_rows_round_trip():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 300)).astype(np.float32) * rng.uniform(0.01, 3, size=(50, 1))
    w[3] = 0                                        # an all-zero row: scale 1, exact
    q, s = quantize_rows(w)
    back = dequantize_rows(q, s)
    assert q.dtype == np.int8 and s.dtype == np.float32 and np.abs(q).max() <= 127
    assert (np.abs(back - w) <= s[:, None] / 2 * (1 + 1e-6)).all() and not back[3].any()
    # relative to each row's size the error is at most 1/254
    assert (np.abs(back - w).max(axis=1) <= np.abs(w).max(axis=1) / 254 * (1 + 1e-6)).all()


def test_file_size_is_close_to_the_weights():
    """base64 costs 4/3; the page's code and styles are ~25 kB. For a 1x640-sized model the
    page is under 1.4x the quantized weights in every format."""
    model = random_model("lstm", hidden=640, embed=64, chars="".join(map(chr, range(32, 97))))
    sizes = {}
    for q in ("none", "fp16", "int8"):
        html, payload = build_html(model, q, "m")
        sizes[q] = (len(html.encode()), payload)
        assert len(html.encode()) <= 1.4 * payload, (q, sizes[q])
    assert sizes["int8"][1] < 0.26 * sizes["none"][1] and sizes["fp16"][1] == pytest.approx(
        sizes["none"][1] / 2, rel=0.01)
    table, _, _ = encode_weights(model.net, "int8")
    assert all(t["offset"] % 4 == 0 for t in table)


def test_cli_web_export_and_loss_check(small_run, tmp_path, capsys):
    out = tmp_path / "m.html"
    assert main(["export", str(small_run), "--format", "web", "--quantize", "int8", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and f"wrote {out}" in line and "nats/char" in line
    desc, _blob = page_parts(out.read_text(encoding="utf-8"))
    assert abs(desc["loss_check"]["delta"]) <= 0.01 and desc["quantize"] == "int8"
    # Default output next to the run; a second export there needs --force.
    assert main(["export", str(small_run), "--format", "web"]) == 0
    page = small_run / "model.html"
    before = page.read_bytes()
    capsys.readouterr()
    assert main(["export", str(small_run), "--format", "web", "--quantize", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; use --force" in err
    assert page.read_bytes() == before
    assert main(["export", str(small_run), "--format", "web", "--quantize", "fp16", "--force"]) == 0
    assert page.read_bytes() != before
    page.unlink()


def test_refuses_beyond_max_loss_increase(small_run, tmp_path, capsys, monkeypatch):
    """The quantized graph's loss made 0.5 nats worse than measured (int8 may even lower a tiny
    model's loss, so no real limit >= 0 is sure to be passed): refused, nothing written. A
    negative limit is refused before the export starts."""
    from charwise.exporting import losscheck, onnx, web
    worse = lambda o, e, n, w: losscheck.loss_report(o, e + 0.5, n, w)      # noqa: E731
    for module in (onnx, web):
        monkeypatch.setattr(module, "loss_report", worse)
    for fmt in ("web", "onnx"):
        out = tmp_path / f"m.{fmt}"
        code = main(["export", str(small_run), "--format", fmt, "--quantize", "int8", "--out", str(out),
                     "--max-loss-increase", "0.25"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "beyond --max-loss-increase 0.25" in err
        assert not out.exists()
        code = main(["export", str(small_run), "--format", fmt, "--quantize", "int8", "--out", str(out),
                     "--max-loss-increase", "-1"])
        err = capsys.readouterr().err
        assert code == 2 and "--max-loss-increase must be >= 0" in err and not out.exists()


def test_bad_input_is_one_line_and_writes_nothing(small_run, tmp_path, capsys):
    out = tmp_path / "m.html"
    assert main(["export", str(small_run), "--format", "web", "--quantize", "int4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quantize must be one of none, fp16, int8; got 'int4'" in err and not out.exists()
    out.write_text("keep me")
    assert main(["export", str(small_run), "--format", "web", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; use --force" in err and out.read_text() == "keep me"
    # A damaged run: weights cut short, and a broken run.json.
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(small_run, bad, ignore=shutil.ignore_patterns("*.html", "*.onnx"))
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "last.safetensors").unlink(missing_ok=True)
    for q in ("none", "int8"):
        assert main(["export", str(bad), "--format", "web", "--quantize", q, "--out", str(tmp_path / "b.html")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a valid safetensors file" in err
    (bad / "run.json").write_text("{not json")
    assert main(["export", str(bad), "--format", "web", "--out", str(tmp_path / "b.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged JSON" in err
    assert not (tmp_path / "b.html").exists() and not list(bad.glob("*.html"))


def test_onnx_quantized_exports_meet_the_targets(small_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    sizes = {}
    for q, target in (("none", None), ("fp16", 0.002), ("int8", 0.01)):
        out = tmp_path / f"{q}.onnx"
        assert main(["export", str(small_run), "--format", "onnx", "--quantize", q, "--out", str(out)]) == 0
        line = capsys.readouterr().out
        sizes[q] = out.stat().st_size
        if target:
            delta = float(re.search(r"nats/char \(([-+][0-9.]+)\)", line).group(1))
            assert abs(delta) <= target, line
            assert ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # small graphs carry fixed overhead (nodes, the vocabulary); the weights halve / quarter
    assert sizes["fp16"] < 0.7 * sizes["none"] and sizes["int8"] < 0.45 * sizes["none"]
