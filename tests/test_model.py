"""model.py: CharRNN's shapes, state, initialisation and parameter names, for each cell.
(Sampling, encoding and decoding live in sample.py's CharModel and data.py's Vocab, and are
tested there; the NumPy twin of this model is tested in test_reference.py.)"""
import pytest
import torch

from charwise.model import CharLSTM, CharRNN, detach_state
from charwise.settings.train import ModelConfig, resolve

CELLS = ["lstm", "gru", "rnn"]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def net_for(cell, layers=2, V=11, E=5, H=7, **kw):
    torch.manual_seed(0)
    return CharRNN(ModelConfig(cell=cell, vocab_size=V, embed_dim=E, hidden_size=H, layers=layers, **kw))


@pytest.mark.parametrize("cell", CELLS)
def test_forward_shapes_and_state_tuple(cell):
    net = net_for(cell).eval()
    x = torch.randint(0, 11, (3, 24))                                 # (B, T)
    logits, state = net(x)
    assert logits.shape == (3, 24, 11)                                # (B, T, V)
    assert len(state) == (2 if cell == "lstm" else 1)                 # (h, c) or (h,)
    assert all(s.shape == (2, 3, 7) for s in state)                   # (L, B, H)
    logits2, state2, top = net(x, state, return_hidden=True)
    assert logits2.shape == (3, 24, 11) and top.shape == (3, 24, 7)   # (B, T, H): the top layer's h
    assert torch.allclose(top[:, -1], state2[0][-1], atol=1e-6)       # its last step is the new h
    zero = net.zero_state(3)
    assert len(zero) == len(state) and all(z.shape == s.shape and not z.any() for z, s in zip(zero, state))
    assert torch.allclose(net(x, zero)[0], logits, atol=1e-6)        # no state = a zero state


@pytest.mark.parametrize("cell", CELLS)
def test_state_carried_across_windows_equals_one_long_pass(cell):
    net = net_for(cell).eval()
    x = torch.randint(0, 11, (3, 24))
    full, _ = net(x)
    a, st = net(x[:, :10])
    b, _ = net(x[:, 10:], st)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-6)


def test_detach_state_keeps_values_and_cuts_the_graph():
    net = net_for("lstm")
    _, state = net(torch.randint(0, 11, (2, 5)))
    assert all(s.requires_grad for s in state)
    cut = detach_state(state)
    assert all(not s.requires_grad and torch.equal(s, t) for s, t in zip(cut, state))


def test_forget_gate_bias_is_one():
    net = CharRNN(ModelConfig(vocab_size=5, hidden_size=4, layers=2))
    H = 4
    for k in range(2):
        total = getattr(net.rnn, f"bias_ih_l{k}") + getattr(net.rnn, f"bias_hh_l{k}")   # the spec's b
        assert torch.equal(total[H:2 * H], torch.ones(H))
        assert torch.equal(total[:H], torch.zeros(H)) and torch.equal(total[2 * H:], torch.zeros(2 * H))
    assert not net.head.bias.any()


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_start_with_zero_biases(cell):
    net = net_for(cell)
    assert all(not p.any() for n, p in net.rnn.named_parameters() if n.startswith("bias"))


@pytest.mark.parametrize("cell", CELLS)
def test_parameter_names_and_shapes_are_torchs(cell):
    """The safetensors keys and layouts the module docstring promises (export and the NumPy
    engine read them by name)."""
    V, E, H, G = 11, 5, 7, GATES[cell]
    shapes = {k: tuple(v.shape) for k, v in net_for(cell, V=V, E=E, H=H).state_dict().items()}
    want = {"embed.weight": (V, E), "head.weight": (V, H), "head.bias": (V,)}
    for k in range(2):
        want |= {f"rnn.weight_ih_l{k}": (G * H, E if k == 0 else H), f"rnn.weight_hh_l{k}": (G * H, H),
                 f"rnn.bias_ih_l{k}": (G * H,), f"rnn.bias_hh_l{k}": (G * H,)}
    assert shapes == want
    assert net_for(cell, V=V, E=E, H=H).num_parameters == sum(torch.Size(s).numel() for s in want.values())


def test_spec_preset_parameter_count():
    mcfg, tcfg = resolve("spec")
    net = CharRNN(ModelConfig(**{**mcfg.__dict__, "vocab_size": 38}))
    # the chapter's count: embed 38*32 + W 512*160 + b 512 + W_out 38*128 + b_out 38 = 88,550;
    # torch keeps two LSTM bias vectors, one 512 more
    assert net.num_parameters == 88_550 + 512
    assert (tcfg.seq_len, mcfg.embed_dim, mcfg.hidden_size) == (40, 32, 128)


def test_dropout_between_layers_only_when_there_are_layers():
    assert net_for("lstm", layers=1, dropout=0.5).rnn.dropout == 0.0     # torch warns otherwise
    deep = net_for("lstm", layers=2, dropout=0.5)
    assert deep.rnn.dropout == 0.5 and deep.drop.p == 0.5
    x = torch.randint(0, 11, (2, 30))
    with torch.no_grad():
        assert torch.equal(deep.eval()(x)[0], deep(x)[0])                # eval: deterministic
        deep.train()
        assert not torch.equal(deep(x)[0], deep(x)[0])                   # training: dropped


def test_vocab_size_must_be_set_and_the_old_name_still_works():
    with pytest.raises(ValueError, match="vocab_size"):
        CharRNN(ModelConfig())
    assert CharLSTM is CharRNN
