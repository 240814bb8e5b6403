"""The step functions of sampling: one character per stream in, its logits and the new state out.

Three step functions compute the same thing: `ModuleStep` calls the model (any cell), and
for LSTMs `FusedLSTMStep` (torch, for GPUs) and `NumpyLSTMStep` (NumPy, on the CPU) fold the
embedding and the first layer's input projection into one (V, 4H) table, so a step is a row
lookup, one matmul per layer for the recurrence and one for the head, with no autograd. All feed
the same sampler (sampler.py), so a seed fixes the text whichever step runs.

`Int8LSTMStep` (precision="int8", opt-in) is the NumPy step with int8 recurrent weights: a
one-stream step is bound by reading those weights, so it is faster, and its text is close to
the exact one rather than equal (benchmarks/sampling.py measures both).

`make_step` picks the step for a model, its device and the number of streams; `TimedStep`
(made by `make_timed_step`) times it in blocks and lets a ThreadPolicy choose its CPU threads.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import numpy as np
import torch

from .. import hardware
from ..cells import CELLS, is_attention
from ..errors import CharwiseError
from ..model import CharModule, CharRNN
from ..scoring import fp32_flags
from ..settings.options import SAMPLE_PRECISIONS
from ..settings.train import ModelConfig
from ..threads import (
    ThreadPolicy,
    check_threads,
    get_blas_threads,
    get_torch_threads,
    set_blas_threads,
    set_torch_threads,
)
from ..transformer import CharTransformer
from .kvstep import NumpyKVStep
from .quant import Int8Matrix


class ModuleStep:
    """Reference step: the model's own forward on one character per stream (any cell)."""

    def __init__(self, net: CharRNN):
        self.net = net
        self.device = next(net.parameters()).device

    def begin(self, state):
        return state

    def __call__(self, ids: np.ndarray, state):
        with torch.inference_mode(), fp32_flags(self.device, "fp32"):     # IEEE, as the fused step
            x = torch.as_tensor(ids, device=self.device)[:, None]
            logits, state = self.net(x, state)                   # (S, 1, V)
        return logits[:, 0].float().cpu().numpy(), state


class KVState:
    """A transformer's sampling state: its KV cache (transformer.py's layout, the batch first in
    every tensor) and the absolute position where the cache ends, the same for every stream
    (they all advance one character per step)."""

    def __init__(self, cache: tuple[torch.Tensor, ...], pos: int):
        self.cache, self.pos = cache, pos

    def take(self, rows: np.ndarray) -> KVState:
        """Streams `rows` (repeats allowed: a beam search's reordering), as a new cache."""
        idx = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.cache[0].device)
        return KVState(tuple(t.index_select(0, idx) for t in self.cache), self.pos)


class KVCacheStep:
    """A transformer's step: the new character's keys and values join the cache and it attends
    over the window there (CharTransformer.step: past the context the window slides). Used
    for every transformer, `fast` or not: it is the model's own method, and computes what
    `forward` over the window does (tests/test_transformer.py)."""

    def __init__(self, net: CharTransformer):
        self.net = net
        self.device = next(net.parameters()).device

    def begin(self, state: KVState) -> KVState:
        return state

    def __call__(self, ids: np.ndarray, state: KVState):
        with torch.inference_mode(), fp32_flags(self.device, "fp32"):
            x = torch.as_tensor(ids, device=self.device)[:, None]       # (S, 1)
            logits, cache = self.net.step(x, state.cache, state.pos)    # (S, 1, V)
        return logits[:, 0].float().cpu().numpy(), KVState(cache, state.pos + 1)


