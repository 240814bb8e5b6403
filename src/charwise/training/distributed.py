"""Data-parallel training on PyTorch's own engine (torch.distributed, launched by torchrun).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; without them (or with WORLD_SIZE=1) the run's
Dist is the single-process one, whose collectives return their input, and training is a plain
single process. Ranks exchange tensors only (no
pickled objects): one small all-reduce per step carries the loss and grad norm, the signals
and rank 0's decisions (stop, save, the schedule's position under a time budget), so every
rank applies the same learning rate and leaves the loop at the same step.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from ..errors import CharwiseError


@dataclass(frozen=True)
class Dist:
    """One process: there is no one to agree with, so every collective returns its input and
    every wait returns at once. The loop calls them all the same and never asks which kind of
    run it is in; Torchrun, below, is the real thing."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def streams(self, batch_size: int) -> slice:
        """This rank's share of the B streams: the global batch is the same as one process's."""
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def check_world(self, batch_size: int, saved_world: int | None) -> None:
        if batch_size % self.world:
            raise CharwiseError(f"--batch-size {batch_size} must be divisible by the number of "
                                f"processes ({self.world})")
        if saved_world is not None and saved_world != self.world:
            raise CharwiseError(f"this run was trained with {saved_world} process(es); resume it "
                                f"with the same number (got {self.world})")

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """What the training step calls: the model, or under torchrun its DDP wrapper."""
        return model

    def wait_group(self, timeout_s: float) -> Any:
        """A process group for waiting on rank 0's own work, with its own timeout (None in a
        single process). Every rank must create it, in the same order."""
        return None

    def barrier(self, group: Any = None) -> None:
        pass

    def agree(self, values: torch.Tensor | None, *flags: bool, lead: tuple[float, ...] = (),
              device: Any = None) -> tuple[list[float] | None, tuple[bool, ...], tuple[float, ...]]:
        """In one all-reduce: the mean over ranks of `values` (a step's loss and grad norm, left on
        the device until now), each flag true if it is true on any rank, and rank 0's `lead`
        values as they are (what rank 0's clock decides, so that every rank follows one clock
        rather than its own). Reading the result is the step's one host sync. In one process
        nothing is read: no means (None: `values` stay where they are), the flags and `lead`
        as given."""
        return None, tuple(flags), tuple(lead)

    def broadcast_floats(self, values: list[float], device: Any = None,
                         group: Any = None) -> list[float]:
        """Rank 0's numbers to every rank (evaluation runs once, on rank 0, over the whole
        split). With a wait_group (gloo) the numbers travel on the CPU."""
        return values

    def gather_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's tensor concatenated along `dim` (hidden states: the B streams; RNG states)."""
        return t

    def lost_peer(self, e: BaseException, out: Path) -> CharwiseError | None:
        """The one-line error to raise instead of `e`, raised in the training loop of the run in
        `out`, when `e` means that another process stopped or a collective timed out: never in
        one process (None: `e` is this process's own, to be reported as it is)."""
        return None

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class Torchrun(Dist):
    """A rank of a torchrun job: the collectives of torch.distributed (gloo on CPUs, NCCL on GPUs)."""

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        # DDP averages the gradients of the ranks' equal shares: the same update as one process
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def wait_group(self, timeout_s: float) -> Any:
        import torch.distributed as dist
        return dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))

    def barrier(self, group: Any = None) -> None:
        import torch.distributed as dist
        dist.barrier(group=group)

    def agree(self, values: torch.Tensor | None, *flags: bool, lead: tuple[float, ...] = (),
              device: Any = None) -> tuple[list[float] | None, tuple[bool, ...], tuple[float, ...]]:
        import torch.distributed as dist
        host = torch.tensor([*map(float, flags), *(float(v) if self.main else 0.0 for v in lead)],
                            dtype=torch.float64)
        if device is not None and torch.device(device).type == "cuda":
            host = host.pin_memory()       # from page-locked memory the copy waits for no queue
        t = host.to(device or "cpu", non_blocking=True)
        if values is not None:
            t = torch.cat([values.to(t.device, torch.float64), t])
        dist.all_reduce(t)                  # a sum: the other ranks add zeros to rank 0's values
        vals = t.tolist()
        k = 0 if values is None else len(values)
        n = k + len(flags)
        means = [v / self.world for v in vals[:k]] if values is not None else None
        return means, tuple(v > 0 for v in vals[k:n]), tuple(vals[n:])

    def broadcast_floats(self, values: list[float], device: Any = None,
                         group: Any = None) -> list[float]:
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device="cpu" if group is not None else device)
        dist.broadcast(t, 0, group=group)
        return t.tolist()

    def gather_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        import torch.distributed as dist
        t = t.contiguous()
        parts = [torch.zeros_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim)

    def lost_peer(self, e: BaseException, out: Path) -> CharwiseError | None:
        if not peer_failure(e):
            return None
        # one line instead of a gloo/NCCL trace
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        return CharwiseError(f"rank {self.rank}: another training process stopped or timed out "
                             f"({first}); the last checkpoint in {out} can be resumed with "
                             f"torchrun ... -m charwise train --resume --out {out}")

    def shutdown(self) -> None:
        import torch.distributed as dist
        if dist.is_initialized():
            # Everyone leaves together: a rank tearing its group down while a peer is still in
            # a collective can abort that peer ("terminate called without an active exception").
            dist.barrier()
            dist.destroy_process_group()


