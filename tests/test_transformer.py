"""Tests of the causal Transformer cell (charwise.transformer) and its NumPy twin
(charwise.reference.transformer): parity in float64, causality, the KV cache and its sliding
window, attention maps, the constructor's errors, gradients, and that a tiny model learns."""
import ast
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charwise.reference import transformer as ref
from charwise.transformer import CharTransformer

V, WIDTH, HEADS, CONTEXT = 11, 16, 4, 12
CONFIGS = [(positions, tie, layers) for positions in ("learned", "rotary")
           for tie in (False, True) for layers in (1, 2)]


def make(positions="learned", tie=False, layers=2, context=CONTEXT, seed=0, dropout=0.0):
    """A float64 model in eval mode whose every parameter is moved off its init (zero biases
    and unit LayerNorm gains would hide a wrong bias or gain in the parity tests)."""
    torch.manual_seed(seed)
    m = CharTransformer(V, WIDTH, layers, HEADS, context, dropout=dropout, positions=positions,
                        tie_weights=tie).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


def numpy_params(m):
    return {k: v.detach().numpy() for k, v in m.state_dict().items()}


def tokens(B, T, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- parity with the NumPy reference ------------------------------------------------------------

@pytest.mark.parametrize("positions,tie,layers", CONFIGS)
def test_torch_float64_matches_the_numpy_reference(positions, tie, layers):
    m = make(positions, tie, layers)
    x = tokens(3, CONTEXT)
    logits, state = m(x)
    expected = ref.forward(numpy_params(m), x.numpy(), HEADS)
    assert state == ()
    assert np.abs(expected).max() > 0.5                       # the comparison is not of near-zeros
    assert np.abs(logits.detach().numpy() - expected).max() < 1e-10
    short = x[:, :5]                                            # shorter than the context as well
    assert np.abs(m(short)[0].detach().numpy() - ref.forward(numpy_params(m), short.numpy(), HEADS)).max() < 1e-10


def test_reference_reads_a_tied_head_from_the_embedding():
    m = make("rotary", tie=True, layers=1)
    assert m.head.weight is m.embed.weight
    params = numpy_params(m)
    x = tokens(2, 7).numpy()
    full = ref.forward(params, x, HEADS)
    del params["head.weight"]
    assert np.array_equal(ref.forward(params, x, HEADS), full)


def test_reference_module_never_imports_torch():
    path = pathlib.Path(ref.__file__)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    assert "torch" not in names and names <= {"__future__", "math", "re", "numpy"}


def test_forward_returns_the_final_normed_hidden_and_checks_its_input():
    m = make()
    x = tokens(2, 6)
    logits, state, hidden = m(x, (), return_hidden=True)
    assert hidden.shape == (2, 6, WIDTH) and state == ()
    assert torch.allclose(m.head(hidden), logits, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="do not fit the context"):
        m(tokens(1, CONTEXT + 1))
    with pytest.raises(ValueError, match="carries no state"):
        m(x, (torch.zeros(1, 2, 3),))
    assert m.zero_state(4) == ()


def test_num_parameters_counts_a_tied_matrix_once():
    untied = CharTransformer(V, WIDTH, 2, HEADS, CONTEXT)
    tied = CharTransformer(V, WIDTH, 2, HEADS, CONTEXT, tie_weights=True)
    rotary = CharTransformer(V, WIDTH, 2, HEADS, CONTEXT, positions="rotary")
    W = WIDTH
    per_block = 2 * 2 * W + 3 * W * (W + 1) + W * (W + 1) + 4 * W * (W + 1) + W * (4 * W + 1)
    assert untied.num_parameters == (V * WIDTH + CONTEXT * WIDTH + 2 * per_block + 2 * WIDTH
                                     + V * WIDTH + V)
    assert untied.num_parameters - tied.num_parameters == V * WIDTH
    assert untied.num_parameters - rotary.num_parameters == CONTEXT * WIDTH


def test_init_is_gpt2_style():
    torch.manual_seed(0)
    m = CharTransformer(50, 64, 4, 4, 32)
    sd = m.state_dict()
    assert abs(sd["embed.weight"].std().item() - 0.02) < 0.002
    assert abs(sd["blocks.0.fc.weight"].std().item() - 0.02) < 0.002
    assert abs(sd["blocks.3.mlp_out.weight"].std().item() - 0.02 / math.sqrt(8)) < 0.001
    assert abs(sd["blocks.1.attn_out.weight"].std().item() - 0.02 / math.sqrt(8)) < 0.001
    assert all(sd[k].abs().max() == 0 for k in sd if k.endswith(".bias"))
    assert all(torch.all(sd[k] == 1) for k in sd if k.endswith(("ln1.weight", "ln2.weight", "ln_f.weight")))


# ---- causality ----------------------------------------------------------------------------------

@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_later_character_never_changes_earlier_logits(positions):
    m = make(positions, layers=2)
    x = tokens(2, CONTEXT)
    base = m(x)[0]
    for t in (0, 5, CONTEXT - 1):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % V
        changed = m(y)[0]
        assert torch.equal(changed[:, :t], base[:, :t])
        assert (changed[:, t:] - base[:, t:]).abs().max() > 1e-3


# ---- KV cache -----------------------------------------------------------------------------------

def feed(m, x, chunks, keep=None):
    """Feed x (B, N) through `step` in chunks of the given sizes -> logits (B, N, V)."""
    cache, pos, out = m.new_cache(x.shape[0], dtype=torch.float64), 0, []
    for size in chunks:
        logits, cache = m.step(x[:, pos:pos + size], cache, pos, keep=keep)
        assert logits.shape == (x.shape[0], size, V)
        out.append(logits)
        pos += size
    assert pos == x.shape[1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("positions,tie,layers", CONFIGS)
def test_step_equals_forward_within_the_context(positions, tie, layers):
    m = make(positions, tie, layers)
    x = tokens(3, CONTEXT)
    expected = m(x)[0]
    one_by_one = feed(m, x, [1] * CONTEXT)
    primed = feed(m, x, [5] + [1] * (CONTEXT - 5))
    in_pieces = feed(m, x, [3, 4, 1, 4])
    for got in (one_by_one, primed, in_pieces):
        assert (got - expected).abs().max() < 1e-10


def window_start(p, context, keep):
    """The documented s_p: the first char of the window that predicts from char p."""
    if p < context:
        return 0
    D = context - keep
    return D * ((p - keep) // D)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("keep", [None, CONTEXT - 1, 0, 3])
def test_past_the_context_step_equals_forward_on_the_documented_window(positions, keep):
    m = make(positions, layers=2)
    N = 3 * CONTEXT + 5
    x = tokens(2, N)
    k = CONTEXT // 2 if keep is None else keep
    expected = torch.stack([m(x[:, window_start(p, CONTEXT, k):p + 1])[0][:, -1] for p in range(N)], dim=1)
    # One char at a time; and a prime, a chunk across a slide and one longer than the context.
    for chunks in ([1] * N, [4] + [1] * (CONTEXT - 2) + [5, CONTEXT + 3] + [1] * (N - 2 * CONTEXT - 10)):
        assert (feed(m, x, chunks, keep) - expected).abs().max() < 1e-10


def test_keep_context_minus_one_is_forward_on_the_last_context_chars():
    m = make("rotary", layers=2)
    N = 2 * CONTEXT + 3
    x = tokens(2, N)
    got = feed(m, x, [1] * N, keep=CONTEXT - 1)
    for p in range(N):
        last = x[:, max(0, p - CONTEXT + 1):p + 1]
        assert (got[:, p] - m(last)[0][:, -1]).abs().max() < 1e-10


def test_the_cache_layout_and_its_window_bookkeeping():
    m = make(layers=2)
    cache = m.new_cache(3, dtype=torch.float64)
    assert len(cache) == 2 * 2 + 2
    assert all(t.shape == (3, HEADS, CONTEXT, WIDTH // HEADS) and t.dtype == torch.float64 for t in cache[:4])
    assert cache[4].shape == (3, CONTEXT) and cache[4].dtype == torch.long
    assert cache[5].shape == (3, 2) and cache[5].dtype == torch.long
    x = tokens(3, CONTEXT + 1)
    _, cache = m.step(x[:, :5], cache, 0)
    assert cache[5].tolist() == [[0, 5]] * 3 and torch.equal(cache[4][:, :5], x[:, :5])
    _, cache = m.step(x[:, 5:], cache, 5)           # fills the window, then slides for the last char
    assert cache[5].tolist() == [[CONTEXT - CONTEXT // 2, CONTEXT // 2 + 1]] * 3
    assert torch.equal(cache[4][:, :CONTEXT // 2 + 1], x[:, CONTEXT - CONTEXT // 2:])
    with pytest.raises(ValueError, match="is not where this cache ends"):
        m.step(x[:, :1], cache, 3)
    with pytest.raises(ValueError, match="keep must lie"):
        m.step(x[:, :1], cache, CONTEXT + 1, keep=CONTEXT)
    with pytest.raises(ValueError, match="does not fit this model"):
        m.step(x[:2, :1], cache, CONTEXT + 1)


def test_a_cache_reorders_along_the_batch_like_a_beam_search_would():
    m = make("rotary", layers=2)
    x = tokens(3, 8)
    cache = m.new_cache(3, dtype=torch.float64)
    _, cache = m.step(x[:, :6], cache, 0)
    idx = torch.tensor([2, 2, 0])
    cache = tuple(t[idx] for t in cache)
    logits, _ = m.step(x[idx, 6:], cache, 6)
    assert (logits - m(x[idx])[0][:, 6:]).abs().max() < 1e-10


# ---- attention maps -----------------------------------------------------------------------------

@pytest.mark.parametrize("positions,tie,layers", CONFIGS)
def test_attention_maps_are_causal_distributions_and_match_the_reference(positions, tie, layers):
    m = make(positions, tie, layers)
    x = tokens(1, CONTEXT)[0]
    maps = m.attention_maps(x)
    assert maps.shape == (layers, HEADS, CONTEXT, CONTEXT)
    assert (maps.sum(-1) - 1).abs().max() < 1e-12
    below = torch.ones(CONTEXT, CONTEXT, dtype=torch.bool).tril()
    assert torch.all(maps[..., ~below] == 0) and torch.all(maps[..., below] > 0)
    assert np.abs(maps.numpy() - ref.attention_maps(numpy_params(m), x.numpy(), HEADS)).max() < 1e-10
    # The explicit softmax path is what sdpa computes: the same logits come out of it.
    collected = []
    explicit = m.head(m._hidden(x[None], 0, None, collected))
    assert (explicit - m(x[None])[0]).abs().max() < 1e-10 and len(collected) == layers


def test_attention_maps_ignore_dropout_and_restore_training_mode():
    m = make("learned", dropout=0.5).train()
    x = tokens(1, 8)
    a, b = m.attention_maps(x), m.attention_maps(x)
    assert m.training and torch.equal(a, b)
    with pytest.raises(ValueError, match="one sequence"):
        m.attention_maps(tokens(2, 8))


# ---- constructor errors -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(width=30, heads=4), "width 30 is not divisible by heads 4"),
    (dict(width=12, heads=4, positions="rotary"), "rotary positions need an even head size"),
    (dict(context=0), "context must be at least 1"),
    (dict(positions="sinusoidal"), "positions must be 'learned' or 'rotary'"),
    (dict(vocab_size=0), "vocab_size must be at least 1"),
    (dict(dropout=1.0), "dropout must lie in"),
])
def test_bad_sizes_raise_one_clear_value_error(kwargs, message):
    args = dict(vocab_size=V, width=WIDTH, layers=1, heads=HEADS, context=CONTEXT) | kwargs
    with pytest.raises(ValueError, match=message):
        CharTransformer(**args)
    CharTransformer(V, 12, 1, 4, CONTEXT, positions="learned")   # odd head size is fine without RoPE


# ---- training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("positions,tie", [("learned", False), ("rotary", True)])
def test_gradients_reach_every_parameter(positions, tie):
    m = make(positions, tie, layers=2, dropout=0.1).train()
    x, y = tokens(4, CONTEXT, seed=2), tokens(4, CONTEXT, seed=3)
    F.cross_entropy(m(x)[0].reshape(-1, V), y.reshape(-1)).backward()
    names = [n for n, _ in m.named_parameters()]
    assert ("pos.weight" in names) == (positions == "learned") and ("head.weight" in names) != tie
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if positions == "learned":
        assert torch.all(m.pos.weight.grad.abs().sum(-1) > 0)      # every position row is used


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_tiny_model_learns_a_repeating_string(positions):
    text = "the cat sat on the mat. " * 8
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(0)
    m = CharTransformer(len(chars), 32, 1, 2, 16, positions=positions)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def batch():
        starts = torch.randint(0, len(data) - 17, (16,), generator=g)
        windows = torch.stack([data[s:s + 17] for s in starts])
        return windows[:, :-1], windows[:, 1:]

    loss = lambda x, y: F.cross_entropy(m(x)[0].reshape(-1, len(chars)), y.reshape(-1))
    x0, y0 = batch()
    before = loss(x0, y0).item()
    for _ in range(200):
        opt.zero_grad()
        loss(*batch()).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = loss(x0, y0).item()
    assert abs(before - math.log(len(chars))) < 0.1           # starts near uniform (small init)
    assert after < 0.3                                        # log V = 2.4; only window starts are ambiguous
