"""`--cell transformer` through the commands: train (budgets, resume bit for bit, line mode,
bytes, --init-from across vocabularies), sample (KV cache: streams, beam, stop strings, a prime
longer than the context), exact evaluation over context windows, info, and the one-line
refusals of what a transformer cannot do (int8 sampling, the NumPy engine, a window longer
than its context, heads that do not split the width)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

import charwise
from charwise import bounds
from charwise.cli import main
from charwise.errors import CharwiseError
from charwise.model import build_model
from charwise.runs.transfer import transplant
from charwise.scoring import context_windows, token_losses
from charwise.settings.train import ModelConfig, resolve
from conftest import QUIET

HERE = Path(__file__).parent
NAMES = HERE / "data" / "first_names.txt"
TINY = dict(cell="transformer", layers=2, embed_dim=16, heads=2, seq_len=24, batch_size=4,
            threads=1, device="cpu", eval_every=0)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("tt") / "shk.txt"
    p.write_text((HERE.parent / "data" / "tinyshakespeare.txt").read_text()[:30_000])
    return p


@pytest.fixture(scope="module")
def run(text, tmp_path_factory):
    out = tmp_path_factory.mktemp("tt") / "run"
    charwise.train(text, out=out, max_steps=40, **TINY, **QUIET)
    return out


def test_a_transformer_run_records_its_shape_and_context(run):
    info = charwise.info(run)
    m = info["model"]
    assert (m["cell"], m["context"], m["heads"], m["layers"]) == ("transformer", 24, 2, 2)
    net = charwise.load(run).net
    assert net.num_parameters == bounds.parameter_count(net.cfg) == info["parameters"]
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == bounds.expected_shapes(net.cfg)


def test_preset_auto_gives_a_transformer_the_transformer_recipe():
    m, t = resolve("transformer")
    assert (m.cell, m.width, t.max_time) == ("transformer", m.embed_dim, 180.0)
    from charwise import recipe
    choice = recipe.AutoChoice("sized", "")
    assert recipe.settings(choice, {"cell": "transformer"})[0] == "transformer"
    assert recipe.settings(recipe.AutoChoice("sized", ""), {})[0] == "small"


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bit_identical(text, tmp_path, optimizer):
    kw = dict(TINY, dropout=0.1, optimizer=optimizer)
    charwise.train(text, out=tmp_path / "whole", max_steps=12, **kw, **QUIET)
    charwise.train(text, out=tmp_path / "half", max_steps=6, **kw, **QUIET)
    charwise.train(text, out=tmp_path / "half", resume=True, max_steps=12, **QUIET)
    a, b = load_file(tmp_path / "whole" / "last.safetensors"), load_file(tmp_path / "half" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_tied_head_trains_resumes_saves_and_fine_tunes_tied(text, tmp_path):
    """--tie-weights: the head's matrix is the embedding (one parameter, V x W fewer), saved
    under both names, resumed bit for bit, and kept by --init-from (a shape field), which
    refuses to untie it in one line."""
    kw = dict(TINY, tie_weights=True)
    charwise.train(text, out=tmp_path / "whole", max_steps=12, **kw, **QUIET)
    charwise.train(text, out=tmp_path / "half", max_steps=6, **kw, **QUIET)
    charwise.train(text, out=tmp_path / "half", resume=True, max_steps=12, **QUIET)
    a, b = load_file(tmp_path / "whole" / "last.safetensors"), load_file(tmp_path / "half" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    net = charwise.load(tmp_path / "whole").net
    assert net.head.weight is net.embed.weight
    untied = build_model(dataclasses.replace(net.cfg, tie_weights=False))
    V, W = net.embed.weight.shape
    assert (net.num_parameters == bounds.parameter_count(net.cfg) == untied.num_parameters - V * W
            == charwise.info(tmp_path / "whole")["parameters"])
    saved = load_file(tmp_path / "whole" / "model.safetensors")
    assert np.array_equal(saved["head.weight"], saved["embed.weight"])
    charwise.train(text, out=tmp_path / "ft", init_from=tmp_path / "whole", max_steps=2, threads=1,
                   device="cpu", **QUIET)
    ft = charwise.load(tmp_path / "ft").net
    assert ft.cfg.tie_weights and ft.head.weight is ft.embed.weight
    with pytest.raises(CharwiseError, match="has tie weights True; --tie-weights False contradicts it"):
        charwise.train(text, out=tmp_path / "ft2", init_from=tmp_path / "whole", tie_weights=False,
                       max_steps=1, **QUIET)
    assert not (tmp_path / "ft2").exists()


def test_eval_scores_each_character_from_its_documented_window(run, text):
    """Every prediction p sees text[s_p : p + 1] (transformer.py), as the sampling step does."""
    net = charwise.load(run).net.double()
    ids = charwise.load(run).vocab.encode(text.read_text()[:90])
    got = torch.cat([lo for lo, _ in token_losses(net, ids)]).numpy()
    C, keep = net.cfg.context, net.cfg.context // 2
    for p in (0, 5, C - 1, C, C + 7, 88):
        s = 0 if p < C else (C - keep) * ((p - keep) // (C - keep))
        logits = net(torch.as_tensor(ids[s: p + 1])[None])[0][0, -1]
        want = F.cross_entropy(logits[None].float(), torch.tensor([int(ids[p + 1])])).item()
        assert got[p] == pytest.approx(want, abs=1e-5), p


@pytest.mark.parametrize("total,context", [(1, 4), (7, 4), (50, 8), (51, 9), (100, 1)])
def test_context_windows_score_every_position_once_in_order(total, context):
    scored = [p for a, n, first in context_windows(total, context) for p in range(a + first, a + n)]
    assert scored == list(range(total))
    assert all(n <= context for _, n, _ in context_windows(total, context))


def test_eval_and_the_api_agree(run, text):
    res = charwise.evaluate(run, text)
    model = charwise.load(run)
    assert res["loss"] == pytest.approx(model.evaluate(text.read_text())["loss"], rel=1e-6)
    assert 0 < res["loss"] < 4.5 and res["context"] == {"window": 24, "stride": 12, "min_before": 12}


def test_sampling_streams_beam_stop_and_a_long_prime(run):
    model = charwise.load(run)
    one = model.generate("ROMEO:", n=60, seed=3)
    assert one.startswith("ROMEO:") and len(one) == 66
    assert model.generate("ROMEO:", n=60, seed=3) == one              # a seed fixes the text
    many = model.generate("A", n=30, seed=3, num_samples=3)
    assert len(many) == 3 and all(len(t) == 31 for t in many)
    beams = model.beam("the ", n=12, width=3)
    assert len(beams) == 3 and beams[0][1] >= beams[1][1] >= beams[2][1]
    stopped = model.generate("A", n=200, seed=1, stop="e")
    assert "e" not in stopped[1:]
    long_prime = "First Citizen: before we proceed any further, hear me speak. " * 2
    assert len(long_prime) > 2 * model.net.cfg.context
    assert model.generate(long_prime, n=40, seed=0).startswith(long_prime)


def test_greedy_sampling_equals_argmax_of_forward_over_the_window(run):
    """Each greedy character is the argmax of `forward` over the window the step sees."""
    model = charwise.load(run)
    net, C = model.net, model.net.cfg.context
    text = model.generate("The ", n=2 * C, temperature=0)
    ids = model.vocab.encode(text)
    keep = C // 2
    for p in range(3, len(ids) - 1):
        s = 0 if p < C else (C - keep) * ((p - keep) // (C - keep))
        logits = net(torch.as_tensor(ids[s: p + 1])[None])[0][0, -1]
        assert int(logits.argmax()) == int(ids[p + 1]), p


def test_line_mode_and_byte_vocabulary(tmp_path, text):
    charwise.train(NAMES, out=tmp_path / "names", line_mode=True, max_steps=10, **TINY, **QUIET)
    info = json.loads((tmp_path / "names" / "run.json").read_text())
    assert info["model"]["context"] == info["items"]["longest"] + 1      # an item is one window
    items, _ = charwise.load(tmp_path / "names").items(n=4, seed=1)
    assert len(items) == 4
    charwise.train(text, out=tmp_path / "bytes", vocab="bytes", max_steps=5, **TINY, **QUIET)
    assert isinstance(charwise.load(tmp_path / "bytes").generate("héllo ☃", n=10, seed=1), str)


def test_eval_scores_a_line_longer_than_the_context_over_its_windows(tmp_path, capsys):
    """A line-mode transformer's context is its longest training item; eval of a longer line
    ended in a traceback ("18 chars do not fit the context of 10"). It is scored over context
    windows, each prediction from its documented window (as a text is, and as sampling slides)."""
    charwise.train(NAMES, out=tmp_path / "names", line_mode=True, max_steps=10, **TINY, **QUIET)
    model = charwise.load(tmp_path / "names")
    net, C, end = model.net.eval(), model.net.context, model.vocab.end_id
    short, long = "Anna", ("Maximilian" * 8)[:3 * C]
    ids = np.array([end, *model.vocab.encode(long), end])
    want = 0.0                                   # prediction p from tokens[s_p : p + 1]
    with torch.no_grad():
        for start, n, first in context_windows(len(ids) - 1, C):
            for p in range(start + first, start + n):
                logits, _ = net(torch.as_tensor(ids[start:p + 1])[None])
                want += float(F.cross_entropy(logits[0, -1:], torch.as_tensor(ids[p + 1:p + 2])))
        x = torch.as_tensor([end, *model.vocab.encode(short)])[None]
        y = torch.as_tensor([*model.vocab.encode(short), end])
        want += float(F.cross_entropy(net(x)[0][0], y, reduction="sum"))
    got = model.evaluate(f"{short}\n{long}\n")
    assert got["items"] == 2 and abs(got["loss"] * got["chars"] - want) < 1e-3
    (tmp_path / "long.txt").write_text(f"{short}\n{long}\n")
    assert main(["eval", str(tmp_path / "names"), str(tmp_path / "long.txt")]) == 0
    assert f"{got['loss']:.4f}" in capsys.readouterr().out


def test_init_from_a_transformer_merges_the_vocabularies(run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Zebras zoom über Ω and ☃ snow.\n" * 200)
    charwise.train(other, out=tmp_path / "ft", init_from=run, max_steps=3, threads=1, device="cpu", **QUIET)
    src, ft = charwise.load(run), charwise.load(tmp_path / "ft")
    assert ft.net.cfg.context == src.net.cfg.context and {"Ω", "☃"} <= set(ft.vocab.chars)
    moved = transplant(src.net.state_dict(), src.vocab, ft.vocab)       # what the run started from
    for k in ("embed.weight", "head.weight", "head.bias"):
        assert torch.equal(moved[k][ft.vocab.chars.index("e")], src.net.state_dict()[k][src.vocab.chars.index("e")])
    with pytest.raises(CharwiseError, match="does not fit this transformer's context of 24"):
        charwise.train(other, out=tmp_path / "ft2", init_from=run, max_steps=1, seq_len=48, **QUIET)
    assert not (tmp_path / "ft2").exists()


@pytest.mark.parametrize("kw,message", [
    (dict(embed_dim=30, heads=4), "--embed-dim 30 is not a multiple of --heads 4"),
    (dict(embed_dim=12, heads=4, positions="rotary"), "even head size"),
    (dict(engine="numpy"), "--engine numpy trains recurrent cells"),
])
def test_what_a_transformer_cannot_be_is_refused_before_a_file_is_written(text, tmp_path, kw, message):
    with pytest.raises(CharwiseError, match=message):
        charwise.train(text, out=tmp_path / "r", max_steps=1, **{**TINY, **kw}, **QUIET)
    assert not (tmp_path / "r" / "run.json").exists()


def test_the_command_line_refuses_in_one_line(run, capsys):
    assert main(["sample", str(run), "-n", "5", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "int8" in err and len(err.splitlines()) == 1
    assert main(["gradcheck", "--cell", "transformer"]) == 2
    assert "lstm, gru, rnn" in capsys.readouterr().err


def test_memory_estimate_grows_with_the_window():
    cfg = ModelConfig(cell="transformer", embed_dim=64, layers=2, heads=4, context=64, vocab_size=65)
    assert bounds.training_bytes(cfg, 16, 256) > 4 * bounds.training_bytes(cfg, 16, 64) - 4 * bounds.SLACK
    assert "TRANSFORMER of 2 blocks of width 64" in bounds.describe(cfg)
    with pytest.raises(ValueError, match="context must be set"):
        build_model(ModelConfig(cell="transformer", vocab_size=5))


def test_serve_streams_a_transformer_as_charwise_sample_does(run):
    pytest.importorskip("starlette")
    from charwise.asgi import background_server
    from charwise.server import Limits, create_app
    from test_serve import events, request
    with background_server(create_app(run, limits=Limits(max_chars=500, max_concurrent=1))) as url:
        _, r = request(url, "GET", "/api/info")
        assert json.loads(r.read())["model"]["cell"] == "transformer"
        body = {"prime": "ROMEO:", "n": 60, "temperature": 0.8, "seed": 5}
        _, r = request(url, "POST", "/api/generate", body)
        text = "".join(e["c"] for e in events(r)[:-1])
    assert "ROMEO:" + text == charwise.load(run).generate("ROMEO:", 60, 0.8, seed=5)


def test_plot_info_and_pack_work(run, tmp_path, capsys):
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["info", str(run)]) == 0
    assert "TRANSFORMER 2 blocks x 16 wide, 2 heads" in capsys.readouterr().out
    assert main(["pack", str(run), "--out", str(tmp_path / "r.cwm")]) == 0
    assert charwise.load(tmp_path / "r.cwm").generate("A", n=5, seed=1) == charwise.load(run).generate("A", n=5, seed=1)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")     # kvstep's own filter; pytest resets it
@pytest.mark.parametrize("positions,tie,streams,offset,sharp", [
    ("learned", False, 3, 0.0, 1.0), ("rotary", False, 3, 0.0, 1.0), ("rotary", True, 3, 0.0, 1.0),
    ("learned", False, 1, 0.0, 1.0), ("rotary", False, 1, 0.0, 1.0), ("rotary", False, 1, 30.0, 1.0),
    ("rotary", False, 1, 0.0, 16.0)])
def test_the_numpy_step_is_the_torch_step_in_float32(positions, tie, streams, offset, sharp):
    """kvstep.NumpyKVStep (sampling on the CPU) against CharTransformer.step (KVCacheStep),
    from a torch-primed cache, past the context (two slides) and through a beam reordering;
    one stream takes the step's own one-row path. `offset` moves every unit of the residual
    stream far from zero (the one-row LayerNorm's variance then has to be taken centered);
    `sharp` scales queries and keys until attention scores overflow exp unshifted (the one-row
    softmax then has to shift them)."""
    from charwise.generation.kvstep import NumpyKVStep
    from charwise.generation.steps import KVCacheStep, KVState
    from charwise.transformer import CharTransformer
    torch.manual_seed(0)
    net = CharTransformer(11, 16, 2, 4, 8, positions=positions, tie_weights=tie).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
        net.embed.weight.add_(offset)
        for block in net.blocks:
            block.qkv.weight[:2 * net.width].mul_(sharp)
    ids = np.random.default_rng(0).integers(0, 11, (streams, 30))
    prime = torch.as_tensor(ids[:, :5])
    _, cache = net.step(prime, net.new_cache(streams), 0)
    ref, fast = KVCacheStep(net), NumpyKVStep(net)
    a_state = KVState(cache, 5)
    b_state = fast.begin(KVState(tuple(t.clone() for t in cache), 5))
    for i in range(5, 30):
        if i == 17:                                        # a beam search's reordering
            rows = np.array([2, 2, 0] if streams == 3 else [0])
            a_state, b_state = a_state.take(rows), b_state.take(rows)
        a, a_state = ref(ids[:, i], a_state)
        b, b_state = fast(ids[:, i], b_state)
        assert np.abs(a - b).max() < 2e-5, i
    assert b_state.start == int(a_state.cache[-1][0, 0]) and b_state.n == int(a_state.cache[-1][0, 1])


def test_sampling_on_the_cpu_uses_the_numpy_step(run):
    from charwise.generation.kvstep import NumpyKVStep
    from charwise.generation.steps import KVCacheStep, make_step
    net = charwise.load(run).net
    assert isinstance(make_step(net), NumpyKVStep) and isinstance(make_step(net, fast=False), KVCacheStep)
    model = charwise.load(run)
    assert model.generate("ROMEO:", n=60, temperature=0) == model.generate("ROMEO:", n=60, temperature=0, fast=False)


@pytest.mark.parametrize("kw,message", [
    (dict(cell="transformer", hidden_size=256),
     "--hidden-size is a recurrent cell's setting; this run's cell is transformer"),
    (dict(cell="lstm", heads=8), "--heads is a transformer's setting; this run's cell is lstm"),
    (dict(cell="gru", positions="rotary"), "--positions is a transformer's setting"),
    (dict(cell="lstm", tie_weights=True), "--tie-weights is a transformer's setting"),
    (dict(cell="gru", optimizer="muon"), "--optimizer muon steps a transformer's block matrices; "
     "this run's cell is gru"),
])
def test_a_flag_the_cell_has_no_use_for_is_refused(text, tmp_path, kw, message):
    with pytest.raises(CharwiseError, match=message):
        charwise.train(text, out=tmp_path / "r", max_steps=1, **kw, **QUIET)
    assert not (tmp_path / "r").exists()
    # at its default (as a config file lists it): fine
    charwise.train(text, out=tmp_path / "ok", max_steps=1, **{**TINY, "hidden_size": 128}, **QUIET)
