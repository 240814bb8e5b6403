"""Size bounds, checked before anything is allocated.

A model's memory follows from its config alone: parameters from (V, E, H, L, cell), training
activations from the batch B x window T as well. `check_training` and `check_inference` compare
an estimate with the memory where the model will live -- on the CPU what this machine has
available (MemAvailable in /proc/meminfo, and a cgroup limit when one is lower), on a GPU what
is free on that GPU (torch.cuda.mem_get_info), for the streams that GPU trains -- and refuse,
in one line, what cannot fit: instead of an allocation traceback, a hang or the OOM killer
minutes later. `thread_count` caps a requested
number of CPU threads at the CPUs this process may run on (torch segfaults on a million).

The estimates are deliberately simple (float32 everywhere, the largest tensors only); they are
meant to tell "fits" from "cannot possibly fit", not to budget the last megabyte.
"""
from __future__ import annotations

import os
from pathlib import Path

from .cells import CELLS, is_attention
from .errors import CharwiseError
from .settings.train import ModelConfig

FLOAT = 4
SLACK = 256 << 20              # the interpreter, torch and NumPy themselves
EVAL_LOGITS = 1 << 22          # logit values scored at once in evaluation (evaluate.LOGITS_BUDGET)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the torch model `cfg` builds, computed without building it."""
    if is_attention(cfg.cell):
        return transformer_shapes(cfg)
    V, E, H, L, G = cfg.vocab_size, cfg.embed_dim, cfg.hidden_size, cfg.layers, CELLS[cfg.cell].gates
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (V, E)}
    for k in range(L):
        shapes[f"rnn.weight_ih_l{k}"] = (G * H, E if k == 0 else H)
        shapes[f"rnn.weight_hh_l{k}"] = (G * H, H)
        shapes[f"rnn.bias_ih_l{k}"] = (G * H,)
        shapes[f"rnn.bias_hh_l{k}"] = (G * H,)
    shapes["head.weight"] = (V, H)
    shapes["head.bias"] = (V,)
    return shapes


def transformer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """expected_shapes of a CharTransformer (its docstring lists the same names)."""
    V, W, C = cfg.vocab_size, cfg.embed_dim, max(cfg.context, 1)
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (V, W)}
    if cfg.positions == "learned":
        shapes["pos.weight"] = (C, W)
    for k in range(cfg.layers):
        b = f"blocks.{k}."
        for name, shape in (("ln1.weight", (W,)), ("ln1.bias", (W,)), ("qkv.weight", (3 * W, W)),
                            ("qkv.bias", (3 * W,)), ("attn_out.weight", (W, W)),
                            ("attn_out.bias", (W,)), ("ln2.weight", (W,)), ("ln2.bias", (W,)),
                            ("fc.weight", (4 * W, W)), ("fc.bias", (4 * W,)),
                            ("mlp_out.weight", (W, 4 * W)), ("mlp_out.bias", (W,))):
            shapes[b + name] = shape
    shapes.update({"ln_f.weight": (W,), "ln_f.bias": (W,), "head.weight": (V, W), "head.bias": (V,)})
    return shapes


def parameter_count(cfg: ModelConfig) -> int:
    """Exact, in Python integers (no overflow however large the config)."""
    if is_attention(cfg.cell):
        W, C = cfg.embed_dim, max(cfg.context, 1)
        V = max(cfg.vocab_size, 1)
        pos = C * W if cfg.positions == "learned" else 0
        head = 0 if cfg.tie_weights else V * W           # a tied head's matrix is the embedding
        return V * W + pos + cfg.layers * (12 * W * W + 13 * W) + 2 * W + head + V
    V, E, H, L, G = (max(cfg.vocab_size, 1), cfg.embed_dim, cfg.hidden_size, cfg.layers,
                     CELLS[cfg.cell].gates)
    rnn = G * H * (E + H + 2) + (L - 1) * G * H * (2 * H + 2)
    return V * E + rnn + H * V + V


