"""evaluate.py: device and precision choice, autocast, the thread handling of a scoring pass,
and exact losses (every position from its full left context) against a naive computation.
(The GPU side of the precision choice, recurrence_precision and fp32_flags: test_gpu_paths.py.)"""
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charwise.data.bytevocab import ByteVocab, per_char_losses
from charwise.errors import CharwiseError
from charwise.model import CharRNN
from charwise.scoring import (
    autocast,
    cpu_has_fast_bf16,
    eval_precision,
    evaluate_bytes,
    evaluate_tokens,
    pick_device,
    pick_precision,
    recurrence_threads,
    token_losses,
)
from charwise.settings.train import ModelConfig
from conftest import needs_bf16

# The exact-scoring module (charwise.evaluate is the API function that uses it).
E = importlib.import_module("charwise.scoring")


def small_net(cell="lstm", V=6, H=8, layers=1, seed=1):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(cell=cell, vocab_size=V, embed_dim=4, hidden_size=H, layers=layers)).eval()


def naive_losses(net, tokens):
    """Per token, the obvious way: re-read the whole prefix, score the next token (O(n^2))."""
    losses, guesses = [], []
    with torch.no_grad():
        for i in range(len(tokens) - 1):
            logits, _ = net(torch.as_tensor(tokens[: i + 1])[None])
            logp = F.log_softmax(logits[0, -1].double(), -1)
            losses.append(-float(logp[tokens[i + 1]]))
            guesses.append(int(logp.argmax()))
    return np.array(losses), np.array(guesses)


# ----------------------------------------------------------------------------- device, precision

def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(CharwiseError, match="no CUDA GPU"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == torch.device("cuda") == pick_device("cuda")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(CharwiseError, match="has 2 CUDA GPU"):
        pick_device("cuda:2")
    for bad in ("cuda:x", "gpu", "cuda:"):            # an API caller's typo: one line, no ValueError
        with pytest.raises(CharwiseError, match="choose auto, cpu, cuda or cuda:N"):
            pick_device(bad)


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_auto_precision_on_cpu_is_bf16_only_for_big_models_on_a_fast_cpu(monkeypatch, fast_bf16):
    monkeypatch.setattr(E, "cpu_has_fast_bf16", lambda: fast_bf16)
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu, ModelConfig(hidden_size=255)) == "fp32"
    assert pick_precision("auto", cpu, ModelConfig(hidden_size=256)) == ("bf16" if fast_bf16 else "fp32")
    assert pick_precision("fp32", cpu, ModelConfig(hidden_size=1024)) == "fp32"   # an explicit choice is kept
    if fast_bf16:
        assert pick_precision("bf16", cpu, ModelConfig(hidden_size=1024)) == "bf16"
    else:                                   # where bf16 is not in hardware: a sentence, not a traceback
        with pytest.raises(CharwiseError, match="--precision bf16: this CPU .*use --precision fp32"):
            pick_precision("bf16", cpu, ModelConfig(hidden_size=64))


def test_auto_evaluation_precision_follows_training_rule():
    small = CharRNN(ModelConfig(vocab_size=5, hidden_size=64))
    big = CharRNN(ModelConfig(vocab_size=5, hidden_size=256))
    assert eval_precision(small) == "fp32"              # overhead-bound: bf16 casts only cost
    assert eval_precision(big) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert eval_precision(big, "fp32") == "fp32"
    if cpu_has_fast_bf16():
        assert eval_precision(small, "bf16") == "bf16"
    else:
        with pytest.raises(CharwiseError, match="--precision bf16"):
            eval_precision(small, "bf16")


def test_autocast_is_on_for_bf16_only():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32


# ----------------------------------------------------------------------------- exact losses

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_token_losses_equal_a_naive_per_token_computation(cell):
    net = small_net(cell, layers=2)
    tokens = np.random.default_rng(0).integers(0, 6, 70)
    parts = list(token_losses(net, tokens, chunk=16))        # 16: the state crosses 4 chunk edges
    assert len(parts) == math.ceil(69 / 16)
    losses = np.concatenate([lo.numpy() for lo, _ in parts])
    guesses = np.concatenate([g.numpy() for _, g in parts])
    ref, ref_guesses = naive_losses(net, tokens)
    assert losses.shape == (69,)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=1e-6)
    assert (guesses == ref_guesses).all()


