"""Tests of the pure-NumPy reference engine (charwise.reference).

The engine is checked three independent ways: against finite differences (gradcheck), against
torch autograd (parity in float64), and against the spec's own one-sequence code (layout).
"""
import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charwise.model import CharRNN as TorchCharLSTM
from charwise.reference import (
    Adam,
    AdamW,
    CharLSTM,
    ReferenceTrainer,
    clip_grad_norm_,
    format_table,
    from_spec_layout,
    gradcheck,
    passed,
    run_gradcheck,
    to_spec_layout,
)
from charwise.settings.train import ModelConfig

CELLS_LAYERS = [("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2), ("rnn", 1), ("rnn", 2)]
REF_DIR = pathlib.Path(__file__).resolve().parents[1] / "src" / "charwise" / "reference"


def random_batch(model, B, T, seed=0, state_scale=0.5):
    rng = np.random.default_rng(seed)
    V = model.cfg.vocab_size
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = tuple(rng.normal(0.0, state_scale, s.shape).astype(model.dtype)
                  for s in model.zero_state(B))
    return x, y, state


# ---- gradient check ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell,layers", CELLS_LAYERS)
def test_gradcheck_passes_every_array_and_the_initial_state(cell, layers):
    rows = run_gradcheck(cell=cell, layers=layers, V=7, E=5, H=6, B=2, T=4, seed=3)
    names = [r.name for r in rows]
    assert "state.h" in names and ("state.c" in names) == (cell == "lstm")
    assert len(names) == 3 + 4 * layers + (2 if cell == "lstm" else 1)
    for r in rows:
        assert r.n_checked == int(np.prod(r.shape))      # small model: every entry checked
        assert r.max_rel_err < 1e-6, format_table(rows)
    assert passed(rows)
    assert "PASS" in format_table(rows)


def test_gradcheck_detects_a_slightly_wrong_gradient():
    """A backward that is off by 0.01% in one array must fail, and only in that array."""
    model = CharLSTM(cell="lstm", vocab_size=7, embed_dim=5, hidden_size=6, dtype=np.float64)
    good_bwd = model._bwd

    def bad_bwd(*args):
        dX, ds0, dp = good_bwd(*args)
        dp["weight_hh"] = dp["weight_hh"] * 1.0001
        return dX, ds0, dp

    model._bwd = bad_bwd
    x, y, state = random_batch(model, 2, 4)
    rows = gradcheck(model, x, y, state)
    failed = [r.name for r in rows if r.max_rel_err >= 1e-6]
    assert failed == ["rnn.weight_hh_l0"]
    assert not passed(rows) and "FAIL" in format_table(rows)


def test_gradcheck_samples_big_arrays_and_leaves_the_model_unchanged():
    model = CharLSTM(vocab_size=9, embed_dim=4, hidden_size=5, dtype=np.float64)
    before = model.state_dict()
    x, y, state = random_batch(model, 2, 3)
    rows = gradcheck(model, x, y, state, max_entries=10)
    assert [r.n_checked for r in rows] == [min(10, int(np.prod(r.shape))) for r in rows]
    assert passed(rows)
    for k, v in model.params.items():
        assert np.array_equal(v, before[k])


# ---- parity with the torch engine ---------------------------------------------------------------

def torch_twin(cell, layers, V=7, E=5, H=6, seed=0):
    """A float64 torch CharLSTM with non-trivial biases, and the NumPy model loaded from it."""
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, embed_dim=E, hidden_size=H, layers=layers, vocab_size=V)
    tm = TorchCharLSTM(cfg).double()
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    nm = CharLSTM(cfg, dtype=np.float64)
    nm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, nm


@pytest.mark.parametrize("cell,layers", CELLS_LAYERS)
def test_matches_torch_in_float64(cell, layers):
    tm, nm = torch_twin(cell, layers)
    x, y, state = random_batch(nm, B=3, T=5, seed=1)
    tstate = tuple(torch.tensor(s, requires_grad=True) for s in state)
    tlogits, tnew = tm(torch.tensor(x), tstate)
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, 7), torch.tensor(y).reshape(-1))
    tloss.backward()

    logits, new, cache = nm.forward(x, state)
    grads, dstate = nm.backward(cache, y)
    assert np.abs(logits - tlogits.detach().numpy()).max() < 1e-9
    assert abs(nm.loss(x, y, state) - tloss.item()) < 1e-9
    assert set(grads) == dict(tm.named_parameters()).keys()
    for name, p in tm.named_parameters():
        assert grads[name].shape == p.shape
        assert np.abs(grads[name] - p.grad.numpy()).max() < 1e-9, name
    assert len(new) == len(tnew)
    for a, b in zip(new, tnew):
        assert np.abs(a - b.detach().numpy()).max() < 1e-9
    for a, b in zip(dstate, tstate):
        assert np.abs(a - b.grad.numpy()).max() < 1e-9


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_backward_takes_a_final_state_gradient(cell):
    """backward(cache, y, dstate) adds dL/d(final state): compare with torch on a loss that also
    depends on the final state, L = CE + sum_j <R_j, state_j>."""
    tm, nm = torch_twin(cell, layers=2, seed=1)
    x, y, state = random_batch(nm, B=2, T=3, seed=2)
    R = tuple(np.random.default_rng(3).normal(0, 1, s.shape) for s in state)
    tstate = tuple(torch.tensor(s, requires_grad=True) for s in state)
    tlogits, tnew = tm(torch.tensor(x), tstate)
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, 7), torch.tensor(y).reshape(-1))
    (tloss + sum((s * torch.tensor(r)).sum() for s, r in zip(tnew, R))).backward()
    _, _, cache = nm.forward(x, state)
    grads, dstate = nm.backward(cache, y, dstate=R)
    for name, p in tm.named_parameters():
        assert np.abs(grads[name] - p.grad.numpy()).max() < 1e-9, name
    for a, b in zip(dstate, tstate):
        assert np.abs(a - b.grad.numpy()).max() < 1e-9


