"""A trained model's weights from a run directory or a packed file: which file (best or last),
and the model built from run.json's description with those weights, checked before anything
large is allocated. No stored code is executed: run.json is data, the weights safetensors.
Used by sampling (generation.charmodel.load), training from a run (runs.transfer) and pack.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from ..bounds import check_inference, expected_shapes
from ..data.vocab import AnyVocab, vocab_from_info
from ..errors import CharwiseError
from ..guards import check_finite
from ..model import CharModule, build_model
from ..settings.train import ModelConfig
from ..settings.options import build
from .rundir import BEST, LAST, RUN_JSON, check_run_dir, load_tensors, read_run, run_json_path, tensor_shapes


def load_model(run_dir: str | Path, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[CharModule, AnyVocab, dict]:
    """(the model in eval mode, Vocab, run info) from a run directory; no code is executed."""
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
    model = build_model(replace(cfg))
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

