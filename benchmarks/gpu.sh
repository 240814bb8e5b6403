#!/usr/bin/env bash
# GPU benchmark and checks (issues #18 item 5, #20 and #29), for a machine with one NVIDIA GPU,
# from any directory. It installs and downloads nothing: the Python it runs needs a CUDA torch,
# numpy and safetensors (benchmarks/README.md, section "GPU", says how to prepare one before
# the timed run). PYTHON=... picks the interpreter; by default the repository's .venv if there
# is one, else python3. Everything else it needs is in this repository. Ends in under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# cuBLAS results repeat run to run only with a fixed workspace configuration: the resume
# check compares two runs bit for bit (gpu.py sets it too, for direct runs)
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}

# Preflight: what is missing, in one line, before minutes are spent (and no traceback).
"$PY" - "$@" <<'PREFLIGHT' || exit 2
import argparse, importlib.util, sys
ap = argparse.ArgumentParser(add_help=False)
ap.add_argument("--device", default="cuda")
device = ap.parse_known_args()[0].device
missing = [m for m in ("torch", "numpy", "safetensors") if importlib.util.find_spec(m) is None]
problems = [f"missing {', '.join(missing)}"] if missing else []
if "torch" not in missing and device.startswith("cuda"):
    import torch
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU-only build")
    elif not torch.cuda.is_available():
        problems.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
if problems:
    print(f"gpu.sh: {sys.executable}: {'; '.join(problems)} "
          "(benchmarks/README.md, section GPU: how to prepare)")
    sys.exit(1)
PREFLIGHT

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
# -u: unbuffered, so that what was printed survives if the timeout stops the script
PYTHONPATH=src exec timeout 480 "$PY" -u benchmarks/gpu.py "$@"
