"""CharRNN: embedding -> recurrent layers -> linear head. Nothing else lives here.

The recurrent core is PyTorch's own nn.LSTM / nn.GRU / nn.RNN, so CPU (oneDNN) and GPU (cuDNN)
kernels are used as they are. Parameter names (the safetensors keys) are therefore torch's:

    embed.weight            (V, E)
    rnn.weight_ih_l{k}      (G*H, E or H)   G = 4 for LSTM (gates i,f,g,o), 3 for GRU (r,z,n), 1 for RNN
    rnn.weight_hh_l{k}      (G*H, H)
    rnn.bias_ih_l{k}        (G*H,)
    rnn.bias_hh_l{k}        (G*H,)
    head.weight             (V, H)
    head.bias               (V,)

The recurrent state is always a tuple of tensors of shape (L, B, H): (h, c) for an LSTM, (h,)
for a GRU or RNN, so code that carries, detaches or saves it need not care which cell it is.
"""
from __future__ import annotations

import torch
from torch import nn

from .cells import cell, is_attention
from .settings.train import ModelConfig
from .transformer import CharTransformer

State = tuple[torch.Tensor, ...]

class CharRNN(nn.Module):
    """Character language model: an LSTM, GRU or vanilla-RNN core (`cfg.cell`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("vocab_size must be set before building a model")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        # nn.LSTM applies dropout between layers only; we add it on the embedding output and
        # before the head as well, which is where a 1-layer model needs it.
        self.rnn = getattr(nn, cell(cfg.cell).torch)(
            cfg.embed_dim, cfg.hidden_size, num_layers=cfg.layers, batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The spec's init: small embeddings, zero biases, forget-gate bias 1 (so the cell
        # remembers by default early in training). torch's LSTM has two bias vectors; their sum
        # is the spec's single b, so the 1 goes in bias_ih and bias_hh stays zero.
        nn.init.normal_(self.embed.weight, 0.0, 0.1)
        H, gates = self.cfg.hidden_size, cell(self.cfg.cell).gate_names
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias"):
                nn.init.zeros_(p)
                if "f" in gates and name.startswith("bias_ih"):       # a forget gate (LSTM)
                    f = gates.index("f")
                    with torch.no_grad():
                        p[f * H:(f + 1) * H] = 1.0
            else:
                fan_in = p.shape[1]
                nn.init.normal_(p, 0.0, fan_in ** -0.5)
        nn.init.normal_(self.head.weight, 0.0, H ** -0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def zero_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        shape = (self.cfg.layers, batch_size, self.cfg.hidden_size)
        n = cell(self.cfg.cell).state_arity
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))

    def forward(self, x: torch.Tensor, state: State | None = None,
                return_hidden: bool = False):
        """x: (B, T) int64 -> logits (B, T, V), new state; optionally the top layer's h (B, T, H)."""
        emb = self.drop(self.embed(x))                       # (B, T, E)
        if emb.is_cuda and torch.is_autocast_enabled("cuda"):
            # Under CUDA autocast cuDNN RNNs go through a wrapper that casts them to fp16
            # whatever the autocast dtype (aten/src/ATen/cudnn/AutocastRNN.cpp): "bf16" would
            # be fp16 with no GradScaler. So the recurrence runs outside autocast, in fp32 (its
            # precision is recorded in run.json: evaluate.recurrence_precision); the head
            # still runs in the autocast dtype.
            with torch.autocast("cuda", enabled=False):
                out, new = self._recurrence(emb.float(), None if state is None
                                            else tuple(s.float() for s in state))
        else:
            out, new = self._recurrence(emb, state)
        logits = self.head(self.drop(out))                    # (B, T, V)
        if return_hidden:
            return logits, new, out
        return logits, new

    def _recurrence(self, emb: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if state is None:
            out, new = self.rnn(emb)
        elif len(state) > 1:                       # (h, c): nn.LSTM takes the pair
            out, new = self.rnn(emb, tuple(state))
        else:
            out, new = self.rnn(emb, state[0])
        return out, tuple(new) if isinstance(new, tuple) else (new,)


CharModule = CharRNN | CharTransformer        # what `build_model` makes


def build_model(cfg: ModelConfig) -> CharModule:
    """The torch model `cfg` describes: a CharRNN, or for --cell transformer a CharTransformer
    (width embed_dim, context cfg.context) with the config attached as CharRNN's is."""
    if not is_attention(cfg.cell):
        return CharRNN(cfg)
    if cfg.context < 1:
        raise ValueError("a transformer's context must be set (from --seq-len) before building it")
    net = CharTransformer(cfg.vocab_size, cfg.embed_dim, cfg.layers, cfg.heads, cfg.context,
                          cfg.dropout, cfg.positions, cfg.tie_weights)
    net.cfg = cfg
    return net


# The name this class had before GRU and RNN cores were added; kept so that code written
# against `charwise.model.CharLSTM` still runs. (charwise.reference.CharLSTM is the NumPy one.)
CharLSTM = CharRNN


def detach_state(state: State) -> State:
    """Cut the graph at a window boundary (truncated BPTT) but keep the values (carried state).
    The state is kept in float32 whatever dtype autocast produced it in (bf16 on a CPU): the
    conversion is exact, autocast casts it back for the next window, and a checkpoint then
    holds float32 state that any device and precision can resume from."""
    return tuple(s.detach().float() for s in state)