class FusedLSTMStep:
    """Fast LSTM step in torch (same maths as nn.LSTM, gate order i, f, g, o): the embedding
    and the first layer's input projection are one (V, 4H) table, so a step is a row lookup
    plus one matmul per layer for the recurrence and one for the head. Used on GPUs."""

    # Tensors here; NumpyLSTMStep holds the same weights as float32 arrays.
    table: Any
    w_hh: list[Any]
    w_ih: list[Any]
    b: list[Any]
    head_w: Any
    head_b: Any

    def __init__(self, net: CharRNN):
        r, L = net.rnn, net.cfg.layers
        with torch.no_grad():
            # (V, 4H): embedding row -> first layer's input projection, biases included
            self.table = (net.embed.weight @ r.weight_ih_l0.T + r.bias_ih_l0 + r.bias_hh_l0).contiguous()
            self.w_hh = [getattr(r, f"weight_hh_l{k}").T.contiguous() for k in range(L)]   # (H, 4H)
            self.w_ih = [None] + [getattr(r, f"weight_ih_l{k}").T.contiguous() for k in range(1, L)]
            self.b = [None] + [(getattr(r, f"bias_ih_l{k}") + getattr(r, f"bias_hh_l{k}")) for k in range(1, L)]
            self.head_w = net.head.weight.T.contiguous()        # (H, V)
            self.head_b = net.head.bias.detach().clone()
        self.H = net.cfg.hidden_size
        self.device = self.table.device

    def begin(self, state):
        return state

    def __call__(self, ids: np.ndarray, state):
        with torch.inference_mode(), fp32_flags(self.device, "fp32"):   # IEEE whatever the caller set
            h, c = state                                        # (L, S, H) each
            x = torch.as_tensor(ids, device=self.device)
            hs, cs, H = [], [], self.H
            inp: Any = None
            for k in range(len(self.w_hh)):
                if k == 0:
                    gates = torch.addmm(self.table[x], h[0], self.w_hh[0])        # (S, 4H)
                else:
                    gates = torch.addmm(self.b[k], inp, self.w_ih[k]).addmm_(h[k], self.w_hh[k])
                ifo = torch.sigmoid(gates)    # g's slice is wasted work, cheaper than 3 calls
                g = torch.tanh(gates[:, 2 * H:3 * H])
                c_new = torch.addcmul(ifo[:, H:2 * H] * c[k], ifo[:, :H], g)
                inp = ifo[:, 3 * H:] * torch.tanh(c_new)
                hs.append(inp)
                cs.append(c_new)
            logits = torch.addmm(self.head_b, inp, self.head_w)                 # (S, V)
            return logits.float().cpu().numpy(), (torch.stack(hs), torch.stack(cs))


class NumpyLSTMStep(FusedLSTMStep):
    """The same fused step in NumPy, for the CPU: for the small products of one step, NumPy's
    BLAS call costs less than torch's dispatch and kernel choice (benchmarks/README.md). The
    recurrent products go through `mm_hh[k](x)` / `mm_ih[k](x)`, so the int8 step swaps them."""

    mm_hh: list[Any]                     # per layer: x -> x @ W_hh (and W_ih from layer 2 on)
    mm_ih: list[Any]

    def __init__(self, net: CharRNN):
        super().__init__(net)
        f32 = lambda t: None if t is None else t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        self.table, self.head_w, self.head_b = f32(self.table), f32(self.head_w), f32(self.head_b)
        self.w_hh, self.w_ih, self.b = ([f32(t) for t in ts] for ts in (self.w_hh, self.w_ih, self.b))
        self.mm_hh = [w.__rmatmul__ for w in self.w_hh]                 # x -> x @ w
        self.mm_ih = [None if w is None else w.__rmatmul__ for w in self.w_ih]

    def begin(self, state):
        return tuple(s.detach().float().cpu().numpy() for s in state)

    def __call__(self, ids: np.ndarray, state):
        h, c = state
        hs, cs, H = [], [], self.H
        inp: Any = None
        # In place where a result is fresh: for many streams each temporary is a large array
        # and fewer of them make the step faster (benchmarks/README.md, section 3b); the
        # arithmetic, and so the text, is unchanged.
        for k in range(len(self.mm_hh)):
            if k == 0:                                   # the sums in the order they had
                gates = self.mm_hh[0](h[0])                                  # (S, 4H), fresh
                gates += self.table[ids]
            else:
                gates = self.mm_ih[k](inp)
                gates += self.b[k]
                gates += self.mm_hh[k](h[k])
            ifo = np.negative(gates)                                         # sigmoid(gates)
            np.exp(ifo, out=ifo)
            ifo += 1.0
            np.reciprocal(ifo, out=ifo)
            ig = np.tanh(gates[:, 2 * H:3 * H])
            ig *= ifo[:, :H]
            c_new = ifo[:, H:2 * H] * c[k]
            c_new += ig
            inp = np.tanh(c_new)
            inp *= ifo[:, 3 * H:]
            hs.append(inp)
            cs.append(c_new)
        if len(hs) == 1:                 # one layer: a view, cheaper than np.stack per step
            return inp @ self.head_w + self.head_b, (inp[None], c_new[None])
        return inp @ self.head_w + self.head_b, (np.stack(hs), np.stack(cs))


