"""The engines a run trains with, one interface whichever it is (the loop never asks which):

    stage(x, y)            a batch made ready for its step (torch: its copies on the device,
                           started now so that they travel while the step before runs)
    restart(keep)          rows where `keep` is False start again from a zero state (keep None:
                           no row carries any state, every batch starts from the model's own)
    train_step(batch, lr)  one optimizer step; returns its (loss, grad norm), unread, on the device
    state                  the carried hidden state as torch tensors, (layers, rows, hidden)
                           each: what a checkpoint saves and a resume restores
    opt                    torch's optimizer, whose moments a checkpoint saves (None: the NumPy
                           engine keeps its own)
    sync_weights()         make the torch model hold the current weights (to evaluate and save
                           them with the shared code)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cells import is_attention
from ..errors import CharwiseError
from ..model import CharModule, State, detach_state
from ..reference import CharLSTM as NumpyCharLSTM
from ..reference import ReferenceTrainer
from ..scoring import autocast, fp32_flags
from ..settings.train import ModelConfig, TrainConfig
from ..threads import ThreadPolicy
from .muon import MuonAdamW


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device`. To a GPU through pinned (page-locked) memory: only from there
    is a non_blocking copy asynchronous; from ordinary memory the copy waits for the GPU's queue
    to drain, a hidden sync per batch. (The caching host allocator keeps a pinned block until
    the copy that reads it has run.)"""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def optimizer(model: CharModule, tcfg: TrainConfig) -> torch.optim.AdamW | MuonAdamW:
    """AdamW with weight decay on the weight matrices only (not biases, not the embedding);
    with --optimizer muon, a transformer's block matrices (blocks.K.*.weight) go to Muon."""
    muon = tcfg.optimizer == "muon"
    kinds: dict[str, list[torch.nn.Parameter]] = {"muon": [], "decay": [], "other": []}
    for n, p in model.named_parameters():
        matrix = p.dim() >= 2 and not n.startswith("embed")
        kinds["muon" if muon and matrix and n.startswith("blocks.") else
              "decay" if matrix else "other"].append(p)
    groups = [{"params": kinds["decay"], "weight_decay": tcfg.weight_decay},
              {"params": kinds["other"], "weight_decay": 0.0}]
    # fused: one kernel over all parameters instead of a chain of foreach ops (several times
    # faster; benchmarks/README.md)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    adamw = torch.optim.AdamW(groups, lr=tcfg.lr, betas=(0.9, tcfg.beta2), fused=fused)
    return MuonAdamW(kinds["muon"], adamw, tcfg.lr, tcfg.muon_lr, tcfg.weight_decay) if muon else adamw


