"""The training loop as an importable function, and exact evaluation.

`train()` serves the CLI and the API alike. It prepares the corpus, builds the model, and runs
truncated BPTT over B contiguous streams, carrying (and detaching) the hidden state from one
window to the next. Every `eval_every` steps it measures the loss over the *whole* validation
split in one stateful pass, keeps the best weights and a resumable last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .checkpoint import (BEST, LAST, METRICS, RUN_JSON, read_run, save_tensors,
                         write_run)
from .config import CharwiseError, ModelConfig, TrainConfig, auto_preset, build, resolve
from . import distributed
from . import trainstate as ts
from .configfile import write_run_config
from .data import StreamBatches, prepare_corpus, token_counts
from .model import CharLSTM, detach_state
from .tblog import open_logger

LN2 = math.log(2)


class TrainingInterrupted(CharwiseError):
    """Raised after SIGINT/SIGTERM once a resumable checkpoint is safely on disk."""

    def __init__(self, signum: int, run_dir: Path):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped; a resumable checkpoint is in {run_dir} "
                         f"(continue with: charwise train --resume {run_dir})")


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_val_loss: float | None
    best_step: int | None
    final_train_loss: float
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_because: str = ""


# ----------------------------------------------------------------------------- hardware

def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CharwiseError("--device cuda asked for, but no CUDA GPU is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """AMX (Sapphire Rapids and later) or AVX512-BF16: bf16 matmuls beat fp32 on this CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(name: str, device: torch.device, cfg: ModelConfig) -> str:
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CharwiseError("--precision bf16: this GPU does not support bf16")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # Small models are bound by per-op overhead, not matmul speed: bf16 casts only cost there.
    return "bf16" if cpu_has_fast_bf16() and cfg.hidden_size >= 256 else "fp32"


def eval_precision(model: CharLSTM, name: str = "auto") -> str:
    """The arithmetic for scoring `model` where it lives: "auto" picks what training would pick
    there (so a run is scored in the precision it trained in, as nanoGPT does)."""
    return pick_precision(name, next(model.parameters()).device, model.cfg)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ----------------------------------------------------------------------------- evaluation

@contextlib.contextmanager
def recurrence_threads(model: CharLSTM):
    """A batch-1 recurrence is a chain of small matmuls. Up to H=256 on CPU, sharing each one
    among threads costs more than it saves (H=128 on 2 cores: 8.8 vs 27 us/step, 20x worse
    when another process holds a core); from H=512 up, two threads win (111k chars: 4.6 vs
    7.9 s). Restores the caller's setting."""
    device = next(model.parameters()).device
    if device.type != "cpu" or model.cfg.hidden_size > 256:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.inference_mode()
def token_losses(model: CharLSTM, tokens: np.ndarray, device=None, precision: str = "fp32",
                 chunk: int = 8192, state=None):
    """Loss (nats) of predicting tokens[i+1] from tokens[:i+1], for every i, in ONE stateful
    pass: the hidden state runs through the whole text, so every position has full context.
    Yields (losses (n,), logits-argmax (n,)) chunk by chunk to bound memory."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(tokens) - 1, chunk):
            seg = torch.from_numpy(np.asarray(tokens[s: s + chunk + 1], dtype=np.int64)).to(device)
            x, y = seg[:-1].unsqueeze(0), seg[1:]                       # (1, t), (t,)
            with autocast(device, precision):
                logits, state = model(x, state)
            logits = logits[0].float()                                  # (t, V)
            yield F.cross_entropy(logits, y, reduction="none").cpu(), logits.argmax(-1).cpu()
    finally:
        model.train(was_training)


def evaluate_tokens(model: CharLSTM, tokens: np.ndarray, precision: str = "fp32") -> dict:
    """Exact mean loss over all len(tokens)-1 predictions: nats/char, bits/char, perplexity.
    "Exact" = every position scored from its full left context; `precision` is the arithmetic
    (bf16 autocast halves the weight traffic of the batch-1 chain, which is bound by it: 1.5-1.7x
    faster on this CPU, the loss unchanged to 4 decimals; benchmarks/README.md, section 4)."""
    if len(tokens) < 2:
        raise CharwiseError("need at least 2 characters to evaluate")
    total, n = 0.0, 0
    with recurrence_threads(model):
        for losses, _ in token_losses(model, tokens, precision=precision):
            total += float(losses.double().sum())
            n += len(losses)
    nats = total / n
    return {"loss": nats, "bits_per_char": nats / LN2, "perplexity": math.exp(nats), "chars": n}


# ----------------------------------------------------------------------------- schedule

def learning_rate(tcfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps`, then cosine or linear decay to lr*min_lr_ratio as
    progress -> 1."""
    if step < tcfg.warmup_steps:
        return tcfg.lr * (step + 1) / tcfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    left = 1 - p if tcfg.decay == "linear" else 0.5 * (1 + math.cos(math.pi * p))
    return tcfg.lr * (tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * left)