def test_evaluation_is_exact_one_pass_mean():
    net = small_net()
    tokens = np.random.default_rng(0).integers(0, 6, 300)
    res = evaluate_tokens(net, tokens)
    with torch.no_grad():
        x = torch.as_tensor(tokens[:-1])[None]
        logits, _ = net(x)
        ref = torch.nn.functional.cross_entropy(logits[0], torch.as_tensor(tokens[1:])).item()
    assert res["chars"] == 299
    assert res["loss"] == pytest.approx(ref, rel=1e-6)
    assert res["bits_per_char"] == pytest.approx(ref / math.log(2), rel=1e-6)
    assert res["perplexity"] == pytest.approx(math.exp(ref), rel=1e-6)


def test_too_short_to_evaluate():
    for fn in (evaluate_tokens, evaluate_bytes):
        with pytest.raises(CharwiseError, match="at least 2"):
            fn(small_net(), np.array([1]))


def test_progress_is_reported_and_the_models_mode_restored():
    net = small_net().train()                                 # dropout off here, but train mode
    seen = []
    evaluate_tokens(net, np.random.default_rng(0).integers(0, 6, 5000), on_chunk=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (4999, 4999) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert net.training                                       # scored in eval mode, given back as it was


@needs_bf16
def test_bf16_evaluation_is_close_to_fp32():
    torch.manual_seed(2)
    net = CharRNN(ModelConfig(vocab_size=20, embed_dim=16, hidden_size=320)).eval()
    tokens = np.random.default_rng(1).integers(0, 20, 3000)
    fp32, bf16 = evaluate_tokens(net, tokens, "fp32"), evaluate_tokens(net, tokens, "bf16")
    assert fp32["chars"] == bf16["chars"] == 2999
    assert fp32["loss"] != bf16["loss"]                  # really another arithmetic
    assert bf16["loss"] == pytest.approx(fp32["loss"], abs=5e-3)


def test_byte_model_scores_per_byte_and_per_character():
    ids = ByteVocab().encode("añb€c 世界 ok")
    net = small_net(V=len(ByteVocab()), H=8)
    res = evaluate_bytes(net, ids)
    ref, _ = naive_losses(net, ids)
    assert res == pytest.approx(per_char_losses(ref, ids), rel=1e-5)
    assert res["bytes"] == len(ids) - 1 and res["chars"] == len("añb€c 世界 ok") - 1


# ----------------------------------------------------------------------------- threads

def test_a_scoring_pass_gives_back_the_callers_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for threads in (None, 1):        # None: the measuring policy, which starts at one thread
            evaluate_tokens(small_net(), np.random.default_rng(0).integers(0, 6, 300), threads=threads)
            assert torch.get_num_threads() == 2, threads
    finally:
        torch.set_num_threads(before)


def test_recurrence_threads_one_for_small_models_fixed_when_given():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with recurrence_threads(small_net(H=256)):
            assert torch.get_num_threads() == 1           # a small matmul is not worth sharing
        assert torch.get_num_threads() == 2
        with recurrence_threads(small_net(H=257)):
            assert torch.get_num_threads() == 2           # a big one keeps torch's setting
        with recurrence_threads(small_net(H=257), threads=1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_no_thread_policy_off_the_cpu_even_one_given():
    """Issue 29 item 7: the trainer's measuring policy was used for GPU scoring (a given
    policy was returned before the device was looked at): probes on small chunks and thread
    changes for nothing. Off the CPU there is none; the trainer's is a fixed count there."""
    from charwise.threads import policy_for
    from charwise.training.setup import thread_policy
    given = policy_for(None)
    assert E.eval_policy(torch.device("cuda", 0), given) is None
    assert E.eval_policy(torch.device("cuda", 0), None) is None
    assert E.eval_policy(torch.device("cpu"), given) is given
    assert E.eval_policy(torch.device("cpu"), 1).fixed == 1
    assert thread_policy(None, 4, on_cpu=True).deciding
    gpu = thread_policy(None, 4, on_cpu=False)
    assert gpu.fixed == 1 and not gpu.deciding
    assert thread_policy(2, 4, on_cpu=False).fixed == 2