def test_torch_checkpoint_loads_through_safetensors(tmp_path):
    from safetensors.numpy import load_file
    from safetensors.torch import save_file
    torch.manual_seed(0)
    tm = TorchCharLSTM(ModelConfig(cell="gru", embed_dim=4, hidden_size=8, layers=2,
                                   vocab_size=11))
    save_file(tm.state_dict(), tmp_path / "model.safetensors")
    nm = CharLSTM.from_state_dict(load_file(tmp_path / "model.safetensors"))
    assert (nm.cfg.cell, nm.cfg.layers, nm.cfg.hidden_size, nm.dtype) == ("gru", 2, 8, np.float32)
    x = np.random.default_rng(0).integers(0, 11, (2, 6))
    logits, state, _ = nm.forward(x)
    with torch.no_grad():
        tlogits, tstate = tm(torch.tensor(x))
    assert logits.dtype == np.float32 and state[0].dtype == np.float32
    assert np.abs(logits - tlogits.numpy()).max() < 1e-5
    assert np.abs(state[0] - tstate[0].numpy()).max() < 1e-5


def test_init_and_state_dict_follow_the_torch_model():
    nm = CharLSTM(vocab_size=30, embed_dim=20, hidden_size=40, layers=2, seed=1)
    tm = TorchCharLSTM(nm.cfg)
    assert {k: v.shape for k, v in nm.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    assert nm.num_parameters == tm.num_parameters
    p = nm.params
    H = 40
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.array_equal(p["rnn.bias_ih_l1"][H:2 * H], np.ones(H, np.float32))
    assert not p["rnn.bias_ih_l1"][:H].any() and not p["rnn.bias_hh_l0"].any()
    assert not p["head.bias"].any()
    assert abs(p["embed.weight"].std() - 0.1) < 0.02
    assert abs(p["rnn.weight_ih_l0"].std() - 20 ** -0.5) < 0.03       # fan_in = E
    assert abs(p["rnn.weight_hh_l0"].std() - 40 ** -0.5) < 0.02       # fan_in = H
    assert [s.shape for s in nm.zero_state(3)] == [(2, 3, 40), (2, 3, 40)]
    other = CharLSTM(nm.cfg, seed=2)
    assert not np.array_equal(other.params["head.weight"], p["head.weight"])
    other.load_state_dict(nm.state_dict())
    assert all(np.array_equal(other.params[k], v) for k, v in p.items())


def test_bad_inputs_are_rejected():
    nm = CharLSTM(vocab_size=5, embed_dim=3, hidden_size=4)
    with pytest.raises(ValueError):
        nm.forward(np.array([[0, 5]]))                     # out of vocabulary
    with pytest.raises(ValueError):
        nm.forward(np.array([[0, -1]]))                    # would silently wrap in NumPy
    with pytest.raises(ValueError):
        nm.forward(np.array([[0, 1]]), (np.zeros((1, 1, 4)),))   # LSTM needs (h, c)
    with pytest.raises(KeyError):
        nm.load_state_dict({"embed.weight": np.zeros((5, 3))})
    with pytest.raises(NotImplementedError):
        ReferenceTrainer(CharLSTM(vocab_size=5, dropout=0.1), lr=1e-3)


# ---- the spec's layout and its own lstm_step ------------------------------------------------------

def spec_params(V, E, H, seed=0):
    """The spec's initialisation (ch336), with a nonzero bias so every term matters."""
    rng = np.random.default_rng(seed)
    embed = rng.normal(0, 0.1, (V, E))
    W = rng.normal(0, np.sqrt(1. / (E + H)), (4 * H, E + H))
    b = rng.normal(0, 0.5, 4 * H)
    b[H:2 * H] += 1.
    W_out = rng.normal(0, np.sqrt(1. / H), (V, H))
    b_out = rng.normal(0, 0.1, V)
    return embed, W, b, W_out, b_out


def spec_lstm_step(W, b, H, x_embed, h_prev, c_prev):
    """The spec's CharLSTM.lstm_step, verbatim apart from taking W, b, H as arguments."""
    sigmoid = lambda z: 1 / (1 + np.exp(-np.clip(z, -500, 500)))   # noqa: E731
    xh = np.concatenate([x_embed, h_prev])
    gates = W @ xh + b
    i = sigmoid(gates[:H]); f = sigmoid(gates[H:2 * H])
    o = sigmoid(gates[2 * H:3 * H]); g = np.tanh(gates[3 * H:])
    c = f * c_prev + i * g; h = o * np.tanh(c)
    return h, c


@settings(max_examples=25, deadline=None)
@given(V=st.integers(1, 9), E=st.integers(1, 6), H=st.integers(1, 7), seed=st.integers(0, 99))
def test_layout_round_trip_is_exact(V, E, H, seed):
    arrays = spec_params(V, E, H, seed)
    sd = from_spec_layout(*arrays)
    assert sd["rnn.weight_ih_l0"].shape == (4 * H, E) and sd["rnn.weight_hh_l0"].shape == (4 * H, H)
    assert not sd["rnn.bias_hh_l0"].any()
    back = to_spec_layout(sd)
    for a, b in zip(arrays, back):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_layout_puts_gates_in_torch_order():
    V, E, H = 3, 2, 2
    embed, W, b, W_out, b_out = spec_params(V, E, H)
    W = np.repeat(np.arange(4.0), H)[:, None] * np.ones((1, E + H))   # block j filled with j
    sd = from_spec_layout(embed, W, np.repeat(np.arange(4.0), H), W_out, b_out)
    expect = np.repeat([0.0, 1.0, 3.0, 2.0], H)                        # i, f, g(=3), o(=2)
    assert np.array_equal(sd["rnn.weight_ih_l0"][:, 0], expect)
    assert np.array_equal(sd["rnn.weight_hh_l0"][:, 0], expect)
    assert np.array_equal(sd["rnn.bias_ih_l0"], expect)


def test_to_spec_layout_sums_the_two_biases():
    nm = CharLSTM(vocab_size=6, embed_dim=3, hidden_size=4, dtype=np.float64)
    nm.params["rnn.bias_hh_l0"][:] = np.arange(16.0)
    _, _, b, _, _ = to_spec_layout(nm.state_dict())
    sd = from_spec_layout(*to_spec_layout(nm.state_dict()))
    assert np.array_equal(sd["rnn.bias_ih_l0"], nm.params["rnn.bias_ih_l0"] + np.arange(16.0))
    assert b[4:8].tolist() == [5.0, 6.0, 7.0, 8.0]                  # forget bias 1 + 4..7
    with pytest.raises(ValueError):
        to_spec_layout(CharLSTM(vocab_size=6, layers=2).state_dict())


def test_engine_equals_the_specs_lstm_step():
    V, E, H, T = 8, 5, 6, 7
    embed, W, b, W_out, b_out = spec_params(V, E, H, seed=4)
    nm = CharLSTM(vocab_size=V, embed_dim=E, hidden_size=H, dtype=np.float64)
    nm.load_state_dict(from_spec_layout(embed, W, b, W_out, b_out))
    tokens = np.random.default_rng(5).integers(0, V, T + 1)

    # The spec's forward(): one sequence from a zero state, one lstm_step per character.
    h, c, spec_logits, spec_loss = np.zeros(H), np.zeros(H), [], 0.0
    for tid, target in zip(tokens[:-1], tokens[1:]):
        h, c = spec_lstm_step(W, b, H, embed[tid], h, c)
        logit = W_out @ h + b_out
        spec_logits.append(logit)
        p = np.exp(logit - logit.max()); p /= p.sum()
        spec_loss -= np.log(p[target] + 1e-10) / T               # the spec's loss()

    logits, (hT, cT), _ = nm.forward(tokens[None, :-1])
    assert np.abs(logits[0] - np.array(spec_logits)).max() < 1e-12
    assert np.abs(hT[0, 0] - h).max() < 1e-12 and np.abs(cT[0, 0] - c).max() < 1e-12
    assert abs(nm.loss(tokens[None, :-1], tokens[None, 1:]) - spec_loss) < 1e-8   # 1e-10 in log


def test_float32_engine_is_close_to_float64():
    m64 = CharLSTM(vocab_size=20, embed_dim=8, hidden_size=16, layers=2, dtype=np.float64)
    m32 = CharLSTM(m64.cfg, dtype=np.float32)
    m32.load_state_dict(m64.state_dict())
    x, y, state = random_batch(m64, 4, 12)
    l64, s64, c64 = m64.forward(x, state)
    l32, s32, c32 = m32.forward(x, state)
    g64, _ = m64.backward(c64, y)
    g32, d32 = m32.backward(c32, y)
    assert l32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    assert all(d.dtype == np.float32 for d in d32)
    assert np.abs(l32 - l64).max() < 1e-5
    for k in g64:
        assert np.abs(g32[k] - g64[k]).max() < 1e-5, k


# ---- optimizer ------------------------------------------------------------------------------------

def _torch_reference_steps(opt_cls, params, grads_seq, decayed, **kw):
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    wd = kw.pop("weight_decay")
    groups = [{"params": [tp[k] for k in tp if k in decayed], "weight_decay": wd},
              {"params": [tp[k] for k in tp if k not in decayed], "weight_decay": 0.0}]
    opt = opt_cls(groups, **kw)
    for grads in grads_seq:
        for k, p in tp.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
    return {k: v.detach().numpy() for k, v in tp.items()}


@pytest.mark.parametrize("ours,theirs", [(AdamW, torch.optim.AdamW), (Adam, torch.optim.Adam)])
def test_adam_matches_torch(ours, theirs):
    rng = np.random.default_rng(0)
    nm = CharLSTM(vocab_size=6, embed_dim=3, hidden_size=4, dtype=np.float64)
    start = nm.state_dict()
    grads_seq = [{k: rng.normal(0, 1, v.shape) for k, v in start.items()} for _ in range(5)]
    kw = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    opt = ours(nm.params, **kw)
    for grads in grads_seq:
        opt.step({k: g.copy() for k, g in grads.items()})
    decayed = {k for k, v in start.items() if v.ndim >= 2 and k != "embed.weight"}
    expect = _torch_reference_steps(theirs, start, grads_seq, decayed, **kw)
    for k in start:
        assert np.abs(nm.params[k] - expect[k]).max() < 1e-12, k
        assert np.abs(nm.params[k] - start[k]).max() > 1e-3            # it really moved
    assert opt.state()["step"] == 5


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(1)
    grads = {"a": rng.normal(0, 1, (3, 4)), "b": rng.normal(0, 1, 5)}
    tgrads = [torch.tensor(g) for g in grads.values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads):
        p.grad = g.clone()
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    norm = clip_grad_norm_(grads, max_norm)
    assert abs(norm - tnorm.item()) < 1e-12
    for g, p in zip(grads.values(), tparams):
        assert np.abs(g - p.grad.numpy()).max() < 1e-12


# ---- training ----------------------------------------------------------------------------------

def windows(text, B, T):
    """Consecutive (x, y) windows from B contiguous streams, as the charwise train loop cuts them."""
    chars = sorted(set(text))
    ids = np.array([chars.index(ch) for ch in text])
    n = (len(ids) - 1) // B
    xs, ys = ids[:n * B].reshape(B, n), ids[1:n * B + 1].reshape(B, n)
    return len(chars), [(xs[:, s:s + T], ys[:, s:s + T]) for s in range(0, n - T + 1, T)]


def test_short_training_run_learns_a_repeated_text():
    V, wins = windows("hello world " * 20, B=4, T=15)
    model = CharLSTM(vocab_size=V, embed_dim=8, hidden_size=32, seed=0)
    tr = ReferenceTrainer(model, lr=1e-2, grad_clip=1.0)
    losses = []
    for step in range(150):
        if step % len(wins) == 0:
            tr.reset_state()                      # back to the start of the streams
        losses.append(tr.step(*wins[step % len(wins)]))
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert first > 0.8 * np.log(V)                # starts near chance
    assert last < 0.5 * first, (first, last)
    assert np.isfinite(tr.last_grad_norm)
    st_ = tr.optimizer_state()
    assert st_["step"] == 150 and set(st_["exp_avg"]) == set(model.params)
    assert all(p.dtype == np.float32 for p in model.params.values())


def test_trainer_carries_the_state_between_windows():
    V, wins = windows("the quick brown fox jumps over the lazy dog " * 3, B=2, T=6)
    model = CharLSTM(vocab_size=V, embed_dim=4, hidden_size=8, dtype=np.float64)
    tr = ReferenceTrainer(model, lr=0.0)         # lr 0: weights stay put, only the state moves
    (x1, y1), (x2, y2) = wins[0], wins[1]
    l1 = tr.step(x1, y1)
    _, s1, _ = model.forward(x1)
    assert l1 == pytest.approx(model.loss(x1, y1))
    assert all(np.array_equal(a, b) for a, b in zip(tr.state, s1))
    l2 = tr.step(x2, y2)
    assert l2 == pytest.approx(model.loss(x2, y2, s1), abs=1e-14)
    assert abs(l2 - model.loss(x2, y2)) > 1e-6     # the carried state made a difference
    tr.reset_state(2)
    assert not tr.state[0].any()


# ---- no torch in the reference engine ---------------------------------------------------------------

def test_reference_code_never_imports_torch():
    """The reference modules (and charwise.settings.train and charwise.cells, which they use)
    import no torch, even at run time. The parent package's __init__ is bypassed with a bare
    stand-in, so this checks our code alone, whatever charwise/__init__.py imports."""
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('charwise'); pkg.__path__ = [%r]; sys.modules['charwise'] = pkg\n"
        "from charwise.reference import run_gradcheck, CharLSTM, ReferenceTrainer\n"
        "assert all(r.max_rel_err < 1e-6 for r in run_gradcheck('gru', T=2))\n"
        "m = CharLSTM(vocab_size=5, embed_dim=3, hidden_size=4)\n"
        "ReferenceTrainer(m, lr=1e-2).step([[1, 2, 3]], [[2, 3, 4]])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    ) % str(REF_DIR.parent)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sources = sorted(REF_DIR.glob("*.py"))
    assert len(sources) >= 6
    for path in sources:
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
        # Every import statement, resolved: only NumPy, the standard library, our own modules
        # and charwise.settings.train and charwise.cells (torch-free) are allowed.
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("charwise.reference" if node.level == 1 else "charwise" if node.level == 2
                          else "") + ("." if node.level and node.module else "") + (node.module or "")]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ("numpy", "math", "re", "typing", "__future__", "contextlib", "ctypes",
                               "functools", "charwise"), (path, name)
                if top == "charwise":
                    allowed = ("charwise.settings.train", "charwise.cells")
                    assert name.startswith("charwise.reference") or name in allowed, (path, name)


def test_import_charwise_reference_does_not_load_torch():
    """The user-facing promise: `import charwise.reference` alone leaves torch unloaded. This also
    depends on charwise/__init__.py importing its torch-based API lazily."""
    code = ("import sys, charwise.reference\n"
            "mods = sorted(m for m in sys.modules if m.startswith('charwise'))\n"
            "assert 'torch' not in sys.modules, 'torch was imported; charwise modules loaded: %s' % mods\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_blas_is_single_threaded_inside_the_engine_and_restored_after():
    from charwise.reference._blas import _openblas_controls, one_blas_thread
    controls = _openblas_controls()
    if controls is None:                       # not an OpenBLAS we can steer: must be a no-op
        with one_blas_thread():
            pass
        return
    get, set_ = controls
    before = get()
    set_(2)
    try:
        seen = []
        with one_blas_thread():
            seen.append(get())
            with one_blas_thread():            # nesting keeps 1 and restores nothing early
                seen.append(get())
            seen.append(get())
        assert seen == [1, 1, 1] and get() == 2
    finally:
        set_(before)
