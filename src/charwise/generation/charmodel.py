"""Sampling: prime the state with every prime character, then draw one character at a time
with temperature, top-k and top-p, streaming as it goes.

Three step functions compute the same thing: `ModuleStep` calls the model (any cell), and
for LSTMs `FusedLSTMStep` (torch, for GPUs) and `NumpyLSTMStep` (NumPy, on the CPU) fold the
embedding and the first layer's input projection into one (V, 4H) table, so a step is a row
lookup, one matmul per layer for the recurrence and one for the head, with no autograd. All feed
the same sampler, which draws from float64 probabilities by inverse CDF with one uniform number per character from a
seeded NumPy generator, so a seed fixes the text whichever path runs.

`Int8LSTMStep` (precision="int8", opt-in) is the NumPy step with int8 recurrent weights: a
one-stream step is bound by reading those weights, so it is faster, and its text is close to
the exact one rather than equal (benchmarks/sampling.py measures both).
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .. import hardware
from ..bounds import check_inference, expected_shapes
from ..data.bytevocab import ByteVocab
from ..data.corpus import AnyVocab, vocab_from_info
from ..data.lines import NoveltyFilter, encode_items, evaluate_items, read_items, split_items
from ..errors import CharwiseError
from ..guards import check_finite
from ..model import CharRNN
from ..runs.bundled import sha256_file
from ..runs.rundir import BEST, LAST, RUN_JSON, check_run_dir, load_tensors, read_run, run_json_path, tensor_shapes
from ..scoring import eval_precision, evaluate_bytes, evaluate_tokens, fp32_flags, pick_device
from ..settings.options import GREEDY_BELOW, MAX_SEED
from ..settings.train import ModelConfig, build
from ..threads import (
    ThreadPolicy,
    check_threads,
    get_blas_threads,
    get_torch_threads,
    set_blas_threads,
    set_torch_threads,
)
from .beam import beam_search, check_beam
from .loop import Generation, run
from .prime import fit_prime
from .quant import Int8Matrix
from .stops import parse_stops

MAX_CHARS = 10_000_000
PRIME_LOGITS_BUDGET = 1 << 22      # logit values per priming call (16 MB in fp32)


def check_sampling_args(n: int, temperature: float, top_k: int | None, top_p: float | None,
                        num_samples: int = 1, seed: int | None = None) -> None:
    """One-line errors for arguments no sampler can honour."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed <= MAX_SEED):
        raise CharwiseError(f"--seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise CharwiseError(f"-n must be a whole number >= 0, got {n!r}")
    if n > MAX_CHARS:
        raise CharwiseError(f"-n {n} is too large (at most {MAX_CHARS:,} characters per call)")
    t = float(temperature)
    if not np.isfinite(t) or t < 0:
        raise CharwiseError(f"--temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise CharwiseError(f"--top-k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and not (np.isfinite(top_p) and 0 < top_p <= 1):
        raise CharwiseError(f"--top-p must be in (0, 1], got {top_p!r}")
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or not 1 <= num_samples <= 4096:
        raise CharwiseError(f"--num-samples must be an integer in [1, 4096], got {num_samples!r}")


def filter_probs(logits: np.ndarray, temperature: float, top_k: int | None = None,
                 top_p: float | None = None) -> np.ndarray:
    """(S, V) logits -> (S, V) float64 probabilities after temperature, top-k and top-p; a
    temperature below GREEDY_BELOW is greedy: all the probability on the likeliest."""
    if temperature < GREEDY_BELOW:
        p = np.zeros(logits.shape, dtype=np.float64)
        p[np.arange(len(p)), logits.argmax(axis=1)] = 1.0
        return p
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        # keep the smallest prefix whose mass reaches top_p (the first char always stays)
        keep_sorted = np.cumsum(sorted_p, axis=1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p


def draw(logits: np.ndarray, rng: np.random.Generator, temperature: float,
         top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """One id per row of (S, V) logits. A temperature below GREEDY_BELOW (0 too) is greedy."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(axis=1)
    p = filter_probs(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(len(p))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)


# ----------------------------------------------------------------------------- step functions

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
    if not (fast and cfg.cell == "lstm" and not training):
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


PRECISIONS = ("fp32", "int8")


def check_precision(precision: str, net: CharRNN | None = None, fast: bool = True) -> str:
    """A sampling precision this model can use, or a one-line error."""
    if precision not in PRECISIONS:
        raise CharwiseError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and not hardware.cpu_has_exact_int8():
        raise CharwiseError(f"--precision int8: {hardware.why_no_int8()}; use --precision fp32")
    if precision == "int8" and net is not None:
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


def make_step(net: CharRNN, streams: int = 1, fast: bool = True, precision: str = "fp32"):
    """The fastest step for this model, number of streams and precision (fp32: exact)."""
    if check_precision(precision, net, fast) == "int8":
        return int8_step(net)
    kind = step_kind(net.cfg, net.training, next(net.parameters()).device.type, streams, fast)
    return {"module": ModuleStep, "numpy": NumpyLSTMStep, "fused": FusedLSTMStep}[kind](net)


def make_timed_step(net: CharRNN, streams: int = 1, fast: bool = True, threads: int | None = None,
                    precision: str = "fp32"):
    """make_step's step with its CPU threads chosen by `threads`: a fixed count, or None to
    measure and choose as it runs (threads.py). On a GPU, the step itself."""
    step = make_step(net, streams, fast, precision)
    if next(net.parameters()).device.type != "cpu" and not isinstance(step, NumpyLSTMStep):
        return step
    if isinstance(step, Int8LSTMStep):           # int8 products in torch, the head in NumPy
        both = _TorchAndBlasThreads()
        policy = ThreadPolicy(check_threads(threads), apply=both.apply, current=lambda: 0)
    elif isinstance(step, NumpyLSTMStep):        # NumPy's matmuls: OpenBLAS threads
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


# ----------------------------------------------------------------------------- the model API

def load_model(run_dir: str | Path, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[CharRNN, AnyVocab, dict]:
    """(CharRNN in eval mode, Vocab, run info) from a run directory; no code is executed."""
    p = check_run_dir(run_dir)
    info = read_run(p)
    where = run_json_path(p)
    try:
        vocab = vocab_from_info(info)
        cfg = build(ModelConfig, info["model"])
    except (CharwiseError, TypeError) as e:
        raise CharwiseError(f"{where}: invalid model description ({e})") from None
    if isinstance(cfg.vocab_size, bool) or not isinstance(cfg.vocab_size, int):
        raise CharwiseError(f"{where}: the model's vocab_size must be an integer, got "
                            f"{cfg.vocab_size!r}")
    if cfg.vocab_size != len(vocab):
        raise CharwiseError(f"{where}: vocabulary has {len(vocab)} characters but the "
                            f"model expects {cfg.vocab_size}")
    path = _weights_file(p, which)
    # sizes before any allocation: what the config asks for must fit, and the file's shapes
    # (read from its header) must be the config's
    check_inference(cfg, str(where), device=torch.device(device))
    expected = expected_shapes(cfg)
    stored = tensor_shapes(path)
    prefix = "model/" if any(k.startswith("model/") for k in stored) else ""
    missing = sorted(k for k in expected if prefix + k not in stored)
    if missing:
        raise CharwiseError(f"{path}: weights missing for {', '.join(missing[:5])}")
    for k, shape in expected.items():
        if stored[prefix + k] != shape:
            raise CharwiseError(f"{path}: {k} has shape {stored[prefix + k]}, but the "
                                f"vocabulary and config in {RUN_JSON} need {shape}")
    tensors, _ = load_tensors(path)
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    check_finite(path, {k: weights[k] for k in expected})
    model = CharRNN(replace(cfg))
    model.load_state_dict({k: weights[k].float() for k in expected})
    return model.to(device).eval(), vocab, info


def _weights_file(p: Path, which: str) -> Path:
    """The weights `which` asks for: a packed model's own file (it holds one set), or in a run
    directory the first of best/last (last/best) that is there, whatever it is (a FIFO or a
    device in its place is then refused)."""
    if p.is_file():
        if which != "best":
            raise CharwiseError(f"{p}: a packed model holds one set of weights (the run's best); "
                                f"--which {which} needs the run directory")
        return p
    files = {"best": [BEST, LAST], "last": [LAST, BEST]}[which]
    path = next((p / f for f in files if os.path.lexists(p / f)), None)
    if path is None:
        raise CharwiseError(f"{p}: run directory holds no weights yet ({BEST} / {LAST})")
    return path


@dataclass
class CharModel:
    """A trained model with its vocabulary: what `charwise.load(run_dir)` returns."""
    net: CharRNN
    vocab: AnyVocab
    info: dict = field(default_factory=dict)

    @property
    def line_mode(self) -> bool:
        """Trained with --line-mode: every sample is one item, started after the end symbol."""
        return bool(self.info.get("line_mode", False))

    @property
    def end_id(self) -> int | None:
        """The end-of-item symbol a sample may draw: line mode's. Outside line mode none: a
        byte vocabulary has one all the same, which no text holds, so it is masked (_no_end)."""
        return self.vocab.end_id if self.line_mode else None

    def _no_end(self, logits: np.ndarray) -> np.ndarray:
        """(S, V) logits, the end symbol's set to -inf (in place) outside line mode."""
        if self.vocab.end_id is not None and not self.line_mode:
            logits[:, self.vocab.end_id] = -np.inf
        return logits

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def fit_prime(self, prime: str, oov: str = "error") -> tuple[str, str]:
        """(the prime as the model reads it: quotes matched to the corpus's forms and, with
        oov="skip", unknown characters dropped; a note saying what changed, or "")."""
        if not isinstance(prime, str):
            raise CharwiseError("the prime must be text")
        if isinstance(self.vocab, ByteVocab):
            return prime, ""                                 # any text is bytes: nothing to fit
        return fit_prime(prime, self.vocab.chars, oov)

    @torch.inference_mode()
    def prime(self, prime: str, num_samples: int = 1, oov: str = "error", fast: bool = True):
        """Run every prime character through the model. Returns (last logits (S, V), state)."""
        if not isinstance(prime, str):
            raise CharwiseError("the prime must be text")
        try:
            prime.encode("utf-8")
        except UnicodeEncodeError:
            raise CharwiseError("the prime contains a lone surrogate (not valid Unicode text)") from None
        prime, _ = self.fit_prime(prime, oov)                    # what the model reads
        ids = self.vocab.encode(prime, oov=oov)
        if self.line_mode:                                   # an item starts after an end symbol
            ids = np.concatenate([[self.vocab.end_id], ids]).astype(np.int64)
        state = self.net.zero_state(num_samples, self.device)
        if len(ids) == 0:
            # No prime: the first character comes from the corpus's character frequencies.
            counts = np.asarray(self.info.get("char_counts") or np.ones(len(self.vocab)), float)
            return np.log(np.maximum(counts, 1e-12))[None].repeat(num_samples, 0), state
        x = torch.as_tensor(ids, device=self.device)[None].expand(num_samples, -1)
        # the prime in as few calls as fit: each call's logits are S x piece x V values, so a
        # large vocabulary takes shorter pieces (only the last position's logits are kept)
        piece = max(1, PRIME_LOGITS_BUDGET // (num_samples * len(self.vocab)))
        with fp32_flags(self.device, "fp32"):      # IEEE on a GPU, as the steps that follow
            for s in range(0, x.shape[1], piece):
                logits, state = self.net(x[:, s: s + piece], state)
        return logits[:, -1].float().cpu().numpy(), state

    def steps(self, prime: str = "", n: int = 200, temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
              num_samples: int = 1, oov: str = "error", fast: bool = True,
              threads: int | None = None, precision: str = "fp32") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The sampling loop: yield n times (logits (S, V) drawn from, ids (S,) drawn).
        `threads`: CPU threads of the step (None: measured and chosen as it runs; the text is
        the same either way). `precision`: "fp32" (exact) or "int8" (LSTMs on the CPU: int8
        recurrent weights, faster; the prime still runs in fp32)."""
        check_sampling_args(n, temperature, top_k, top_p, num_samples, seed)
        check_threads(threads)
        check_precision(precision, self.net, fast)
        rng = np.random.default_rng(seed)
        logits, state = self.prime(prime, num_samples, oov)
        step = make_timed_step(self.net, num_samples, fast, threads, precision)
        state = step.begin(state)
        # No inference_mode around the loop: a generator would leak it into the caller's code
        # between yields; each step function enters it for its own torch work.
        try:
            for i in range(n):
                logits = self._no_end(logits)
                ids = draw(logits, rng, temperature, top_k, top_p)   # (S,)
                yield logits, ids
                if i + 1 < n:
                    logits, state = step(ids, state)
        finally:
            if isinstance(step, TimedStep):
                step.close()

    def stream(self, prime: str = "", n: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               num_samples: int = 1, oov: str = "error", fast: bool = True,
               threads: int | None = None, stop: str | Sequence[str] | None = None,
               keep_stop: bool = False, result: Generation | None = None,
               precision: str = "fp32") -> Iterator[list[str]]:
        """Yield, step by step, a list of num_samples new texts (usually one character each; ""
        while a sample holds text back or has ended). Each sample ends at n characters, at the
        first of the `stop` strings (excluded unless keep_stop) or at the end-of-item symbol;
        `result` receives how each ended. `threads` and `precision` as in `steps`."""
        check_sampling_args(n, temperature, top_k, top_p, num_samples, seed)
        check_threads(threads)
        check_precision(precision, self.net, fast)
        stops = parse_stops(stop, escapes=False)
        rng = np.random.default_rng(seed)
        yield from self._run(prime, n, lambda lg: draw(lg, rng, temperature, top_k, top_p),
                             num_samples, oov, fast, stops, keep_stop, result, threads, precision)

    def _run(self, prime: str, n: int, pick, num_samples: int, oov: str, fast: bool,
             stops: tuple[str, ...] = (), keep_stop: bool = False,
             result: Generation | None = None, threads: int | None = None,
             precision: str = "fp32") -> Iterator[list[str]]:
        logits, state = self.prime(prime, num_samples, oov)
        step = make_timed_step(self.net, num_samples, fast, threads, precision)
        decoders = [self.vocab.decoder() for _ in range(num_samples)]
        # No inference_mode around the loop: a generator would leak it into the caller's code
        # between yields; each step function enters it for its own torch work.
        try:
            yield from run(step, logits, step.begin(state), n, lambda lg: pick(self._no_end(lg)),
                           decoders, stops, keep_stop, self.end_id, result=result)
        finally:
            if isinstance(step, TimedStep):
                step.close()

    def generate(self, prime: str = "", n: int = 200, temperature: float = 1.0, **kw) -> str | list[str]:
        """prime + up to n sampled characters (a list of strings when num_samples > 1); `stop`
        ends each sample at the first of its strings."""
        num = kw.get("num_samples", 1)
        cols: list[list[str]] = [[] for _ in range(num)]
        for chars in self.stream(prime, n, temperature, **kw):
            for s, ch in enumerate(chars):
                cols[s].append(ch)
        used, _ = self.fit_prime(prime, kw.get("oov", "error"))   # the prime as read
        texts = [used + "".join(c) for c in cols]
        return texts[0] if num == 1 else texts

    def beam(self, prime: str = "", n: int = 200, width: int = 4,
             oov: str = "error") -> list[tuple[str, float]]:
        """The `width` most likely continuations of n symbols (bytes, for a byte model) as
        (prime + text, natural log-probability), best first; deterministic."""
        width = check_beam(width)
        check_sampling_args(n, 0.0, None, None)
        logits, state = self.prime(prime, 1, oov)
        step = make_step(self.net, width + 1)
        beams = beam_search(step, logits, step.begin(state), width, n, end_id=self.end_id,
                            banned=None if self.line_mode else self.vocab.end_id)
        return [(prime + self.vocab.decode(b.ids), b.logprob) for b in beams]

    def items(self, n: int = 20, prime: str = "", temperature: float = 1.0,
              top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
              oov: str = "error", new_only: bool = False, max_chars: int | None = None,
              known: list[str] | None = None, precision: str = "fp32") -> tuple[list[str], dict]:
        """Line mode: n whole items (each from a fresh state, ended by the end symbol). With
        new_only, items that are lines of the training text are dropped and more are drawn
        (up to 20 rounds); the report says how many were new. `precision` as in `steps`."""
        if not self.line_mode:
            raise CharwiseError("this run was not trained with --line-mode: it has no items "
                                "(sample text with -n instead)")
        check_sampling_args(n, temperature, top_k, top_p, max(1, min(n, 4096)), seed)
        check_precision(precision, self.net)
        limit = max_chars or 2 * int(self.info.get("items", {}).get("longest", 200)) + 10
        novelty = NoveltyFilter(known if known is not None else self.training_items()) if new_only else None
        rng = np.random.default_rng(seed)
        pick = (lambda lg: draw(lg, rng, temperature, top_k, top_p))   # noqa: E731
        out: list[str] = []
        unfinished = 0
        for _ in range(20 if new_only else 1):
            want = n - len(out)
            if want <= 0:
                break
            gen = Generation()
            texts = [prime] * want
            for chars in self._run(prime, limit, pick, want, oov, True, result=gen, precision=precision):
                texts = [t + c for t, c in zip(texts, chars)]
            unfinished += sum(e.reason != "end" for e in gen.ends)
            out += [t for t in texts if novelty is None or novelty(t)]
        report: dict[str, Any] = {"items": len(out), "unfinished": unfinished}
        if novelty is not None:
            report.update(drawn=novelty.seen, new=novelty.new, new_share=novelty.new / max(novelty.seen, 1),
                          message=novelty.report())
        return out, report

    def training_items(self) -> list[str]:
        """The lines of the training text (for --new-only), read again from the corpus file
        the run recorded; refused if it is gone or changed since."""
        corpus = self.info.get("corpus", {})
        source = corpus.get("source")
        if not source or not Path(source).is_file():
            raise CharwiseError(f"--new-only compares with the training text, but {source!r} "
                                "is not there any more")
        if corpus.get("sha256") and sha256_file(Path(source)) != corpus["sha256"]:
            raise CharwiseError(f"--new-only: {source} changed since this run trained on it")
        return read_items(source, self.info.get("train", {}).get("encoding", "utf-8"))[1]

    def evaluate(self, text: str, oov: str = "error", precision: str = "auto",
                 threads: int | None = None) -> dict:
        """Exact loss of `text` in one stateful pass; precision auto/fp32/bf16 (see
        eval_precision). A byte model reports per byte and per character (comparable with a
        code-point model); a line-mode model scores each line as an item, per item too.
        threads: a fixed CPU thread count, or None to measure and choose."""
        prec = eval_precision(self.net, precision, self.info.get("precision"))
        if self.line_mode:
            end_id = self.vocab.end_id
            assert end_id is not None
            items = encode_items(lambda t: self.vocab.encode(t, oov=oov), split_items(text))
            return {**evaluate_items(self.net, items, end_id), "precision": "fp32"}
        ids = self.vocab.encode(text, oov=oov)
        if isinstance(self.vocab, ByteVocab):
            if len(ids) < 2:
                raise CharwiseError("need at least 2 characters to evaluate")
            return {**evaluate_bytes(self.net, ids, prec), "precision": prec}
        return {**evaluate_tokens(self.net, ids, prec, threads=check_threads(threads)),
                "precision": prec}


def load(run_dir: str | Path, which: str = "best", device: str = "cpu") -> CharModel:
    """A trained run as a CharModel (generate / stream / evaluate). Executes no stored code."""
    net, vocab, info = load_model(run_dir, which, str(pick_device(device)))
    return CharModel(net, vocab, info)