class TorchStep:
    """torch's engine: autograd and AdamW (or Muon beside it), on the CPU or a GPU, in the
    run's precision. `net` is what the step calls (the model, or its DDP wrapper under
    torchrun); `state` the carried state a resume restored."""

    def __init__(self, model: CharModule, net: torch.nn.Module, opt: torch.optim.Optimizer | MuonAdamW,
                 tcfg: TrainConfig, device: torch.device, precision: str, threads: ThreadPolicy,
                 chars_per_step: int, state: State | None = None):
        self.model, self.net, self.opt = model, net, opt
        self.device, self.precision = device, precision
        self.threads, self.chars_per_step = threads, chars_per_step
        self.grad_clip = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
        self.state = state

    def stage(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(x, self.device), to_device(y, self.device)

    def restart(self, keep: np.ndarray | None) -> None:
        if keep is None:
            self.state = None
        elif not keep.any():
            self.state = self.model.zero_state(len(keep), self.device)
        elif not keep.all() and self.state is not None:
            mask = to_device(keep.astype(np.float32), self.device)[None, :, None]       # (1, B, 1)
            self.state = tuple(s * mask.to(s.dtype) for s in self.state)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor], lr: float) -> torch.Tensor:
        """A non-finite loss or gradient skips the update and restarts the carried state,
        decided on the device (no read of the values: on a GPU that would be a sync)."""
        x, y = batch
        for g in self.opt.param_groups:
            g["lr"] = lr
        # fp32_flags around the backward pass too: cuDNN's RNN backward reads the TF32 setting
        with self.threads.measure(self.chars_per_step), fp32_flags(self.device, self.precision):
            with autocast(self.device, self.precision):
                logits, new_state = self.net(x, self.state)              # (B, T, V)
                loss = F.cross_entropy(logits.reshape(-1, self.model.cfg.vocab_size).float(),
                                       y.reshape(-1))
                del logits          # backward needs the log-softmax only: one B*T*V buffer less
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            ok = torch.isfinite(gnorm)         # a NaN loss makes the (all-reduced) norm NaN too
            if self.opt.defaults.get("fused"):
                # Skipped on the device, without reading `ok` (a sync): fused AdamW leaves the
                # weights, moments and step count untouched where found_inf is 1 (GradScaler's
                # mechanism; bit-identical to not stepping).
                self.opt.found_inf = (~ok).float()     # type: ignore[union-attr]
                self.opt.step()
            elif ok.item():                    # an unfused optimizer cannot skip on the device
                self.opt.step()
        self.state = tuple(torch.where(ok, s, 0.0) for s in detach_state(new_state))
        return torch.stack([loss.detach().float(), gnorm.float()])

    def sync_weights(self) -> None:
        pass                                   # the torch model is what trains


class NumpyStep:
    """The pure-NumPy reference engine (--engine numpy): the same maths with a hand-written
    backward pass, on the CPU in fp32, from the torch model's initial weights. It owns the
    weights while it trains; sync_weights copies them into the torch model (same names and
    layouts)."""

    opt = None

    def __init__(self, model: CharModule, tcfg: TrainConfig):
        ref = NumpyCharLSTM.from_state_dict({k: v.detach().cpu().numpy()
                                             for k, v in model.state_dict().items()})
        self.model = model
        self.ref = ReferenceTrainer(ref, lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                    grad_clip=tcfg.grad_clip, betas=(0.9, tcfg.beta2))

    @staticmethod
    def check(mcfg: ModelConfig, tcfg: TrainConfig, resume: bool) -> None:
        """What the NumPy engine refuses, said before anything is built or written."""
        if is_attention(mcfg.cell):
            raise CharwiseError("--engine numpy trains recurrent cells (lstm, gru, rnn); a "
                                "transformer trains with --engine torch")
        if resume:
            raise CharwiseError("--resume is not supported with --engine numpy (use the torch engine)")
        if mcfg.dropout > 0:
            raise CharwiseError("--engine numpy has no dropout; use --dropout 0")
        if tcfg.precision == "bf16":
            raise CharwiseError("--engine numpy trains in fp32; --precision bf16 is the torch "
                                "engine's")
        if tcfg.device.startswith("cuda"):
            raise CharwiseError("--engine numpy runs on the CPU only")

    @property
    def state(self) -> State | None:
        st = self.ref.state
        return None if st is None else tuple(torch.from_numpy(s.astype(np.float32)) for s in st)

    def stage(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def restart(self, keep: np.ndarray | None) -> None:
        if keep is None or not keep.any():
            self.ref.reset_state(None if keep is None else len(keep))
        elif not keep.all() and self.ref.state is not None:
            self.ref.state = tuple(s * keep[None, :, None].astype(s.dtype) for s in self.ref.state)

    def train_step(self, batch: Any, lr: float) -> torch.Tensor:
        x, y = batch
        loss = self.ref.step(x, y, lr=lr)
        return torch.tensor([loss, self.ref.last_grad_norm], dtype=torch.float64)

    def sync_weights(self) -> None:
        self.model.load_state_dict({k: torch.from_numpy(v.astype(np.float32))
                                    for k, v in self.ref.model.state_dict().items()})


Engine = TorchStep | NumpyStep
