"""--optimizer muon (training/muon.py): the Newton-Schulz iteration against a float64 SVD, the
whole update against torch.optim.Muon's (whose iteration runs in bf16: here it is given ours,
so what is compared is everything around it), and a checkpoint's Muon state checked on resume."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import charwise
from charwise.errors import CharwiseError
from charwise.training.muon import Muon, orthogonalize
from conftest import QUIET
from test_transformer_runs import TINY


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("muon") / "shk.txt"
    p.write_text((Path(__file__).parent.parent / "data" / "tinyshakespeare.txt").read_text()[:20_000])
    return p


@pytest.mark.parametrize("shape", [(48, 16), (16, 40), (24, 24)])
def test_orthogonalize_keeps_the_singular_vectors_and_sets_the_values_near_one(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape, dtype=torch.float64)
    x = orthogonalize(g)
    U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    core = U.T @ x @ Vh.T                            # diagonal iff x = U S' V^T
    s = torch.diagonal(core)
    assert (core - torch.diag(s)).abs().max() < 1e-10
    assert 0.6 < s.min() and s.max() < 1.2 and x.shape == g.shape
    # fp32 (what training runs) follows the float64 iteration to rounding
    assert (orthogonalize(g.float()).double() - x).abs().max() < 5e-6


def test_the_update_is_torch_optim_muons(monkeypatch):
    """Three steps of ours and of torch.optim.Muon (weight decay 0.1, its "original" lr scale),
    torch's bf16 iteration swapped for ours: the same weights to float64 rounding."""
    import torch.optim._muon as tm
    monkeypatch.setattr(tm, "_zeropower_via_newtonschulz",
                        lambda g, coefficients, steps, eps: orthogonalize(g, steps, eps))
    torch.manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in ((12, 5), (5, 9))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    a, b = Muon(ours, lr=0.02, weight_decay=0.1), torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    for p, q, p0 in zip(ours, theirs, start):
        assert (p - q).abs().max() < 1e-12 and (p - p0).abs().max() > 1e-3


def test_muon_moves_only_the_block_matrices_and_resumes_refusing_a_damaged_buffer(text, tmp_path):
    charwise.train(text, out=tmp_path / "r", max_steps=4, optimizer="muon", **TINY, **QUIET)
    saved = load_file(tmp_path / "r" / "last.safetensors")
    buffers = sorted(k for k in saved if k.endswith("/momentum_buffer"))
    # 2 blocks x (qkv, attn_out, fc, mlp_out); the embedding, head, norms and biases: AdamW
    assert len(buffers) == 8
    n_params = len(list(charwise.load(tmp_path / "r").net.parameters()))
    assert sum(k.endswith("/exp_avg") for k in saved) == n_params - 8
    meta = _metadata(tmp_path / "r" / "last.safetensors")
    del saved[buffers[0]]
    save_file(saved, tmp_path / "r" / "last.safetensors", metadata=meta)
    with pytest.raises(CharwiseError, match=f"optimizer tensor {buffers[0]} is missing"):
        charwise.train(text, out=tmp_path / "r", resume=True, max_steps=6, **QUIET)


def _metadata(path):
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return f.metadata()
