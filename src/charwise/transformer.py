"""CharTransformer: a small decoder-only (GPT-style) causal Transformer over characters.

    x (B, T) ids -> embed (+ learned positions) -> dropout -> L pre-norm blocks -> ln_f -> head

    block:  h = h + drop(attn_out(attention(ln1(h))))
            h = h + drop(mlp_out(gelu(fc(ln2(h)))))

Attention is causal multi-head self-attention through F.scaled_dot_product_attention. With
positions="rotary" q and k are rotated (RoPE) and the model has no position parameters. GELU is
the tanh approximation (GPT-2's), LayerNorm's eps is torch's 1e-5. Parameter names (the
state_dict / safetensors keys; W = width, V = vocab_size, k = block index):

    embed.weight                    (V, W)
    pos.weight                      (context, W)   positions="learned" only
    blocks.{k}.ln1.weight, .bias    (W,)
    blocks.{k}.qkv.weight           (3W, W)        rows: q, k, v; each heads x head_dim, head-major
    blocks.{k}.qkv.bias             (3W,)
    blocks.{k}.attn_out.weight      (W, W)
    blocks.{k}.attn_out.bias        (W,)
    blocks.{k}.ln2.weight, .bias    (W,)
    blocks.{k}.fc.weight            (4W, W)
    blocks.{k}.fc.bias              (4W,)
    blocks.{k}.mlp_out.weight       (W, 4W)
    blocks.{k}.mlp_out.bias         (W,)
    ln_f.weight, ln_f.bias          (W,)
    head.weight                     (V, W)         the same tensor as embed.weight when tied
    head.bias                       (V,)

RoPE layout ("rotate half"): within a head of size d, dimension i pairs with i + d/2 and the
pair turns by the angle p * 10000^(-2i/d) at window position p.

KV cache (`new_cache`, `step`; the inputs/outputs of an exported sampling step). A flat tuple of
2L + 2 tensors, the batch first in every one, so a beam search reorders a cache with
`tuple(t[idx] for t in cache)`:

    cache[2k], cache[2k+1]   keys, values of block k   (B, heads, context, head_dim)  model dtype
    cache[2L]                tokens                    (B, context)  int64
    cache[2L+1]              window                    (B, 2)  int64: [start, length], same in every row

Slot j holds the char at absolute index start + j, encoded at window position j (learned row j,
or rotary angle for j). Slots j >= length are unused (zeros or stale) and masked out. The token
ids are kept so the window can be re-encoded when it slides. `step` writes into the cache in
place and returns it.

Sliding window. While length < context a step appends. When a char arrives and all `context`
slots are full, the window slides: the last `keep` chars (default context // 2) are re-encoded at
window positions 0..keep-1, start moves to the first of them, and the new char follows. Hence
the char at absolute index p is predicted from text[s_p : p + 1], where

    s_p = 0                              for p < context
    s_p = D * ((p - keep) // D)          for p >= context,  D = context - keep

and `step`'s logits for it equal `forward(text[:, s_p : p + 1])[:, -1]`, whichever way the text
is split into `step` calls. keep = context - 1 gives s_p = p - context + 1: exactly `forward` over
the last `context` chars at every step, at the cost of re-encoding context - 1 chars per step;
keep = context // 2 re-encodes once every context - keep steps and always sees at least keep
chars of history. (A ring buffer of rotary keys would never re-encode, but for L > 1 it equals no
`forward` call: the upper blocks' cached keys were computed from chars that have left the window.)
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

State = tuple[torch.Tensor, ...]
Cache = tuple[torch.Tensor, ...]

POSITIONS = ("learned", "rotary")


def rope_tables(slots: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim) of RoPE at window positions `slots` (T,). The angles are computed in
    float64 for a float64 model (so it matches the NumPy reference to rounding) and in float32
    otherwise (float64 is slow or missing on some accelerators)."""
    adt = torch.float64 if dtype == torch.float64 else torch.float32
    inv = 10000.0 ** (-torch.arange(0, head_dim, 2, device=slots.device, dtype=adt) / head_dim)  # (d/2,)
    ang = slots.to(adt)[:, None] * inv[None, :]                # (T, d/2)
    ang = torch.cat([ang, ang], dim=-1)                        # (T, d): pair i with i + d/2
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, d) pairwise: (a, b) -> (a cos - b sin, b cos + a sin)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)   # (-b, a)
    # The tables follow x's dtype, which under autocast may differ from the model's.
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def _attend_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     maps: list[torch.Tensor]) -> torch.Tensor:
    """Causal attention written out (softmax of scaled scores), appending the weights
    (B, heads, T, T) to `maps`. Only for looking inside: it is what sdpa computes, slower."""
    T = q.shape[2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])      # (B, heads, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    w = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    maps.append(w)
    return w @ v                                                    # (B, heads, T, d)


