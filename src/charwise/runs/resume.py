"""A run's resume state, last.safetensors: everything the next training step depends on
(weights, AdamW moments, the carried state of every stream, the RNG states), saved after each
checkpoint interval and restored by `train --resume` bit-identically; ckpt-STEP copies of it."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from ..cells import CELLS
from ..errors import CharwiseError
from ..guards import ADAMW_STATE, check_resume_state
from .rundir import LAST, load_tensors, save_tensors


def save_last(out: Path, model: Any, opt: Any, state: Any, rng_states: Any, np_rng: Any, step: int,
              seconds: float, extra: dict, cuda_rng: Any = None) -> None:
    """last.safetensors: weights, AdamW moments, the carried state of all B streams, and the
    RNG states (torch's CPU generator, and on a GPU its CUDA generator: one row per rank) --
    everything the next step depends on, except cuDNN's own RNN-dropout state (docs/how-it-works.md).
    `opt` None: no moments (the NumPy engine's are its own; its runs do not resume)."""
    import torch  # lazy: see save_tensors
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    for i, st in (opt.state_dict()["state"] if opt is not None else {}).items():
        for name, v in st.items():
            tensors[f"optim/{i}/{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
    for j, s in enumerate(state or ()):
        # float32 whatever autocast made it (bf16, fp16): a resume may run on another device
        # or in another precision, and an fp32 LSTM refuses a half-precision state
        tensors[f"state/{j}"] = s.float()
    tensors["rng/torch"] = rng_states                       # (world, n) uint8
    if cuda_rng is not None:
        # dropout on a GPU draws from the CUDA generator, not the CPU one
        tensors["rng/cuda"] = cuda_rng                      # (world, m) uint8
    meta = {"step": step, "train_seconds": seconds, "numpy_rng": np_rng.bit_generator.state,
            "python_rng": _py_rng_to_json(random.getstate()), **extra}
    save_tensors(out / LAST, tensors, meta)


def restore(out: Path, model, opt, np_rng, device, rank: int = 0, rows: slice | None = None,
            batch_size: int | None = None):
    """Load last.safetensors into model/optimizer/RNGs; returns (step, state, seconds, meta).
    `rows` picks this rank's streams out of the saved state. Everything is validated first
    (a damaged file is a one-line error naming it, never a traceback or a NaN run)."""
    import torch  # lazy: see save_tensors
    if not (out / LAST).is_file():
        raise CharwiseError(f"{out}: no {LAST} to resume from")
    tensors, meta = load_tensors(out / LAST)
    cfg = model.cfg
    saved_b = next((t.shape[1] for k, t in tensors.items() if k.startswith("state/") and t.dim() == 3), 0)
    # an optimizer that keeps other state than AdamW's says so (training/muon.py)
    param_state = opt.layout() if hasattr(opt, "layout") else \
        [(tuple(p.shape), ADAMW_STATE) for g in opt.param_groups for p in g["params"]]
    check_resume_state(out / LAST, tensors, meta, param_state,
                       {k: tuple(v.shape) for k, v in model.state_dict().items()},
                       (cfg.layers, batch_size or saved_b, cfg.hidden_size),
                       CELLS[cfg.cell].state_arity, torch.get_rng_state().numel())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    osd = opt.state_dict()
    osd["state"] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/")
            osd["state"].setdefault(int(i), {})[name] = v.to(device) if name != "step" else v
    opt.load_state_dict(osd)
    n_state = len([k for k in tensors if k.startswith("state/")])
    # float32: older checkpoints hold the state in the dtype autocast made it in
    state = tuple(tensors[f"state/{j}"][:, rows or slice(None)].float().to(device).contiguous()
                  for j in range(n_state)) or None
    restore_torch_rng(tensors, rank, device)
    np_rng.bit_generator.state = meta["numpy_rng"]
    random.setstate(_py_rng_from_json(meta["python_rng"]))
    return int(meta["step"]), state, float(meta["train_seconds"]), meta


def restore_torch_rng(tensors: dict, rank: int, device: Any, cuda: Any = None) -> None:
    """This rank's torch RNG states: the CPU generator always; the CUDA generator of `device`
    when the run trains on a GPU and the checkpoint has one (a run that moves between CPU and
    GPU continues from the seeded state there: its dropout masks differ from then on).
    `cuda` stands in for torch.cuda (tests)."""
    import torch  # lazy: see save_tensors
    torch.set_rng_state(tensors["rng/torch"][rank].clone())      # a fresh, owned buffer
    saved = tensors.get("rng/cuda")
    if saved is not None and torch.device(device).type == "cuda":
        (cuda or torch.cuda).set_rng_state(saved[rank].clone(), device)


def keep_older(out: Path, step: int, keep: int) -> None:
    """Hard-link the fresh last.safetensors as ckpt-STEP.safetensors; prune beyond `keep`."""
    target = out / f"ckpt-{step:09d}.safetensors"
    if not target.exists():
        os.link(out / LAST, target)
    for old in sorted(out.glob("ckpt-*.safetensors"))[:-keep]:
        old.unlink()


def _py_rng_to_json(st):
    return [st[0], list(st[1]), st[2]]


def _py_rng_from_json(st):
    return (st[0], tuple(st[1]), st[2])
