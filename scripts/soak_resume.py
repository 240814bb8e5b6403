"""Soak test: kill a training run with SIGKILL at 20 random moments, resume it each time, and
check that the final weights are bit-identical to the same run never interrupted.

    python scripts/soak_resume.py [--kills 20] [--steps 600] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    flags = ["--max-steps", str(a.steps), "--eval-every", "25", "--precision", "fp32",
             "--threads", "1", "--quiet"]
    cmd = [sys.executable, "-m", "charwise", "train"]
    with tempfile.TemporaryDirectory() as tmp:
        ref, run = Path(tmp) / "ref", Path(tmp) / "soak"
        subprocess.run(cmd + ["--out", str(ref)] + flags, check=True, capture_output=True)
        kills = 0
        first = True
        while True:
            args = cmd + (["--out", str(run), "--force"] + flags if first
                          else ["--resume", "--out", str(run), "--quiet"])
            p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if kills < a.kills:
                time.sleep(rng.uniform(0.2, 2.5))   # startup included: some kills land early
                if p.poll() is None:
                    p.kill()
                    kills += 1
                    print(f"kill {kills:2d}: SIGKILL", flush=True)
            rc = p.wait()
            if rc == 0:
                break
            if rc != -9:
                err = p.stderr.read().decode()
                if "no last.safetensors" in err:           # killed before the first checkpoint
                    first = True
                    continue
                print(err)
                return 1
            first = first and not (run / "last.safetensors").exists()
        a_w, b_w = load_file(ref / "last.safetensors"), load_file(run / "last.safetensors")
        same = a_w.keys() == b_w.keys() and all(torch.equal(a_w[k], b_w[k]) for k in a_w)
        print(f"{kills} kills, {a.steps} steps: final weights, optimizer state and carried "
              f"state {'bit-identical' if same else 'DIFFER'} to the uninterrupted run")
        return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