# ----------------------------------------------------------------------------- the loop

def _optimizer(model: CharLSTM, tcfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.startswith("embed"))]
    groups = [{"params": decay, "weight_decay": tcfg.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    # fused: one kernel over all parameters instead of a chain of foreach ops; on this CPU
    # 0.8 instead of 3.0 ms a step for 1.9M parameters (~5 % of a small-preset step)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=(0.9, tcfg.beta2), fused=fused)


def _check_out(out: Path, resume: bool, force: bool) -> None:
    """Refuse an output that would lose the user's files, before anything is written."""
    if resume:
        return
    if out.exists() and not out.is_dir():
        raise CharwiseError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CharwiseError(f"{out}: directory exists and is not empty "
                            "(use --resume to continue that run or --force to replace it)")


def _prepare_out(out: Path, resume: bool, force: bool) -> None:
    if not resume and out.is_dir() and force:
        # --force replaces only what charwise wrote; other files in the directory stay
        for name in (RUN_JSON, BEST, LAST, METRICS, "curve.png", "cache", "config.toml", "tensorboard"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for old in out.glob("ckpt-*.safetensors"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)


def train(corpus: str | os.PathLike | None = None, out: str | os.PathLike = "runs/latest",
          preset: str | None = "auto", resume: bool = False, force: bool = False,
          progress: bool | None = None, log=print, **overrides) -> TrainResult:
    """Train a character model on `corpus` (the bundled spec corpus when None) into `out`.

    `overrides` are any ModelConfig/TrainConfig fields (e.g. hidden_size=256, max_time=60).
    With resume=True the run in `out` continues from its last checkpoint exactly where it
    stopped; only budget fields (max_steps, max_epochs, max_time, patience, eval_every) may
    then be changed. Under torchrun each process trains its share of the streams (DDP).
    """
    out = Path(out)
    prev = read_run(out) if resume else None
    if prev is not None:
        budget = {"max_steps", "max_epochs", "max_time", "patience", "eval_every", "device", "threads",
                  "tensorboard", "keep", "checkpoint_every"}
        changed = {k for k, v in overrides.items() if v is not None} - budget
        if changed:
            raise CharwiseError(f"--resume keeps the run's settings; cannot change "
                                f"{', '.join(sorted(changed))}")
        mcfg = build(ModelConfig, prev["model"])
        tcfg = replace(build(TrainConfig, prev["train"]),
                       **{k: v for k, v in overrides.items() if v is not None})
        corpus = prev["corpus"]["source"]
    else:
        mcfg, tcfg = resolve(auto_preset(corpus) if preset == "auto" else preset, **overrides)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    dist = distributed.setup(tcfg.device)
    if dist.enabled and tcfg.engine != "torch":
        raise CharwiseError("distributed training needs --engine torch")
    if not dist.main:
        log = lambda *a: None                                    # noqa: E731  rank 0 speaks
    _check_out(out, resume, force)
    distributed.barrier(dist)                                    # every rank checked before any write
    if dist.main:
        _prepare_out(out, resume, force)
        data = prepare_corpus(corpus, cache_dir=out / "cache", encoding=tcfg.encoding)
    distributed.barrier(dist)                                    # then the others read rank 0's cache
    if not dist.main:
        data = prepare_corpus(corpus, cache_dir=out / "cache", encoding=tcfg.encoding)
    if prev is not None and list(data.vocab.chars) != prev["vocab"]:
        raise CharwiseError(f"{data.source}: the corpus changed since this run began "
                            "(its vocabulary differs); cannot resume")
    train_tok, val_tok = data.split(tcfg.val_fraction)
    n_fit = (len(train_tok) - 1) // tcfg.seq_len
    if prev is None and 1 <= n_fit < tcfg.batch_size and not dist.enabled:
        log(f"note: text too short for {tcfg.batch_size} streams of {tcfg.seq_len}; using {n_fit}")
        tcfg = replace(tcfg, batch_size=n_fit)                   # a short text: fewer streams
    distributed.check_world(dist, tcfg.batch_size, prev and prev.get("world_size", 1))
    rows = dist.streams(tcfg.batch_size)
    batches = StreamBatches(train_tok, tcfg.batch_size, tcfg.seq_len, seed=tcfg.seed, streams=rows)
    eval_tok = val_tok if len(val_tok) >= 2 else train_tok       # no split (the spec's setup): whole text
    if len(val_tok) < 2 and tcfg.val_fraction > 0:
        log("note: validation split too short; evaluating on the training text")
    if tcfg.max_steps is None and tcfg.max_epochs is None and tcfg.max_time is None:
        tcfg = replace(tcfg, max_epochs=10.0)
    mcfg = replace(mcfg, vocab_size=len(data.vocab))

    device = distributed.device_for(dist, pick_device(tcfg.device))
    precision = pick_precision(tcfg.precision, device, mcfg)
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np_rng = np.random.default_rng(tcfg.seed)
    model = CharLSTM(mcfg).to(device)
    opt = _optimizer(model, tcfg)
    ref = _reference_trainer(model, tcfg, resume) if tcfg.engine == "numpy" else None
    precision = "fp32" if ref is not None else precision
    info = {
        "charwise_version": __version__, "model": asdict(mcfg), "train": asdict(tcfg),
        "vocab": list(data.vocab.chars), "parameters": model.num_parameters,
        "corpus": {"source": data.source, "sha256": data.sha256, "chars": len(data.tokens),
                   "train_chars": len(train_tok), "val_chars": len(val_tok)},
        "device": str(device), "precision": precision, "world_size": dist.world, "best": None,
        "history": [], "status": "training", "train_seconds": 0.0, "step": 0,
        "char_counts": token_counts(train_tok, len(data.vocab)).tolist(),   # chunked: memmaps of GBs
    }
    step, state, spent, resumed = 0, None, 0.0, {}
    if prev is not None:
        # last.safetensors is the one source of truth for a resume: run.json may be a write behind.
        step, state, spent, resumed = ts.restore(out, model, opt, np_rng, device, dist.rank, rows)
        info.update(best=resumed["best"], history=resumed["history"])
        if dist.main:
            ts.truncate_metrics(out / METRICS, step)
    # DDP averages the gradients of the ranks' equal shares: the same update as one process.
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    chars_per_step = tcfg.batch_size * tcfg.seq_len
    tb = open_logger(tcfg.tensorboard and dist.main, out, data.vocab, info, chars_per_step, step)
    if dist.main:
        write_run(out, info)
        write_run_config(out, info)              # config.toml: `train --config` reruns it
    log(f"charwise {__version__}: {mcfg.cell.upper()} {mcfg.layers}x{mcfg.hidden_size}, "
        f"{model.num_parameters:,} parameters, vocabulary {len(data.vocab)}, "
        f"{len(train_tok):,} train / {len(val_tok):,} val chars, {device} {precision}"
        + (f", {dist.world} processes" if dist.enabled else ""))

    W = batches.windows_per_epoch
    max_steps = tcfg.max_steps
    if tcfg.max_epochs is not None:
        max_steps = min(max_steps or 10**18, max(1, int(tcfg.max_epochs * W)))
    stop_flag: list[int] = []
    handlers = ts.install_signal_handlers(stop_flag)
    bar = ts.progress_bar(progress if dist.main else False, max_steps, tcfg.max_time, step)
    metrics = open(out / METRICS, "a", buffering=1 << 16) if dist.main else open(os.devnull, "w")
    t0 = time.perf_counter() - spent
    # With a time budget the final evaluation must fit in it: until one has been timed,
    # extrapolate from scoring a short slice.
    eval_seconds = (_estimate_eval_seconds(model, eval_tok, precision)
                    if tcfg.max_time and dist.main else 0.0)
    last_eval_step = resumed.get("last_eval_step", -1)
    since_best = resumed.get("since_best", 0)
    loss_val, why = resumed.get("loss", float("nan")), "budget"
    best = info["best"]
    faults = resumed.get("faults", 0)

    def elapsed() -> float:
        return time.perf_counter() - t0

    last_tick = [time.perf_counter(), 0.0]                      # [time, seconds of the last step]
    last_save = [elapsed()]                                     # when the last checkpoint was written

    def save_due() -> bool:
        return bool(tcfg.checkpoint_every) and elapsed() - last_save[0] >= tcfg.checkpoint_every

    def time_up() -> bool:
        # The final evaluation and the step under way must fit in the budget too: stop when one
        # more step plus an evaluation (with 15 % to spare: they vary) would overrun it.
        now = time.perf_counter()
        last_tick[:] = [now, now - last_tick[0]]
        return bool(tcfg.max_time) and elapsed() + 1.15 * eval_seconds + last_tick[1] >= tcfg.max_time

    def progress_now() -> float:
        p = [step / max_steps] if max_steps else []
        if tcfg.max_time:
            p.append(elapsed() / max(tcfg.max_time - eval_seconds, 1e-9))
        return max(p) if p else 0.0

    def sync_reference() -> None:
        # The NumPy engine owns the weights while it trains; copy them into the torch model
        # (same names and layouts) to evaluate and save with the shared code.
        if ref is not None:
            model.load_state_dict({k: torch.from_numpy(v.astype(np.float32))
                                   for k, v in ref.model.state_dict().items()})

    def do_eval() -> None:
        nonlocal eval_seconds, best, since_best, last_eval_step
        te = time.perf_counter()
        sync_reference()
        rec = {"step": step, "train_loss": loss_val, "time": round(elapsed(), 3),
               "eval_split": "val" if len(val_tok) >= 2 else "train", "precision": precision}
        # One stateful pass is sequential by nature: rank 0 scores the whole split exactly,
        # and every rank gets its numbers (so early-stopping decisions agree).
        res = evaluate_tokens(model, eval_tok, precision) if dist.main else {"loss": 0.0, "chars": 0}
        loss, chars = distributed.broadcast_floats(dist, [res["loss"], res["chars"]], device)
        rec.update(val_loss=loss, val_bits_per_char=loss / LN2,
                   val_perplexity=math.exp(min(loss, 700)), val_chars=int(chars))
        score = rec["val_loss"]
        if math.isfinite(score) and (best is None or score < best["val_loss"]):
            best = {"step": step, "val_loss": score}
            if dist.main:                      # never overwritten by a worse or broken model
                save_tensors(out / BEST, model.state_dict(), {"step": step, "val_loss": score})
            since_best = 0
        else:
            since_best += 1
        rec["best_step"] = best["step"] if best else None
        info["history"].append(rec)
        metrics.write(json.dumps({"event": "eval", **rec}) + "\n")
        tb.eval(step, rec, model)
        eval_seconds = time.perf_counter() - te
        last_tick[0] = time.perf_counter()      # an evaluation is not a step (see time_up)
        last_eval_step = step
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_val:.3f} {rec['eval_split']} {score:.3f}")
        label = "val" if rec["eval_split"] == "val" else "whole text"
        msg = (f"step {step:6d}  train {loss_val:.4f}  {label} {score:.4f} nats "
               f"({rec['val_bits_per_char']:.3f} bits/char)")
        (bar.write if bar is not None else log)(msg)

    def checkpoint(status: str) -> None:
        last_save[0] = elapsed()
        sync_reference()
        info.update(best=best, status=status, train_seconds=round(elapsed(), 3), step=step)
        # collectives first (every rank), then rank 0 writes the whole run's state
        full_state = tuple(distributed.gather_rows(dist, s, 1) for s in state) if state else None
        # (gloo mishandles uint8 all-gathers here: the RNG bytes travel as int64)
        rng = distributed.gather_rows(dist, torch.get_rng_state().to(device, torch.int64)[None].clone(), 0)
        rng = rng.to("cpu", torch.uint8)
        if not dist.main:
            return
        metrics.flush()
        extra = {"best": best, "history": info["history"], "since_best": since_best,
                 "loss": loss_val, "faults": faults, "last_eval_step": last_eval_step,
                 "world_size": dist.world}
        ts.save_last(out, model, opt, full_state, rng, np_rng, step, elapsed(), extra)
        if tcfg.keep:
            ts.keep_older(out, step, tcfg.keep)
        write_run(out, info)

    def torch_step(x, y, lr):
        """One optimizer step; returns (loss, grad norm, new state, ok)."""
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, precision):
            logits, new_state = net(x, state)                           # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, mcfg.vocab_size).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(
            model.parameters(), tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")))
        ok = math.isfinite(gnorm)              # a NaN loss makes the (all-reduced) norm NaN too
        if ok:
            opt.step()
        return loss.item(), gnorm, detach_state(new_state), ok

    model.train()
    stop_now, out_of_time = False, time_up()
    try:
        while True:
            if max_steps is not None and step >= max_steps:
                break
            if out_of_time:
                why = "time"
                break
            if stop_now:
                checkpoint("interrupted")
                raise TrainingInterrupted(stop_flag[0] if stop_flag else signal.SIGTERM, out)
            k, epoch = step % W, step // W
            if k == 0:                                              # a new epoch starts cold
                state = model.zero_state(len(batches.rows), device)
                if ref is not None:
                    ref.reset_state(tcfg.batch_size)
            elif tcfg.reset_every:
                keep = stream_keep_mask(step, batches.rows, tcfg.reset_every)   # (B,)
                if not keep.all():
                    state = tuple(s * torch.from_numpy(keep).to(s)[None, :, None] for s in state)
                    if ref is not None and ref.state is not None:
                        ref.state = tuple(s * keep[None, :, None].astype(s.dtype) for s in ref.state)
            xb, yb = batches.window(k, epoch)
            lr = learning_rate(tcfg, step, progress_now())
            if ref is not None:
                loss_val = ref.step(xb, yb, lr=lr)
                gnorm, ok = ref.last_grad_norm, math.isfinite(ref.last_grad_norm)
            else:
                x, y = (torch.from_numpy(a).to(device, non_blocking=True) for a in (xb, yb))
                loss_val, gnorm, new_state, ok = torch_step(x, y, lr)
                state = new_state if ok else model.zero_state(len(batches.rows), device)
            step += 1
            loss_val, stop_now, out_of_time, saving = distributed.agree(
                dist, loss_val, bool(stop_flag), time_up(), save_due(), device=device)
            if not ok:
                # A numerical fault: the update was skipped (weights unchanged) and the stream
                # state restarted; after repeated faults the run stops, best checkpoint intact.
                faults += 1
                metrics.write(json.dumps({"event": "fault", "step": step - 1, "loss": loss_val}) + "\n")
                if faults >= 5:
                    checkpoint("failed")
                    raise CharwiseError(f"training diverged: non-finite loss or gradients {faults} "
                                        f"times (last at step {step - 1}); try a lower --lr")
                continue
            metrics.write(f'{{"step": {step}, "loss": {loss_val:.6f}, "lr": {lr:.6g}, '
                          f'"t": {elapsed():.4f}}}\n')
            tb.step(step, loss_val, lr, gnorm)
            if bar is not None:
                if tcfg.max_time:
                    bar.n = min(int(elapsed()), int(tcfg.max_time))
                    bar.refresh()
                else:
                    bar.update(1)
                if step % 10 == 0:
                    rate = step * chars_per_step / max(elapsed(), 1e-9)
                    bar.set_postfix_str(f"loss {loss_val:.3f} {rate / 1000:.1f}k chars/s")
            if tcfg.eval_every and step % tcfg.eval_every == 0:
                do_eval()
                checkpoint("training")
                if tcfg.patience is not None and since_best >= tcfg.patience:
                    why = "patience"
                    break
                _, out_of_time = distributed.agree(dist, 0.0, time_up(), device=device)
            elif saving and not out_of_time:
                checkpoint("training")          # the run is never more than a minute from safe
        if last_eval_step != step:
            do_eval()
        checkpoint("done")
    except RuntimeError as e:
        if not dist.enabled:
            raise
        # A peer died or timed out mid-collective: say so in one line instead of a gloo/NCCL trace.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CharwiseError(f"rank {dist.rank}: another training process stopped or timed out "
                            f"({first}); the last checkpoint in {out} can be resumed with "
                            f"torchrun ... -m charwise train --resume --out {out}") from None
    finally:
        metrics.close()
        tb.close()
        if bar is not None:
            bar.close()
        ts.restore_signal_handlers(handlers)
    info["stopped_because"] = why
    if dist.main:
        write_run(out, info)
    distributed.shutdown(dist)
    return TrainResult(out, step, best["val_loss"] if best else None, best["step"] if best else None,
                       loss_val, round(elapsed(), 3), info["history"], why)


