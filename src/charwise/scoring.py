"""How a trained model is run for scoring: device and precision choice, autocast, the thread
policy for batch-1 recurrences, and exact losses (every position from its full left context,
in one stateful pass). Training, sampling, analysis and the API all score through here."""
from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .cells import is_attention
from .data.bytevocab import per_char_losses
from .errors import CharwiseError
from .hardware import cpu_has_fast_bf16, why_no_bf16
from .model import CharModule
from .settings.options import DEVICES, LN2
from .settings.train import ModelConfig
from .threads import ThreadPolicy, check_threads, policy_for

LOGITS_BUDGET = 1 << 22        # logit values per evaluation chunk (16 MB in fp32)


# ----------------------------------------------------------------------------- hardware

def pick_device(name: str) -> torch.device:
    """auto (a CUDA GPU when there is one), cpu, cuda or cuda:N, as a torch device; a GPU that
    is not there is a one-line error here rather than a traceback at the first tensor."""
    if not re.fullmatch(DEVICES, name):
        raise CharwiseError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CharwiseError(f"--device {name} asked for, but no CUDA GPU is available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CharwiseError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cuda_bf16_native(device: torch.device) -> bool:
    """`device`, a GPU, has bf16 arithmetic in hardware (compute capability 8.0, Ampere, and
    later). Not torch.cuda.is_bf16_supported(): it also counts emulation (a V100 or T4
    "supports" bf16 by emulating it, slower than fp32, so auto would pick it there), and it
    asks torch.cuda.current_device(), GPU 0 unless set, so `--device cuda:1` would be judged by
    GPU 0. (ROCm: torch counts bf16 as native on every AMD GPU it runs on.)"""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def cuda_tf32(device: torch.device) -> bool:
    """`device` computes TF32 (torch.cuda.is_tf32_supported's rule, asked of this GPU rather
    than the current one): where bf16 is native; on ROCm, MI300-class GPUs (gfx94x, gfx95x)."""
    if torch.version.hip:
        arch = torch.cuda.get_device_properties(device).gcnArchName
        return arch.startswith(("gfx94", "gfx95"))
    return cuda_bf16_native(device)


def pick_precision(name: str, device: torch.device, cfg: ModelConfig) -> str:
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not cuda_bf16_native(device):
            raise CharwiseError("--precision bf16: this GPU has no bf16 arithmetic (compute "
                                "capability below 8.0; torch would emulate it, slower than fp32); "
                                "use --precision fp32")
        if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
            raise CharwiseError(f"--precision bf16: {why_no_bf16()}; use --precision fp32 "
                                "(or auto)")
        return name
    if device.type == "cuda":
        return "bf16" if cuda_bf16_native(device) else "fp32"
    # Small models are bound by per-op overhead, not matmul speed: bf16 casts only cost there.
    return "bf16" if cpu_has_fast_bf16() and cfg.width >= 256 else "fp32"


def eval_precision(model: CharModule, name: str = "auto", recorded: str | None = None) -> str:
    """The arithmetic for scoring `model` where it lives. "auto": the precision the run trained
    in (`recorded`, from its run.json) where this device runs it natively, so a run is scored
    as it trained (as nanoGPT does), even one trained elsewhere; else what training would pick
    here."""
    device = next(model.parameters()).device
    if name == "auto" and recorded in ("fp32", "bf16") and runs_natively(recorded, device):
        return recorded
    return pick_precision(name, device, model.cfg)


def runs_natively(precision: str, device: torch.device) -> bool:
    """bf16 needs bf16 arithmetic in hardware: a GPU of compute capability 8.0 or later, or a CPU
    with bf16 instructions (elsewhere it is emulated, slower than fp32, so auto does not choose
    it); fp32 runs anywhere."""
    if precision != "bf16":
        return True
    return cuda_bf16_native(device) if device.type == "cuda" else cpu_has_fast_bf16()


def recurrence_precision(device: torch.device, precision: str) -> str:
    """What the recurrent layers really compute in under `precision` on `device` (run.json's
    "recurrence_precision"; "precision" is what the head and the rest run in).

    CPU: bf16 autocast runs nn.LSTM/GRU/RNN in bf16 (oneDNN), fp32 in fp32. CUDA: torch's
    autocast sends cuDNN RNNs through a wrapper that casts them to fp16, whatever the autocast
    dtype (aten/src/ATen/cudnn/AutocastRNN.cpp), which would be fp16 without a GradScaler under
    a run.json saying bf16; so CharRNN runs the recurrence outside autocast, in fp32, on a GPU
    (model.py). There it is IEEE fp32 under --precision fp32 (fp32_flags sets cuDNN so), and
    under bf16 whatever cuDNN's RNN setting gives: TF32 on Ampere and later by default."""
    if device.type != "cuda" or precision == "fp32":
        return precision
    tf32 = _cudnn_rnn().fp32_precision == "tf32" and cuda_tf32(device)
    return "tf32" if tf32 else "fp32"


@contextlib.contextmanager
def fp32_flags(device: torch.device, precision: str) -> Iterator[None]:
    """Make fp32 mean IEEE fp32 on a GPU, for the duration, then restore the caller's settings.

    PyTorch's defaults differ by library: cuBLAS matmuls are IEEE fp32
    (torch.backends.cuda.matmul.fp32_precision "none", i.e. TF32 off), but cuDNN RNNs use TF32
    on Ampere and later (torch.backends.cudnn.rnn.fp32_precision "tf32"). So "--precision fp32"
    would run the recurrence in TF32 (10-bit mantissa) and the head and the fused sampling step
    in fp32, and two sampling paths could diverge for one seed.

    A caller (a notebook, a library embedding charwise) may have used the legacy API,
    torch.set_float32_matmul_precision("high") or matmul.allow_tf32 = True. Torch keeps that
    setting apart from the per-operation one and checks at every cuBLAS fp32 matmul that the
    two agree on TF32 (Context::allowTF32CuBLAS: "a mix of the legacy and new APIs"
    otherwise), so setting only the new matmul flag to "ieee" would make those matmuls raise;
    the legacy cudnn.allow_tf32 getter likewise raises unless it, the conv and the RNN flags
    agree. So both APIs are set here, the legacy setters first (they overwrite the new flags),
    and both are restored after, in the same order."""
    global _ieee_users, _ieee_saved
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    # The flags are global: the first of nested or concurrent users (the server's threads)
    # sets them, the last one out restores them.
    with _ieee_lock:
        if _ieee_users == 0:
            _ieee_saved = _tf32_settings()
            torch.set_float32_matmul_precision("highest")
            torch.backends.cudnn.allow_tf32 = False
            for flags in _ieee_flags():
                flags.fp32_precision = "ieee"
        _ieee_users += 1
    try:
        yield
    finally:
        with _ieee_lock:
            _ieee_users -= 1
            if _ieee_users == 0:
                _restore_tf32_settings(_ieee_saved)


# torch.backends.cudnn.rnn/.conv and mkldnn.matmul: module objects torch's stubs do not declare
_backends: Any = torch.backends


def _cudnn_rnn() -> Any:
    return _backends.cudnn.rnn


def _ieee_flags() -> tuple[Any, ...]:
    """The per-operation flags fp32_flags sets to "ieee" (cuBLAS matmuls, cuDNN RNNs and convs)."""
    return _backends.cuda.matmul, _cudnn_rnn(), _backends.cudnn.conv


Settings = tuple[Any, Any, tuple[str, ...]]


def _tf32_settings() -> Settings:
    """The legacy settings (matmul precision, cudnn.allow_tf32; None where the caller's own mix
    of the two APIs makes torch refuse to report one) and the per-operation flags changed."""
    def legacy(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except RuntimeError:
            return None
    return (legacy(torch.get_float32_matmul_precision), legacy(lambda: torch.backends.cudnn.allow_tf32),
            tuple(f.fp32_precision for f in _changed_flags()))


def _changed_flags() -> tuple[Any, ...]:
    # the legacy matmul setter also sets oneDNN's (CPU) matmul flag
    return (*_ieee_flags(), _backends.mkldnn.matmul)


def _restore_tf32_settings(saved: Settings) -> None:
    matmul, cudnn, values = saved
    if matmul is not None:
        torch.set_float32_matmul_precision(matmul)
    if cudnn is not None:
        torch.backends.cudnn.allow_tf32 = cudnn
    for flags, value in zip(_changed_flags(), values):
        flags.fp32_precision = value


_ieee_lock = threading.Lock()
_ieee_users = 0
_ieee_saved: Settings = (None, None, ())


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """The arithmetic of `precision` for the code inside: bf16 autocast, or IEEE fp32."""
    with fp32_flags(device, precision), torch.autocast(device.type, dtype=torch.bfloat16,
                                                       enabled=precision == "bf16"):
        yield


# ----------------------------------------------------------------------------- evaluation

@contextlib.contextmanager
def recurrence_threads(model: CharModule, threads: int | None = None) -> Iterator[None]:
    """For one batch-1 pass with nothing to time against: a fixed count when given, else one
    thread up to H=256 on CPU (sharing each small matmul among threads costs more than it saves,
    far more when another process holds a core), else torch's setting. Restores the caller's."""
    device = next(model.parameters()).device
    if device.type != "cpu" or (threads is None and model.cfg.width > 256):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(check_threads(threads) or 1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def eval_policy(device: torch.device, threads: int | ThreadPolicy | None = None) -> ThreadPolicy | None:
    """The thread policy for scoring on `device`: the one given, a fixed count, or a measuring
    policy (threads.py); None off the CPU, even when one is given (the trainer's): a GPU's
    scoring does not depend on the host's threads, and a policy there would only probe on
    small chunks and change torch's thread count for nothing."""
    if device.type != "cpu":
        return None
    if isinstance(threads, ThreadPolicy):
        return threads
    return policy_for(threads)


PROBE_CHUNK = 1024        # the chunk while the thread policy measures: a cheap probe


@contextlib.contextmanager
def _scoring(model: CharModule, threads: int | ThreadPolicy | None) -> Iterator[ThreadPolicy | None]:
    """The model in eval mode and the thread policy for a scoring pass; both given back after
    (the caller's thread count restored unless it passed its own policy)."""
    policy = eval_policy(next(model.parameters()).device, threads)
    was_training = model.training
    model.eval()
    try:
        yield policy
    finally:
        model.train(was_training)
        if not isinstance(threads, ThreadPolicy) and policy is not None:
            policy.restore()


@torch.inference_mode()
def token_losses(model: CharModule, tokens: np.ndarray, device: torch.device | None = None,
                 precision: str = "fp32", chunk: int = 8192, state: Any = None,
                 threads: int | ThreadPolicy | None = None,
                 on_chunk: Callable[[int, int], None] | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Loss (nats) of predicting tokens[i+1] from tokens[:i+1], for every i, in ONE stateful
    pass: the hidden state runs through the whole text, so every position has full context
    (a transformer: the context its windows give, `window_losses`).
    Yields (losses (n,), logits-argmax (n,)) chunk by chunk to bound memory. `threads`: a
    ThreadPolicy, a fixed count, or None (measure and choose); the caller's thread count is
    restored at the end unless it passed its own policy. `on_chunk(done, total)` reports
    progress. A chunk's logits are chunk x V floats (and as many again for the log-softmax),
    so with a large vocabulary the chunk shrinks to keep them under LOGITS_BUDGET values."""
    if is_attention(model.cfg.cell):
        yield from window_losses(model, tokens, device, precision, threads, on_chunk)
        return
    device = device or next(model.parameters()).device
    chunk = max(16, min(chunk, LOGITS_BUDGET // model.cfg.vocab_size))
    total = len(tokens) - 1
    with _scoring(model, threads) as policy:
        s = 0
        while s < total:
            size = min(PROBE_CHUNK, chunk) if policy is not None and policy.deciding else chunk
            seg = torch.from_numpy(np.asarray(tokens[s: s + size + 1], dtype=np.int64)).to(device)
            x, y = seg[:-1].unsqueeze(0), seg[1:]                       # (1, t), (t,)
            with policy.measure(len(y)) if policy is not None else contextlib.nullcontext():
                with autocast(device, precision):
                    logits, state = model(x, state)
                logits = logits[0].float()                              # (t, V)
                out = F.cross_entropy(logits, y, reduction="none").cpu(), logits.argmax(-1).cpu()
            s += len(y)
            if on_chunk is not None:
                on_chunk(s, total)
            yield out


def context_windows(total: int, context: int, keep: int | None = None) -> list[tuple[int, int, int]]:
    """How a transformer scores `total` predictions (of tokens[p+1] from tokens[..p]): windows
    (start a, length, first scored offset) of at most `context` tokens, each scoring its
    positions from `first` on. The first window scores all of its own; each later one starts
    D = context - keep after the one before and scores its last D positions, each seen with at
    least `keep` (default context // 2) characters before it. Position p's window starts where
    the KV-cache sampling step's window for p starts (transformer.py's s_p), so scoring and
    sampling give a character the same context."""
    keep = context // 2 if keep is None else keep
    step = context - keep
    out = [(0, min(context, total), 0)]
    for a in range(step, total - keep, step):
        out.append((a, min(context, total - a), keep))
    return out


def window_record(context: int) -> dict[str, int]:
    """What context a transformer's exact score gives each character (eval reports it)."""
    keep = context // 2
    return {"window": context, "stride": context - keep, "min_before": keep}


@torch.inference_mode()
def window_losses(model: CharModule, tokens: np.ndarray, device: torch.device | None = None,
                  precision: str = "fp32", threads: int | ThreadPolicy | None = None,
                  on_chunk: Callable[[int, int], None] | None = None
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """token_losses for a transformer: the context_windows, as many of one length at once as
    keep the logits under LOGITS_BUDGET values, in order."""
    device = device or next(model.parameters()).device
    C, total = model.cfg.context, len(tokens) - 1
    t = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    windows = context_windows(total, C)
    per_batch = max(1, LOGITS_BUDGET // (C * model.cfg.vocab_size))
    with _scoring(model, threads) as policy:
        i, done = 0, 0
        while i < len(windows):
            group = [windows[i]]
            limit = 2 if policy is not None and policy.deciding else per_batch
            while (i + len(group) < len(windows) and len(group) < limit
                   and windows[i + len(group)][1] == group[0][1]):
                group.append(windows[i + len(group)])
            i += len(group)
            n = group[0][1]
            x = torch.stack([t[a: a + n] for a, _, _ in group]).to(device)            # (G, n)
            y = torch.stack([t[a + 1: a + n + 1] for a, _, _ in group]).to(device)    # (G, n)
            scored = sum(n - first for _, _, first in group)
            with policy.measure(scored) if policy is not None else contextlib.nullcontext():
                with autocast(device, precision):
                    logits, _ = model(x)
                logits = logits.float()                                 # (G, n, V)
                lo = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")    # (G, n)
                arg = logits.argmax(-1)
                keep = [(g, first) for g, (_, _, first) in enumerate(group)]
                out = (torch.cat([lo[g, f:] for g, f in keep]).cpu(),
                       torch.cat([arg[g, f:] for g, f in keep]).cpu())
            done += scored
            if on_chunk is not None:
                on_chunk(done, total)
            yield out


def evaluate_tokens(model: CharModule, tokens: np.ndarray, precision: str = "fp32",
                    threads: int | ThreadPolicy | None = None,
                    on_chunk: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Exact mean loss over all len(tokens)-1 predictions: nats/char, bits/char, perplexity.
    "Exact" = every position scored from its full left context; `precision` is the arithmetic
    (bf16 autocast halves the weight traffic of the batch-1 chain, which is bound by it; the
    speed-up and the loss difference are measured in benchmarks/README.md, section 4);
    `threads` and `on_chunk`: see token_losses."""
    if len(tokens) < 2:
        raise CharwiseError("need at least 2 characters to evaluate")
    total, n = 0.0, 0
    for losses, _ in token_losses(model, tokens, precision=precision, threads=threads,
                                  on_chunk=on_chunk):
        total += float(losses.double().sum())
        n += len(losses)
    nats = total / n
    return {"loss": nats, "bits_per_char": nats / LN2, "perplexity": math.exp(nats), "chars": n}


def evaluate_bytes(model: CharModule, tokens: np.ndarray, precision: str = "fp32") -> dict[str, Any]:
    """evaluate_tokens for a byte model: per byte and per character (the losses of each
    character's bytes summed), so bits/char compares with a code-point model's."""
    if len(tokens) < 2:
        raise CharwiseError("need at least 2 characters to evaluate")
    with recurrence_threads(model):
        losses = np.concatenate([lo.double().numpy() for lo, _ in token_losses(model, tokens, precision=precision)])
    return per_char_losses(losses, np.asarray(tokens))
