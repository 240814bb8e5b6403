"""int8 sampling (precision="int8", `charwise sample --precision int8`): the step is used when
asked and only then, it stays close to the exact fp32 step, and on the bundled trained model its
greedy text equals fp32's for >= 200 characters and the loss of its samples, scored by the fp32
model, moves by <= 0.005 nats/char."""
import numpy as np
import pytest
import torch

import charwise
from charwise.cli import main
from charwise.data.vocab import Vocab
from charwise.errors import CharwiseError
from charwise.generation.charmodel import CharModel
from charwise.generation.check import greedy_agreement, sample_loss_gap
from charwise.generation.quant import Int8Matrix, dequantize_rows, quantize_rows
from charwise.generation.steps import Int8LSTMStep, ModuleStep, NumpyLSTMStep, make_step
from charwise.model import CharRNN
from charwise.settings.train import ModelConfig
from conftest import needs_vnni

# The int8 arithmetic (@needs_vnni) runs only where the CPU has VNNI, the only CPUs int8 is
# offered on; the decisions around it are tested everywhere with VNNI faked (`vnni`).


@pytest.fixture
def vnni(monkeypatch):
    monkeypatch.setattr(charwise.hardware, "cpu_has_exact_int8", lambda: True)


@pytest.fixture(scope="module")
def base():
    return charwise.load("base")


def _net(layers=1, cell="lstm", seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(cell=cell, vocab_size=13, embed_dim=6, hidden_size=32, layers=layers)).eval()


@needs_vnni
def test_int8_matrix_is_the_row_quantized_product():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    x = rng.uniform(-1, 1, (5, 64)).astype(np.float32)
    got = Int8Matrix(w)(x)
    weights_only = x @ dequantize_rows(*quantize_rows(w.T)).T       # exact maths on int8 weights
    # what is left is fbgemm's 8-bit rounding of x: far below the product's size
    assert got.shape == (5, 96) and got.dtype == np.float32
    assert np.abs(got - weights_only).max() < 0.02 * np.abs(weights_only).max()
    assert np.abs(got - x @ w).max() < 0.03 * np.abs(x @ w).max()


@needs_vnni
@pytest.mark.parametrize("layers", [1, 2])
def test_int8_step_is_close_to_the_exact_step_but_not_equal(layers):
    net = _net(layers)
    fast, exact = Int8LSTMStep(net), ModuleStep(net)
    st_q, st_e = fast.begin(net.zero_state(3)), exact.begin(net.zero_state(3))
    ids = np.array([1, 5, 7])
    diffs = []
    for _ in range(30):
        lq, st_q = fast(ids, st_q)
        le, st_e = exact(ids, st_e)
        diffs.append(np.abs(lq - le).max())
        ids = le.argmax(1)                           # both follow the exact model's text
    assert 0 < max(diffs) < 0.05


@needs_vnni
def test_precision_picks_the_step_and_reuses_the_int8_one():
    net = _net()
    assert type(make_step(net, 1)) is NumpyLSTMStep
    assert type(make_step(net, 1, precision="fp32")) is NumpyLSTMStep
    step = make_step(net, 1, precision="int8")
    assert type(step) is Int8LSTMStep and make_step(net, 64, precision="int8") is step
    with torch.no_grad():                           # new weights: a new int8 step
        net.rnn.weight_hh_l0.mul_(0.5)
    again = make_step(net, 1, precision="int8")
    assert again is not step
    assert not np.array_equal(again.mm_hh[0].q.numpy(), step.mm_hh[0].q.numpy()) or \
        not np.array_equal(again.mm_hh[0].scale, step.mm_hh[0].scale)


@needs_vnni
def test_generate_uses_int8_only_when_asked(monkeypatch):
    net = _net()
    m = CharModel(net, Vocab(tuple("abcdefghijklm")))
    calls = []
    real = Int8LSTMStep.__call__
    monkeypatch.setattr(Int8LSTMStep, "__call__", lambda self, ids, st: calls.append(1) or real(self, ids, st))
    exact = m.generate("abc", 50, temperature=0)
    assert calls == []
    close = m.generate("abc", 50, temperature=0, precision="int8")
    assert len(calls) == 49 and len(close) == len(exact)
    lq = [lg for lg, _ in m.steps("abc", 5, temperature=0, precision="int8")]
    le = [lg for lg, _ in m.steps("abc", 5, temperature=0)]
    assert np.array_equal(lq[0], le[0])               # the prime runs in fp32 either way
    assert not np.array_equal(lq[-1], le[-1]) and np.allclose(lq[-1], le[-1], atol=0.05)


@pytest.mark.parametrize("kw, match", [
    (dict(precision="bf16"), "--precision must be one of fp32, int8"),
    (dict(precision="int8", fast=False), "fast step"),
])
def test_bad_precision(kw, match, vnni):
    m = CharModel(_net(), Vocab(tuple("abcdefghijklm")))
    with pytest.raises(CharwiseError, match=match):
        m.generate("abc", 5, **kw)


def test_int8_refuses_a_gru(vnni):
    m = CharModel(_net(cell="gru"), Vocab(tuple("abcdefghijklm")))
    with pytest.raises(CharwiseError, match="LSTMs only"):
        m.generate("abc", 5, precision="int8")


@needs_vnni
@pytest.mark.parametrize("prime", ["The night", "ROMEO:", "It was"])
def test_base_greedy_text_is_identical_for_200_characters(base, prime):
    assert greedy_agreement(base, prime, 220) >= 200


@needs_vnni
def test_base_sample_loss_moves_by_at_most_0005(base):
    r = sample_loss_gap(base, "The night", n=200, streams=8, seed=0)
    assert abs(r["expected_gap"]) <= 0.005
    # the literal difference is noisy at this size (~0.03 s.e.), but a broken step shows
    assert abs(r["gap"]) < 0.02 + 3 * r["stderr"] and r["int8"] < 2.5


@needs_vnni
def test_cli_int8_greedy_matches_fp32(capsys):
    args = ["sample", "base", "--prime", "ROMEO:", "-n", "200", "--temperature", "0"]
    assert main(args) == 0
    exact = capsys.readouterr().out
    assert main(args + ["--precision", "int8"]) == 0
    assert capsys.readouterr().out == exact


@pytest.mark.parametrize("extra, match", [
    (["--precision", "int8", "--beam", "2"], "--beam scores continuations exactly"),
    (["--precision", "bf16"], "--precision must be one of fp32, int8"),
])
def test_cli_bad_precision(capsys, extra, match):
    assert main(["sample", "base", "--prime", "The", "-n", "20", *extra]) == 2
    o, e = capsys.readouterr()
    assert o == "" and e.count("\n") == 1 and match in e and "Traceback" not in e


def test_cli_without_the_int8_kernel_prints_nothing(capsys, monkeypatch, vnni):
    import charwise.generation.steps as sample_mod

    def no_kernel(self, w):
        raise CharwiseError("int8 sampling needs PyTorch's fbgemm int8 kernels (x86 CPUs); use precision fp32 here")
    monkeypatch.setattr(Int8Matrix, "__init__", no_kernel)
    monkeypatch.setattr(sample_mod, "_INT8_STEPS", sample_mod.weakref.WeakKeyDictionary())
    assert main(["sample", "base", "--prime", "The", "-n", "20", "--precision", "int8"]) == 2
    o, e = capsys.readouterr()
    assert o == "" and e.count("\n") == 1 and "fbgemm int8 kernels" in e