def _attend_cached(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   kv: tuple[torch.Tensor, torch.Tensor], n: int, p: float) -> torch.Tensor:
    """Write the new k, v (B, heads, T, d) into cache slots n..n+T-1, then attend over the whole
    cache with a mask: query i (slot n + i) sees slots 0..n+i. A mask over all `context` slots
    (rather than slicing the filled ones) keeps every shape static, which an export wants."""
    kc, vc = kv
    T, C = q.shape[2], kc.shape[2]
    kc[:, :, n:n + T] = k
    vc[:, :, n:n + T] = v
    slots = torch.arange(C, device=q.device)
    mask = slots[None, :] <= (n + torch.arange(T, device=q.device))[:, None]   # (T, C)
    return F.scaled_dot_product_attention(q, kc.to(q.dtype), vc.to(q.dtype), attn_mask=mask,
                                          dropout_p=p)


class Block(nn.Module):
    """One pre-norm Transformer block: attention then a 4x GELU MLP, each a residual branch."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.attn_p = heads, dropout
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.mlp_out = nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None, n: int = 0,
                maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """h (B, T, W) -> (B, T, W). rope: (cos, sin) or None for learned positions. kv: this
        block's cache to extend from slot n; maps: a list to collect explicit attention weights."""
        q, k, v = self.heads_of(h, rope)
        p = self.attn_p if self.training else 0.0
        if kv is not None:
            y = _attend_cached(q, k, v, kv, n, p)
        elif maps is not None:
            y = _attend_explicit(q, k, v, maps)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.after_attention(h, y)

    # The two halves of `forward` around the attention itself, also called by the exported ONNX
    # step (exporting/onnxkv.py), which writes its cache with tensor positions.
    def heads_of(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None):
        """h (B, T, W) -> q, k, v, each (B, heads, T, d), q and k rotated where `rope` is given."""
        B, T, W = h.shape
        qkv = self.qkv(self.ln1(h)).view(B, T, 3, self.heads, W // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                        # each (B, heads, T, d)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def after_attention(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """h (B, T, W), attention's output y (B, heads, T, d) -> the block's output (B, T, W)."""
        B, T, W = h.shape
        y = y.transpose(1, 2).reshape(B, T, W)                      # heads back side by side
        h = h + self.drop(self.attn_out(y))
        return h + self.drop(self.mlp_out(F.gelu(self.fc(self.ln2(h)), approximate="tanh")))


def _check_sizes(vocab_size: int, width: int, layers: int, heads: int, context: int,
                 dropout: float, positions: str) -> None:
    for name, value in (("vocab_size", vocab_size), ("width", width), ("layers", layers),
                        ("heads", heads), ("context", context)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be 'learned' or 'rotary', got {positions!r}.")
    if width % heads:
        raise ValueError(f"width {width} is not divisible by heads {heads}.")
    if positions == "rotary" and (width // heads) % 2:
        raise ValueError(f"rotary positions need an even head size, but width {width} / heads "
                         f"{heads} is {width // heads}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}.")


class CharTransformer(nn.Module):
    """Character language model: a causal Transformer with CharRNN's forward call shape."""

    pos: nn.Embedding | None
    cfg: Any = None          # the ModelConfig it was built from (model.build_model sets it)

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, context: int,
                 dropout: float = 0.0, positions: str = "learned", tie_weights: bool = False):
        super().__init__()
        _check_sizes(vocab_size, width, layers, heads, context, dropout, positions)
        self.vocab_size, self.width, self.layers, self.heads = vocab_size, width, layers, heads
        self.context, self.head_dim, self.dropout = context, width // heads, dropout
        self.positions, self.tie_weights = positions, tie_weights
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(context, width) if positions == "learned" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        if tie_weights:
            # One tensor, two names: state_dict() lists it under both keys, parameters() once.
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2's init: N(0, 0.02) weights and embeddings, zero biases, unit LayerNorm gains, and
        # the two projections that write into the residual stream scaled by 1/sqrt(2L), so the
        # stream's variance does not grow with depth (each block adds two branches).
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            assert isinstance(block, Block)
            for proj in (block.attn_out, block.mlp_out):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * self.layers))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())   # a tied matrix counts once

    def zero_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        """CharRNN's interface: a Transformer carries no state between windows, so ()."""
        return ()

    def _check_input(self, x: torch.Tensor, fit: bool = True) -> None:
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"x must be a (B, T) tensor of token ids with T >= 1, got shape {tuple(x.shape)}.")
        if fit and x.shape[1] > self.context:
            raise ValueError(f"{x.shape[1]} chars do not fit the context of {self.context}.")

    def _hidden(self, x: torch.Tensor, n: int, cache: Cache | None,
                maps: list[torch.Tensor] | None) -> torch.Tensor:
        """x (B, T) at window positions n..n+T-1 -> final normed hidden (B, T, W)."""
        T = x.shape[1]
        h = self.embed(x)                                           # (B, T, W)
        slots = torch.arange(n, n + T, device=x.device)
        rope = None
        if self.pos is not None:
            h = h + self.pos(slots)                                 # (T, W) broadcast over B
        else:
            rope = rope_tables(slots, self.head_dim, h.dtype)
        h = self.drop(h)
        for k, block in enumerate(self.blocks):
            kv = None if cache is None else (cache[2 * k], cache[2 * k + 1])
            h = block(h, rope, kv, n, maps)
        return self.ln_f(h)                                         # (B, T, W)

    def forward(self, x: torch.Tensor, state: State | None = None, return_hidden: bool = False):
        """x (B, T) int64, T <= context -> logits (B, T, V), () [, final normed hidden (B, T, W)].

        `state` is there for CharRNN's call shape: nothing is carried between windows, so it
        must be None or () (a non-empty state would be silently dropped, hence an error)."""
        if state:
            raise ValueError("a CharTransformer carries no state between windows; pass None or ().")
        self._check_input(x)
        hidden = self._hidden(x, 0, None, None)
        logits = self.head(hidden)                                  # (B, T, V)
        return (logits, (), hidden) if return_hidden else (logits, ())

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """x (T,) or (1, T): one sequence -> attention weights (layers, heads, T, T), row t the
        distribution of query t over keys 0..t. Computed explicitly with dropout off."""
        x = x.reshape(1, -1) if x.dim() == 1 else x
        if x.shape[0] != 1:
            raise ValueError(f"attention_maps takes one sequence, got a batch of {x.shape[0]}.")
        self._check_input(x)
        maps: list[torch.Tensor] = []
        was_training = self.training
        self.eval()
        try:
            self._hidden(x, 0, None, maps)
        finally:
            self.train(was_training)
        return torch.stack([w[0] for w in maps])                    # (L, heads, T, T)

    def new_cache(self, batch_size: int, device=None, dtype=torch.float32) -> Cache:
        """An empty KV cache for `step` (layout in the module docstring), window [0, 0]."""
        shape = (batch_size, self.heads, self.context, self.head_dim)
        kv = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(2 * self.layers)]
        tokens = torch.zeros(batch_size, self.context, device=device, dtype=torch.long)
        window = torch.zeros(batch_size, 2, device=device, dtype=torch.long)
        return (*kv, tokens, window)

    def _extend(self, x: torch.Tensor, cache: Cache, n: int) -> torch.Tensor:
        """Encode x (B, T) into slots n..n+T-1 of the cache -> final normed hidden (B, T, W)."""
        cache[-2][:, n:n + x.shape[1]] = x
        return self._hidden(x, n, cache, None)

    @torch.no_grad()
    def step(self, x: torch.Tensor, cache: Cache, pos: int, keep: int | None = None):
        """Feed x (B, T) (T = 1 to sample, more to prime) at absolute position `pos` -> logits
        (B, T, V), cache. `pos` must be where the cache ends (start + length). Past the context
        the window slides by re-encoding the last `keep` chars (default context // 2); the module
        docstring defines exactly which `forward` call each char's logits equal."""
        C = self.context
        keep = C // 2 if keep is None else keep
        if not 0 <= keep < C:
            raise ValueError(f"keep must lie in [0, context) = [0, {C}), got {keep}.")
        self._check_input(x, fit=False)                             # a long prime slides too
        if len(cache) != 2 * self.layers + 2 or cache[-2].shape[0] != x.shape[0]:
            raise ValueError(f"the cache does not fit this model and a batch of {x.shape[0]}; make it "
                             f"with new_cache({x.shape[0]}).")
        window = cache[-1]
        start, n = window[0].tolist()
        if pos != start + n:
            raise ValueError(f"pos {pos} is not where this cache ends ({start + n}).")
        out, i, T = [], 0, x.shape[1]
        while i < T:
            if n == C:
                # Full: keep the last `keep` chars, re-encoded from window position 0.
                kept = cache[-2][:, C - keep:].clone()
                start, n = pos + i - keep, keep
                if keep:
                    self._extend(kept, cache, 0)
            m = min(T - i, C - n)                                   # as many as fit
            out.append(self.head(self._extend(x[:, i:i + m], cache, n)))   # (B, m, V)
            i, n = i + m, n + m
        window[:, 0], window[:, 1] = start, n
        return torch.cat(out, dim=1), cache
