"""Data-parallel throughput on this machine: `torchrun --nproc_per_node=2` (gloo, 1 thread per
rank) vs one process with 2 threads, same model, global batch, window and steps, measured in
one run from the per-step times the runs log.

    python benchmarks/distributed.py [--steps 60] [--hidden 640] [--batch 16] [--seq 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def rate(run: Path, warm: int, steps: int, chars: int) -> float:
    t = {r["step"]: r["t"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
         if "t" in r}
    return (steps - warm) * chars / (t[steps] - t[warm])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    a = ap.parse_args()
    flags = ["train", str(CORPUS), "--preset", "small", "--hidden-size", str(a.hidden),
             "--batch-size", str(a.batch), "--seq-len", str(a.seq), "--max-steps", str(a.steps),
             "--eval-every", "0", "--val-fraction", "0.01", "--quiet"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, threads in (
                ("1 process x 2 threads", [sys.executable, "-m", "charwise"], "2"),
                ("2 processes x 1 thread (gloo)", [sys.executable, "-m", "torch.distributed.run",
                                                   "--standalone", "--nproc_per_node=2", "-m", "charwise"], "1")):
            out = Path(tmp) / name.split()[0]
            subprocess.run(cmd + flags + ["--out", str(out), "--threads", threads], check=True,
                           capture_output=True, env={**os.environ, "OMP_NUM_THREADS": threads})
            rows.append((name, rate(out, 5, a.steps, a.batch * a.seq)))
    print(f"LSTM 1x{a.hidden}, global batch {a.batch} x {a.seq}, {a.steps} steps")
    for name, r in rows:
        print(f"{name:32s} {r:10,.0f} chars/s  {r / rows[0][1]:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