def training_bytes(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Weights, gradients and two AdamW moments, plus one step's activations: the logits with
    their log-softmax and gradient (3 x B x T x V), and per layer the gates and states kept for
    the backward pass."""
    V, E, H, L, G = (max(cfg.vocab_size, 1), cfg.embed_dim, cfg.hidden_size, cfg.layers,
                     CELLS[cfg.cell].gates)
    n = batch_size * seq_len
    if is_attention(cfg.cell):
        # per block and position: ~17 width-sized vectors (norms, q/k/v, the 4x MLP before and
        # after GELU, the residual branches) and a row of attention weights per head
        acts = n * (3 * V + E + L * (17 * E + cfg.heads * seq_len))
    else:
        acts = n * (3 * V + E + L * (G + 3) * H)
    return FLOAT * (4 * parameter_count(cfg) + acts) + SLACK


def inference_bytes(cfg: ModelConfig) -> int:
    """Weights (loaded once as read, once as the model) plus an evaluation chunk's logits."""
    return FLOAT * (2 * parameter_count(cfg) + 2 * EVAL_LOGITS) + SLACK


def available_bytes() -> int | None:
    """Memory this process can still get: MemAvailable, or a lower cgroup v2/v1 limit."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            lim = Path(limit).read_text().strip()
            if lim != "max" and int(lim) < 1 << 60:
                found.append(int(lim) - int(Path(usage).read_text().strip()))
                break
        except (OSError, ValueError):
            continue
    return max(min(found), 0) if found else None


def _gb(n: int) -> str:
    g = n / 1e9
    return f"{g:.3g}" if g < 1000 else f"{g:,.0f}"


def gpu_free_bytes(device) -> int | None:
    """Memory free on the CUDA GPU `device` (what other processes hold is already taken out);
    None where torch cannot say."""
    import torch  # lazy: the host checks need no torch
    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError, ValueError):
        return None


def check_fits(need: int, what: str, available: int | None = None, device=None) -> None:
    """Refuse `what` if it needs more than the memory available where it will live: the host's,
    or on a CUDA `device` that GPU's free memory."""
    on_gpu = device is not None and device.type == "cuda"
    if available is not None:
        have: int | None = available
    else:
        have = gpu_free_bytes(device) if on_gpu else available_bytes()
    if have is not None and need > have:
        where = f"GPU memory; {device} has {_gb(have)} GB free" if on_gpu else \
            f"memory; this machine has {_gb(have)} GB available"
        raise CharwiseError(f"{what} needs ~{_gb(need)} GB of {where} "
                            "(use a smaller model, batch or window)")


def describe(cfg: ModelConfig) -> str:
    if is_attention(cfg.cell):
        return (f"a TRANSFORMER of {cfg.layers} blocks of width {cfg.embed_dim}, {cfg.heads} "
                f"heads, context {cfg.context or '?'}, vocabulary {cfg.vocab_size or '?'} "
                f"({parameter_count(cfg):,} parameters)")
    return (f"a {cfg.cell.upper()} of {cfg.layers} x {cfg.hidden_size} units, embedding "
            f"{cfg.embed_dim}, vocabulary {cfg.vocab_size or '?'} "
            f"({parameter_count(cfg):,} parameters)")


def check_training(cfg: ModelConfig, batch_size: int, seq_len: int,
                   available: int | None = None, device=None, world: int = 1) -> None:
    """Refuse, before building anything, a training run that cannot fit in memory. On the CPU
    the whole batch counts (torchrun's processes share the machine's memory); on a GPU each
    process trains batch_size / world streams, and the GPU's free memory holds them."""
    rows = max(1, batch_size // world) if device is not None and device.type == "cuda" else batch_size
    check_fits(training_bytes(cfg, rows, seq_len),
               f"training {describe(cfg)} on {rows} x {seq_len} windows", available, device)


def check_inference(cfg: ModelConfig, where: str = "", available: int | None = None,
                    device=None) -> None:
    """Refuse, before building anything, loading a model that cannot fit in memory: the host's
    (the weights are read there), and a GPU's when the model goes to one."""
    what = f"{where}{': ' if where else ''}{describe(cfg)}"
    check_fits(inference_bytes(cfg), what, available)
    if device is not None and device.type == "cuda":
        check_fits(inference_bytes(cfg), what, available, device)


# `charwise gradcheck` (the NumPy engine, float64) evaluates the loss twice per checked entry.
# An evaluation costs T x L interpreted layer steps (~25-60 us each, measured: like
# GRADCHECK_STEP multiply-adds) plus T x B x P multiply-adds; GRADCHECK_WORK of those is
# minutes, where the sizes below it were refused only by the memory they need or ran on for days.
GRADCHECK_STEP = 100_000
GRADCHECK_WORK = 10 ** 12


def gradcheck_entries(cfg: ModelConfig, batch_size: int, max_entries: int | None) -> int:
    """Entries a gradcheck perturbs: every entry of every parameter array and initial-state
    array, or at most `max_entries` of each; counted from the shapes, nothing built."""
    V, E, H, L, G = cfg.vocab_size, cfg.embed_dim, cfg.hidden_size, cfg.layers, CELLS[cfg.cell].gates
    m = max_entries if max_entries is not None else max(V * E, V * H, G * H * max(E, H), L * batch_size * H)
    first = min(G * H * E, m) + min(G * H * H, m) + 2 * min(G * H, m)
    later = (L - 1) * (min(G * H * H, m) * 2 + 2 * min(G * H, m))
    states = CELLS[cfg.cell].state_arity * min(L * batch_size * H, m)
    return min(V * E, m) + first + later + min(V * H, m) + min(V, m) + states


def check_gradcheck(cfg: ModelConfig, batch_size: int, seq_len: int, max_entries: int | None,
                    available: int | None = None) -> None:
    """Refuse a gradcheck that cannot fit in memory (train's estimate, in float64) or would run
    far longer than minutes, before anything is built."""
    what = f"gradcheck of {describe(cfg)} on {batch_size} x {seq_len}"
    check_fits(2 * (training_bytes(cfg, batch_size, seq_len) - SLACK) + SLACK, what, available)
    evaluations = 2 * gradcheck_entries(cfg, batch_size, max_entries)
    work = evaluations * seq_len * (cfg.layers * GRADCHECK_STEP + batch_size * parameter_count(cfg))
    if work > GRADCHECK_WORK:
        raise CharwiseError(f"{what} would run too long: {evaluations:,} loss evaluations, "
                            f"~{work:.1e} units of work where {GRADCHECK_WORK:.0e} take minutes "
                            "(check fewer entries with --max-entries N, or a smaller model)")


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(requested: int | None) -> int | None:
    """`requested` capped at the CPUs this process may use (None stays None)."""
    return None if requested is None else max(1, min(int(requested), cpu_count()))