# A fused torch step on a GPU costs about the same whatever the model: a host-to-device copy of
# the ids, ~10 kernel launches and a blocking copy of the logits back. The NumPy step on CPU
# copies of the weights costs in proportion to the weights it reads times the streams. Up to
# this many (weights read per step x streams) the CPU copy is expected to be faster: about 8 MB
# of fp32 per step, cache-sized (an estimate, not measured on a GPU; benchmarks/gpu.py times
# both). It covers one stream of the spec and small presets; medium and large stay on the GPU.
CPU_STEP_MAX_WORK = 2 << 20


def step_weights(cfg: ModelConfig) -> int:
    """Weights one fused LSTM step reads: the first layer's recurrence (its input projection
    is a table row), the later layers' input and recurrent matrices, and the head."""
    H, L = cfg.hidden_size, cfg.layers
    return 4 * H * H + (L - 1) * 4 * H * 2 * H + H * cfg.vocab_size


def step_kind(cfg: ModelConfig, training: bool, device_type: str, streams: int,
              fast: bool = True) -> str:
    """Which step samples: "module" (any cell, or fast=False), "numpy" (NumPy on the CPU, with
    CPU copies of the weights when the model is on a GPU) or "fused" (torch, on the GPU)."""
    if not (fast and CELLS[cfg.cell].fast_step != "ModuleStep" and not training):
        return "module"
    # On the CPU NumPy's BLAS wins at every batch measured (benchmarks/sampling.py); on a GPU
    # it wins for few streams of a small model (CPU_STEP_MAX_WORK).
    if device_type == "cpu" or streams * step_weights(cfg) <= CPU_STEP_MAX_WORK:
        return "numpy"
    return "fused"


class Int8LSTMStep(NumpyLSTMStep):
    """NumpyLSTMStep with every recurrent and layer-to-layer matrix in int8 (one scale per
    row, quant.Int8Matrix); the input table and the head stay float32. Opt-in
    (precision="int8"): its text is close to, not the same as, the exact step's for a seed
    (the quality bounds are checked by tests/test_sample_int8.py and benchmarks/sampling.py)."""

    def __init__(self, net: CharRNN):
        super().__init__(net)
        self.mm_hh = [Int8Matrix(w) for w in self.w_hh]
        self.mm_ih = [None if w is None else Int8Matrix(w) for w in self.w_ih]
        self.w_hh = self.w_ih = []                      # the float32 copies are not used


def check_precision(precision: str, net: CharModule | None = None, fast: bool = True) -> str:
    """A sampling precision this model can use, or a one-line error."""
    if precision not in SAMPLE_PRECISIONS:
        raise CharwiseError(f"--precision must be one of {', '.join(SAMPLE_PRECISIONS)}, got {precision!r}")
    if precision == "int8" and not hardware.cpu_has_exact_int8():
        raise CharwiseError(f"--precision int8: {hardware.why_no_int8()}; use --precision fp32")
    if precision == "int8" and net is not None:
        if is_attention(net.cfg.cell):
            raise CharwiseError("--precision int8 samples LSTMs only: a transformer's one-stream "
                                "step is bound by its attention and per-call overhead, not by "
                                "reading its weights, so int8 would not pay; use --precision fp32")
        if net.cfg.cell != "lstm" or not fast:
            raise CharwiseError(f"--precision int8 samples LSTMs only (this run's cell is {net.cfg.cell})"
                                if fast else "precision int8 needs the fast step (fast=True)")
        if next(net.parameters()).device.type != "cpu":
            raise CharwiseError("--precision int8 runs on the CPU (this model is on a GPU)")
    return precision


