"""What an exact resume needs, saved beside the weights, and the loop's plumbing
(signals, progress bar). Kept apart from train.py so the loop reads in one sitting."""
from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import torch

from .checkpoint import LAST, atomic_write_bytes, load_tensors, save_tensors
from .config import CharwiseError


def save_last(out: Path, model, opt, state, rng_states: torch.Tensor, np_rng, step: int,
              seconds: float, extra: dict) -> None:
    """last.safetensors: weights, AdamW moments, the carried state of all B streams, and the
    RNG states (torch: one row per rank) -- everything the next step depends on."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            tensors[f"optim/{i}/{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
    for j, s in enumerate(state or ()):
        tensors[f"state/{j}"] = s
    tensors["rng/torch"] = rng_states                       # (world, n) uint8
    meta = {"step": step, "train_seconds": seconds, "numpy_rng": np_rng.bit_generator.state,
            "python_rng": _py_rng_to_json(random.getstate()), **extra}
    save_tensors(out / LAST, tensors, meta)


def restore(out: Path, model, opt, np_rng, device, rank: int = 0, rows: slice | None = None):
    """Load last.safetensors into model/optimizer/RNGs; returns (step, state, seconds, meta).
    `rows` picks this rank's streams out of the saved state."""
    if not (out / LAST).is_file():
        raise CharwiseError(f"{out}: no {LAST} to resume from")
    tensors, meta = load_tensors(out / LAST)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    osd = opt.state_dict()
    osd["state"] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/")
            osd["state"].setdefault(int(i), {})[name] = v.to(device) if name != "step" else v
    opt.load_state_dict(osd)
    n_state = len([k for k in tensors if k.startswith("state/")])
    state = tuple(tensors[f"state/{j}"][:, rows or slice(None)].to(device).contiguous()
                  for j in range(n_state)) or None
    torch.set_rng_state(tensors["rng/torch"][rank].clone())      # a fresh, owned buffer
    np_rng.bit_generator.state = meta["numpy_rng"]
    random.setstate(_py_rng_from_json(meta["python_rng"]))
    return int(meta["step"]), state, float(meta["train_seconds"]), meta


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


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            pass                                   # a line cut by a kill
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


# ----------------------------------------------------------------------------- plumbing

def install_signal_handlers(flag: list[int]):
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        flag.append(signum)

    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(handlers) -> None:
    for s, h in (handlers or {}).items():
        signal.signal(s, h)


def progress_bar(enabled: bool | None, max_steps, max_time, start: int):
    """A tqdm bar, or None when there is none to show (enabled=False, or None and stderr is
    not a terminal): then the loop's messages go to its log function instead."""
    if enabled is False:
        return None
    from tqdm.auto import tqdm
    disable = None if enabled is None else False
    if max_time:
        bar = tqdm(total=int(max_time), unit="s", disable=disable, leave=False)
    else:
        bar = tqdm(total=max_steps, initial=start, unit="step", disable=disable, leave=False)
    return None if bar.disable else bar