def stream_keep_mask(step: int, rows: np.ndarray, every: int) -> np.ndarray:
    """Which streams keep their carried state at `step`: stream b starts cold again every
    `every` windows, the streams staggered so that a few restart at each step. Sampling and
    evaluation always start from a zero state; a model that has only met it at epoch starts
    (16 times an epoch, say) can blow its cell state up from there (seen: 9 nats/char after
    a quarter epoch). A pure function of the step, so resuming reproduces it."""
    return (step + rows) % every != 0


def _estimate_eval_seconds(model: CharLSTM, tokens: np.ndarray, precision: str,
                           probe: int = 4096) -> float:
    n = min(len(tokens), probe + 1)
    t = time.perf_counter()
    evaluate_tokens(model, tokens[:n], precision)
    return (time.perf_counter() - t) * len(tokens) / n * 1.1


def _reference_trainer(model: CharLSTM, tcfg: TrainConfig, resume: bool):
    """The NumPy engine, starting from the torch model's initial weights."""
    from .reference import CharLSTM as NumpyCharLSTM, ReferenceTrainer
    if resume:
        raise CharwiseError("--resume is not supported with --engine numpy (use the torch engine)")
    if model.cfg.dropout > 0:
        raise CharwiseError("--engine numpy has no dropout; use --dropout 0")
    if tcfg.device == "cuda":
        raise CharwiseError("--engine numpy runs on the CPU only")
    ref = NumpyCharLSTM.from_state_dict({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return ReferenceTrainer(ref, lr=tcfg.lr, weight_decay=tcfg.weight_decay, grad_clip=tcfg.grad_clip,
                            betas=(0.9, tcfg.beta2))