# net -> (its weights' identity and versions, the int8 step made from them): quantizing and
# packing cost as much as many characters' steps, so repeated calls reuse the step while the
# weights are unchanged (in-place updates bump a tensor's version).
_INT8_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def int8_step(net: CharRNN) -> Int8LSTMStep:
    """The int8 step of `net`'s current weights, made once and kept while they stay."""
    key = tuple((p.data_ptr(), p._version) for p in net.parameters())
    cached = _INT8_STEPS.get(net)
    if cached is None or cached[0] != key:
        cached = _INT8_STEPS[net] = (key, Int8LSTMStep(net))
    return cached[1]


def make_step(net: CharModule, streams: int = 1, fast: bool = True, precision: str = "fp32"):
    """The fastest step for this model, number of streams and precision (fp32: exact)."""
    if isinstance(net, CharTransformer):
        check_precision(precision, net, fast)           # int8 is refused for a transformer
        on_cpu = next(net.parameters()).device.type == "cpu"
        # NumPy on the CPU, as for the LSTM (kvstep.py); the torch step on a GPU, and as the
        # reference (fast=False)
        return NumpyKVStep(net) if fast and on_cpu and not net.training else KVCacheStep(net)
    if check_precision(precision, net, fast) == "int8":
        return int8_step(net)
    kind = step_kind(net.cfg, net.training, next(net.parameters()).device.type, streams, fast)
    return {"module": ModuleStep, "numpy": NumpyLSTMStep, "fused": FusedLSTMStep}[kind](net)


def make_timed_step(net: CharModule, streams: int = 1, fast: bool = True, threads: int | None = None,
                    precision: str = "fp32"):
    """make_step's step with its CPU threads chosen by `threads`: a fixed count, or None to
    measure and choose as it runs (threads.py). On a GPU, the step itself."""
    step = make_step(net, streams, fast, precision)
    if next(net.parameters()).device.type != "cpu" and not isinstance(step, (NumpyLSTMStep, NumpyKVStep)):
        return step
    if isinstance(step, Int8LSTMStep):           # int8 products in torch, the head in NumPy
        both = _TorchAndBlasThreads()
        policy = ThreadPolicy(check_threads(threads), apply=both.apply, current=lambda: 0)
    elif isinstance(step, (NumpyLSTMStep, NumpyKVStep)):     # NumPy's matmuls: OpenBLAS threads
        policy = ThreadPolicy(check_threads(threads), apply=set_blas_threads, current=get_blas_threads)
    else:
        policy = ThreadPolicy(check_threads(threads))
    return TimedStep(step, policy)


class _TorchAndBlasThreads:
    """One thread count for torch and NumPy's BLAS (the int8 step uses both); 0 gives each
    back the count it had."""

    def __init__(self):
        self.original = (get_torch_threads(), get_blas_threads())

    def apply(self, n: int) -> None:
        set_torch_threads(n or self.original[0])
        set_blas_threads(n or self.original[1])


class TimedStep:
    """A step function whose thread count a ThreadPolicy chooses, timed in blocks of `block`
    characters (timing each ~50 us step would cost more than it tells); the policy is
    consulted under a lock, so concurrent callers (the server's threads) cannot corrupt it."""

    def __init__(self, step, policy: ThreadPolicy, block: int = 16):
        self.step, self.policy, self.block = step, policy, block
        self.lock = threading.Lock()
        self._n, self._seconds = 0, 0.0
        self.policy.begin()

    def begin(self, state):
        return self.step.begin(state)

    def __call__(self, ids: np.ndarray, state):
        t = time.perf_counter()
        out = self.step(ids, state)
        dt = time.perf_counter() - t
        with self.lock:
            self._n += 1
            self._seconds += dt
            if self._n >= self.block:
                self.policy.record(self._seconds, self._n)
                self._n, self._seconds = 0, 0.0
                self.policy.begin()
        return out

    def close(self) -> None:
        """Give back the thread count the caller had."""
        self.policy.restore()