def setup(device: str, timeout_s: float = 600.0) -> Dist:
    """This process's place in the job: Dist() alone, or a Torchrun rank (its group joined)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda:"):
        raise CharwiseError(f"--device {device}: under torchrun each process trains on the GPU "
                            "of its LOCAL_RANK; use --device cuda")
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        gpus = torch.cuda.device_count()
        if local >= gpus:
            # one GPU per process: more processes than GPUs on a node would all fail at
            # set_device with a CUDA trace (a 1-GPU machine under `--nproc_per_node 2`)
            raise CharwiseError(f"rank {rank}: LOCAL_RANK {local} but {gpus} CUDA GPU(s) "
                                "visible: start one process per GPU, or train on the CPU "
                                "with --device cpu")
        torch.cuda.set_device(local)             # one GPU per rank
    if not dist.is_initialized():
        # A rank that dies leaves the others blocked in a collective: the timeout turns that
        # into an error instead of a hang (torchrun also tears the group down).
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return Torchrun(rank, world, local)


def device_for(d: Dist, device: torch.device) -> torch.device:
    return torch.device("cuda", d.local_rank) if device.type == "cuda" and d.enabled else device


# Waits on work only rank 0 does (encoding the corpus, the exact batch-1 evaluation) can last
# far longer than a training step: a 10 MB validation split scored on a GPU outlasts NCCL's 600 s,
# and the watchdog would kill the job. Those waits run in a gloo group of their own whose
# timeout is sized to the work, at rates slower than any machine this runs on is expected to be
# (assumptions, not measurements); the step collectives keep the short timeout that turns a
# hung peer into an error.
ENCODE_SECONDS_PER_BYTE = 1e-6           # encoding the corpus: 1 MB/s
SCORE_SECONDS_PER_CHAR = 1e-3            # exact evaluation: 1 ms per character


def rank0_timeout(work_seconds: float, floor: float = 600.0) -> float:
    """Seconds the other ranks wait for rank-0-only work expected to take `work_seconds` at
    the slow rates above: twice that, on top of the usual timeout."""
    return floor + 2.0 * max(work_seconds, 0.0)


# What gloo's and NCCL's failures say when they come as plain RuntimeErrors: gloo names its
# own source files ("third_party/gloo/gloo/transport/tcp/pair.cc: Connection closed by peer",
# ".../unbound_buffer.cc: Timed out waiting 600000ms for recv"), NCCL its name.
PEER_FAILURE = re.compile(r"\bgloo\b|\bnccl\b|timed out|connection (?:closed|reset)|broken pipe",
                          re.IGNORECASE)


def peer_failure(e: BaseException) -> bool:
    """Whether an error raised in the training loop under torchrun means that another process
    stopped or a collective timed out -- torch.distributed's own errors (DistBackendError,
    DistNetworkError, DistStoreError), gloo's and NCCL's -- rather than this process's own
    failure: a CUDA out-of-memory, a cuDNN error or a bug must be reported as it is, not as
    "another training process stopped"."""
    import torch.distributed as dist
    if isinstance(e, torch.OutOfMemoryError):
        return False
    return isinstance(e, dist.DistError) or bool(PEER_FAILURE.search(str(e)))
