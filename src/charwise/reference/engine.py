"""CharLSTM in pure NumPy: the spec's model (ch336), batched, multi-layer, with analytic BPTT.

    x (B, T) ints -> embed -> L recurrent layers -> head -> logits (B, T, V)

It is the torch engine's twin: parameters carry torch's names and layouts (see charwise.model),
so `CharLSTM.from_state_dict(safetensors.numpy.load_file(path))` runs a charwise checkpoint,
and the state is the same tuple of (L, B, H) arrays. Differences from the spec's class, and why:
  * torch layout: W (4H, E+H) in gate order i,f,o,g becomes weight_ih (4H, E) and weight_hh
    (4H, H) in order i,f,g,o, and the bias b is split into bias_ih + bias_hh (layout.py converts);
  * init uses each matrix's own fan-in (E for weight_ih, H for weight_hh) like the torch model,
    where the spec uses E+H for the concatenated W;
  * the loss is the exact log-softmax cross-entropy (the spec adds 1e-10 inside the log);
  * batches of B streams and a carried state instead of one sequence starting from zeros.
Dropout is not implemented: a model whose config asks for it still runs (inference is exact,
dropout being off at evaluation), but the ReferenceTrainer refuses to train it.
"""
from __future__ import annotations

import numpy as np

from ..settings.train import ModelConfig  # plain dataclasses, no torch dependency
from ._blas import one_blas_thread
from ..cells import CELLS as REGISTRY
from .cells import CELLS

State = tuple  # tuple of (L, B, H) arrays: (h, c) for an LSTM, (h,) for a GRU / RNN


