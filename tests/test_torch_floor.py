"""pyproject's torch floor covers every torch API charwise relies on (issue 29, item 3).

The table below is the one place these versions are listed: an API added to the code with a
newer torch belongs here, and then the floor in pyproject.toml must rise with it (this test
fails until it does). Versions are from PyTorch's release notes and documentation."""
import re
import sys
from pathlib import Path

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

# API (as charwise uses it) -> (the torch release it needs, a check that it is there; None: the
# name is a dotted attribute path). For the ones below the floor the version is one they are
# known to be in, not necessarily the first.
TORCH_APIS = {
    # evaluate.fp32_flags, recurrence_precision: the per-operation TF32 settings
    "torch.backends.cudnn.rnn.fp32_precision": ((2, 9), None),
    "torch.backends.cudnn.conv.fp32_precision": ((2, 9), None),
    "torch.backends.cuda.matmul.fp32_precision": ((2, 9), None),
    "torch.backends.mkldnn.matmul.fp32_precision": ((2, 9), None),
    # training/loop._optimizer: fused AdamW on the CPU (CUDA had it from 2.0)
    "torch.optim.AdamW(fused=True) on the CPU": ((2, 4), lambda: _fused_adamw_on_cpu()),
    # model.CharRNN: autocast state asked per device type
    "torch.is_autocast_enabled(device_type)": ((2, 4), lambda: torch.is_autocast_enabled("cuda") in (True, False)),
    # training/distributed.peer_failure: the distributed error classes
    "torch.distributed.DistError": ((2, 5), lambda: hasattr(torch.distributed, "DistBackendError")),
    "torch.OutOfMemoryError": ((2, 5), lambda: issubclass(torch.OutOfMemoryError, RuntimeError)),
}


def _fused_adamw_on_cpu() -> bool:
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    torch.optim.AdamW([p], fused=True).step()
    return bool((p != 0).all())


def _has(path: str) -> bool:
    obj: object = torch
    for part in path.split(".")[1:]:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def torch_floor() -> tuple[int, ...]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"torch\b", d))
    m = re.fullmatch(r"torch\s*>=\s*(\d+)\.(\d+)(?:\.\d+)?\s*(?:,.*)?", spec)
    assert m, f"pyproject.toml: expected torch>=X.Y, got {spec!r}"
    return int(m[1]), int(m[2])


def test_the_torch_floor_covers_every_api_used():
    need = max(v for v, _ in TORCH_APIS.values())
    assert torch_floor() >= need, (f"pyproject.toml says torch>={'.'.join(map(str, torch_floor()))}, "
                                   f"but the code uses APIs from {'.'.join(map(str, need))}")


def test_the_apis_listed_are_in_the_installed_torch():
    missing = [name for name, (_, present) in TORCH_APIS.items()
               if not (present() if present else _has(name))]
    assert not missing, missing


def test_the_readme_states_the_floor():
    floor = ".".join(map(str, torch_floor()))
    assert f"torch >= {floor}" in (ROOT / "README.md").read_text()
