"""Benchmark: peak memory of `train` and `eval` against the vocabulary size V.

Writes a text of about 0.5 MB whose V distinct characters are CJK ideographs (each appears
about equally often), trains the run's default preset for 2 steps (final evaluation included),
then scores its first 16k characters with `charwise eval`; each command runs in its own process and its
peak RSS (getrusage of the child) is printed, one line per V:

    python benchmarks/vocab_memory.py [--vocab 1000 10000 70000] [--hidden-size 128]

Memory should grow linearly and modestly with V (embedding, head, optimizer moments: about
(E + H + 1) x V x 16 bytes in training), never with V x positions or V x V.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cjk_codepoints(n: int) -> list[int]:
    """n distinct printable CJK ideographs (URO, Ext A, then Ext B)."""
    ranges = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF)]
    out: list[int] = []
    for lo, hi in ranges:
        out.extend(range(lo, min(hi + 1, lo + n - len(out))))
        if len(out) >= n:
            break
    if len(out) < n:
        raise SystemExit(f"at most {len(out)} distinct characters available")
    return out


def make_text(path: Path, vocab: int, target_bytes: int = 500_000, seed: int = 0) -> None:
    import random
    rng = random.Random(seed)
    cps = cjk_codepoints(vocab)
    chars: list[str] = [chr(c) for c in cps]          # every character at least once
    size = sum(len(c.encode()) for c in chars)
    while size < target_bytes:
        c = chr(cps[rng.randrange(vocab)]) if rng.random() > 0.1 else "\n"
        chars.append(c)
        size += len(c.encode())
    rng.shuffle(chars)
    path.write_text("".join(chars), encoding="utf-8")


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run the biggest V last
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak, before) / 1024, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[1000, 10000, 70000])
    ap.add_argument("--hidden-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"{'V':>7} {'train peak RSS':>15} {'train s':>8} {'eval peak RSS':>14} {'eval s':>7}")
    for v in sorted(a.vocab):
        with tempfile.TemporaryDirectory() as d:
            text = Path(d) / "cjk.txt"
            make_text(text, v)
            run = Path(d) / "run"
            extra = ["--hidden-size", str(a.hidden_size)] if a.hidden_size else []
            # each measurement in a fresh interpreter: ru_maxrss of children is a running max,
            # so a wrapper process per command keeps the numbers apart
            wrap = [sys.executable, __file__, "--child"]
            tr, ts = _child(wrap + [sys.executable, "-m", "charwise", "train", str(text), "--out", str(run),
                                    "--max-steps", str(a.steps), "--quiet", *extra], env)
            # scoring the first ~16k characters: long enough for the largest chunk the old code
            # used (8,192 positions), short enough that 70k-way logits do not take minutes
            part = Path(d) / "part.txt"
            part.write_text(text.read_text(encoding="utf-8")[:16384], encoding="utf-8")
            er, es = _child(wrap + [sys.executable, "-m", "charwise", "eval", str(run), str(part)], env)
            print(f"{v:>7} {tr:>12.0f} MB {ts:>8.1f} {er:>11.0f} MB {es:>7.1f}", flush=True)


def _child(cmd: list[str], env) -> tuple[float, float]:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr.strip() or r.stdout.strip())
    mb, s = r.stdout.split()[-2:]
    return float(mb), float(s)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mb, s = peak_rss_mb(sys.argv[2:])
        print(f"{mb:.1f} {s:.2f}")
    else:
        main()