class CharLSTM:
    """Character language model; despite the name also runs GRU and vanilla-RNN cells.

    CharLSTM(cfg)  or  CharLSTM(vocab_size=38, embed_dim=32, hidden_size=128, cell="lstm", layers=1)
    dtype: np.float32 (speed) or np.float64 (gradient checks, parity tests).
    """

    def __init__(self, cfg: ModelConfig | None = None, *, dtype=np.float32, seed: int = 0,
                 **sizes):
        cfg = cfg if cfg is not None else ModelConfig(**sizes)
        if cfg.vocab_size < 1:
            raise ValueError("vocab_size must be set before building a model")
        if cfg.cell not in CELLS:
            raise ValueError(f"unknown cell {cfg.cell!r}; choose one of {', '.join(CELLS)}")
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, not {self.dtype}")
        self.G, self.n_state = REGISTRY[cfg.cell].gates, REGISTRY[cfg.cell].state_arity
        self._fwd, self._bwd = CELLS[cfg.cell]
        self.params: dict[str, np.ndarray] = {}
        self.init_params(seed)

    # ---- parameters ------------------------------------------------------------------------

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape, in torch's naming and order."""
        c = self.cfg
        V, E, H, GH = c.vocab_size, c.embed_dim, c.hidden_size, self.G * c.hidden_size
        out: dict[str, tuple[int, ...]] = {"embed.weight": (V, E)}
        for k in range(c.layers):
            out[f"rnn.weight_ih_l{k}"] = (GH, E if k == 0 else H)
            out[f"rnn.weight_hh_l{k}"] = (GH, H)
            out[f"rnn.bias_ih_l{k}"] = (GH,)
            out[f"rnn.bias_hh_l{k}"] = (GH,)
        out["head.weight"] = (V, H)
        out["head.bias"] = (V,)
        return out

    def init_params(self, seed: int = 0) -> None:
        """The torch model's init: embed N(0, 0.1), matrices N(0, fan_in^-1/2), biases 0,
        and LSTM forget-gate bias 1 (in bias_ih; torch's two biases add up to the spec's b)."""
        rng = np.random.default_rng(seed)
        H = self.cfg.hidden_size
        for name, shape in self.shapes().items():
            if name == "embed.weight":
                p = rng.normal(0.0, 0.1, shape)
            elif len(shape) == 2:
                p = rng.normal(0.0, shape[1] ** -0.5, shape)   # fan_in = number of columns
            else:
                p = np.zeros(shape)
                if self.cfg.cell == "lstm" and name.startswith("rnn.bias_ih"):
                    p[H:2 * H] = 1.0       # gate order i,f,g,o: the forget gate is block 1
            self.params[name] = p.astype(self.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, keyed like the torch model's state_dict / safetensors file."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, sd) -> None:
        """Load arrays (or anything np.asarray accepts, e.g. CPU torch tensors) by torch name.

        Values are copied and cast to this model's dtype; names and shapes must match exactly,
        and the arrays are updated in place so optimizers holding them keep working."""
        want = self.shapes()
        missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
        if missing or extra:
            raise KeyError(f"state dict mismatch: missing {missing}, unexpected {extra}")
        for k, shape in want.items():
            v = np.asarray(sd[k])
            if v.shape != shape:
                raise ValueError(f"{k}: expected shape {shape}, got {v.shape}")
            self.params[k][...] = v.astype(self.dtype)

    @classmethod
    def from_state_dict(cls, sd, dtype=np.float32) -> "CharLSTM":
        """Build a model whose sizes and cell are read off a state dict, then load it."""
        V, E = np.shape(sd["embed.weight"])
        GH, H = np.shape(sd["rnn.weight_hh_l0"])
        cell = next(c.name for c in REGISTRY.values() if c.gates == GH // H)
        layers = sum(1 for k in sd if k.startswith("rnn.weight_hh_l"))
        model = cls(ModelConfig(cell=cell, embed_dim=E, hidden_size=H, layers=layers,
                                vocab_size=V), dtype=dtype)
        model.load_state_dict(sd)
        return model

    @property
    def num_parameters(self) -> int:
        return sum(p.size for p in self.params.values())

    def zero_state(self, batch_size: int) -> State:
        shape = (self.cfg.layers, batch_size, self.cfg.hidden_size)
        return tuple(np.zeros(shape, dtype=self.dtype) for _ in range(self.n_state))

    def _layer_params(self, k: int) -> dict[str, np.ndarray]:
        return {n: self.params[f"rnn.{n}_l{k}"]
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

    # ---- forward / loss / backward ---------------------------------------------------------

    @one_blas_thread()   # small matrix products: see _blas.py for why one thread is faster
    def forward(self, x, state: State | None = None):
        """x (B, T) ints, state tuple of (L, B, H) (None = zeros)
        -> logits (B, T, V), new state (tuple of (L, B, H)), cache for backward()."""
        x = np.asarray(x)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"x must be a (B, T) integer array, got {x.dtype} {x.shape}")
        # NumPy would silently wrap a negative index; an out-of-vocabulary id is a caller's bug.
        if x.size and (x.min() < 0 or x.max() >= self.cfg.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        B = x.shape[0]
        state = self.zero_state(B) if state is None else self._check_state(state, B)
        inp = self.params["embed.weight"][x]                          # (B, T, E)
        layer_caches, finals = [], []
        for k in range(self.cfg.layers):
            s0 = tuple(s[k] for s in state)                            # this layer's (B, H) state
            inp, sT, lc = self._fwd(inp, s0, self._layer_params(k))   # inp becomes (B, T, H)
            layer_caches.append(lc)
            finals.append(sT)
        # Reassemble per-layer final states into torch's tuple of (L, B, H).
        new_state = tuple(np.stack([f[j] for f in finals]) for j in range(self.n_state))
        logits = inp @ self.params["head.weight"].T + self.params["head.bias"]  # (B, T, V)
        cache = {"x": x, "layers": layer_caches, "top": inp, "logits": logits}
        return logits, new_state, cache

    def _check_state(self, state, B) -> State:
        state = tuple(np.asarray(s, dtype=self.dtype) for s in state)
        want = (self.cfg.layers, B, self.cfg.hidden_size)
        if len(state) != self.n_state or any(s.shape != want for s in state):
            got = [s.shape for s in state]
            raise ValueError(f"{self.cfg.cell} state must be {self.n_state} array(s) of "
                             f"shape {want}, got {got}")
        return state

    @staticmethod
    def cross_entropy(logits, y) -> float:
        """Mean over all B*T positions of -log softmax(logits)[y]."""
        z = logits - logits.max(axis=-1, keepdims=True)               # stable log-sum-exp
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))       # (B, T, V)
        return float(-np.take_along_axis(logp, np.asarray(y)[..., None], axis=-1).mean())

    def loss(self, x, y, state: State | None = None) -> float:
        """Mean cross-entropy of predicting y (B, T) from x (B, T), starting from `state`."""
        logits, _, _ = self.forward(x, state)
        return self.cross_entropy(logits, y)

    @one_blas_thread()
    def backward(self, cache, y, dstate: State | None = None):
        """Analytic gradients of the mean cross-entropy loss (and optionally of the final state).

        Returns (grads, dstate0): grads maps every parameter name to an array of its shape;
        dstate0 is dLoss/d(initial state), a tuple of (L, B, H) like the state itself.
        dstate: dLoss/d(final state), if the loss also depends on it (default: it does not)."""
        x, logits, top = cache["x"], cache["logits"], cache["top"]
        y = np.asarray(y)
        B, T, V = logits.shape
        N = B * T
        # Softmax cross-entropy: L = -(1/N) sum log p[y]  =>  dL/dlogits = (p - onehot(y)) / N
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)                             # softmax  (B, T, V)
        dlogits = p                                                    # p (reused in place)
        dlogits.reshape(N, V)[np.arange(N), y.reshape(-1)] -= 1.0     # - onehot(y)
        dlogits /= N                                                   # / N   (B, T, V)
        grads = {}
        # logits = top W_out^T + b_out  =>  dW_out = sum dlogits^T top,  db_out = sum dlogits
        grads["head.weight"] = dlogits.reshape(N, V).T @ top.reshape(N, -1)     # (V, H)
        grads["head.bias"] = dlogits.sum(axis=(0, 1))                            # (V,)
        dinp = dlogits @ self.params["head.weight"]                    # dtop = dlogits W_out  (B, T, H)
        if dstate is None:                                            # loss ignores final state
            dstate = tuple(np.zeros((self.cfg.layers, B, self.cfg.hidden_size), self.dtype)
                           for _ in range(self.n_state))
        ds0: list = [None] * self.cfg.layers
        # Layers top to bottom: each backward turns d(its output) into d(its input),
        # which is the d(output) of the layer below (or of the embedding lookup).
        for k in reversed(range(self.cfg.layers)):
            dsT = tuple(d[k] for d in dstate)
            dinp, ds0[k], dp = self._bwd(dinp, dsT, cache["layers"][k], self._layer_params(k))
            for n, g in dp.items():
                grads[f"rnn.{n}_l{k}"] = g
        # Embedding lookup inp = embed[x]: each occurrence of token v adds its row's gradient
        # to dEmbed[v] (add.at, not fancy assignment, so repeated tokens accumulate).
        dembed = np.zeros_like(self.params["embed.weight"])            # (V, E)
        np.add.at(dembed, x.reshape(-1), dinp.reshape(N, -1))
        grads["embed.weight"] = dembed
        # Per-layer dL/d(initial state) reassembled into the state's tuple of (L, B, H).
        dstate0 = tuple(np.stack([d[j] for d in ds0]) for j in range(self.n_state))
        return {k: grads[k] for k in self.params}, dstate0            # in parameter order

    def loss_and_grads(self, x, y, state: State | None = None):
        """One forward + backward: (loss, grads, dstate0, new_state)."""
        logits, new_state, cache = self.forward(x, state)
        grads, dstate0 = self.backward(cache, y)
        return self.cross_entropy(logits, y), grads, dstate0, new_state
