#!/usr/bin/env bash
# GPU benchmark and checks (issues #18 item 5 and #20): run as is on a machine with one NVIDIA GPU
# and a CUDA PyTorch already installed (plus numpy, safetensors, tqdm, matplotlib), from any
# directory. Nothing is installed or downloaded; everything it needs is in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
PYTHONPATH=src exec timeout 480 python3 benchmarks/gpu.py "$@"
