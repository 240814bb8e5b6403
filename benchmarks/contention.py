"""Benchmark 8: training on a busy CPU. In one run, first on the machine as it is ("quiet"), then
with a busy-loop process pinned to one of this process's CPUs ("busy"):

  * steps/s of `charwise.train` with the default thread policy (measured, threads.py) vs fixed
    1 and fixed N threads (N = the CPUs this process may use), for the spec preset's shape and
    the small preset's shape;
  * the wall time of `charwise demo` (a fresh process, as a user runs it);
  * a `--max-time` run of the small preset on tiny-shakespeare (its whole validation split
    scored at the end): how close to the budget it ends.

Targets (issue 14): busy, the default keeps >= 0.8x the best fixed choice and >= 0.4x its own
quiet throughput; `charwise demo` stays under 15 s; a --max-time run ends within 5 % of it.

    python benchmarks/contention.py [--budget 30] [--cap 10]     # about 4 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from charwise.api import train
from charwise.threads import usable_cpus

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"
QUIET = dict(progress=False, log=lambda *a: None)

# (name, preset, corpus, steps, settings): the presets' shapes, no evaluation until the end,
# a tiny validation split so that the final evaluation does not count much in steps/s
SHAPES = [
    ("spec 1x128, 8x40", "spec", None, 300, dict(val_fraction=0.0)),
    ("small 1x640, 16x64", "small", CORPUS, 60, dict(val_fraction=0.0005)),
]


@contextlib.contextmanager
def busy_core(on: bool):
    """A process spinning on one of our CPUs (the last), or nothing."""
    if not on:
        yield None
        return
    cpu = sorted(os.sched_getaffinity(0))[-1]
    # spins until this process ends, however it ends (getppid changes when the parent dies)
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile os.getppid() == {os.getpid()}: pass\n"
    p = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.5)
    try:
        yield cpu
    finally:
        p.kill()
        p.wait()


def steps_per_s(tmp: Path, preset, corpus, steps: int, cap: float, threads, extra: dict) -> float:
    """Training steps per second over the whole loop (warm-up and thread probes included),
    from the run's metrics: steps done / time of the last step."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    train(corpus, out=out, preset=preset, max_steps=steps, max_time=cap, eval_every=0,
          threads=threads, **extra, **QUIET)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and "event" not in r]
    return rows[-1]["step"] / rows[-1]["t"] if rows else 0.0     # not one step within the cap


def demo_seconds(tmp: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charwise", "demo", "--out", str(tmp / "demo")],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def budget_run(tmp: Path, budget: float) -> dict:
    out = Path(tempfile.mkdtemp(dir=tmp))
    t = time.perf_counter()
    res = train(CORPUS, out=out, preset="small", max_time=budget, **QUIET)
    wall = time.perf_counter() - t
    return {"train_seconds": res.train_seconds, "wall": wall, "steps": res.steps,
            "val": res.best_val_loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="--max-time of the budget runs (s)")
    ap.add_argument("--cap", type=float, default=10.0, help="most seconds per throughput run")
    ap.add_argument("--skip-demo", action="store_true")
    a = ap.parse_args()
    n = usable_cpus()
    print(f"{n} usable CPUs; torch {torch.__version__}; default torch threads {torch.get_num_threads()}")
    policies = [("default", None), ("fixed 1", 1), (f"fixed {n}", n)]
    rate: dict = {}
    extra: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for load in ("quiet", "busy"):
            with busy_core(load == "busy") as cpu:
                print(f"\n== {load}" + (f": a busy loop pinned to CPU {cpu}" if cpu is not None else ""),
                      flush=True)
                for name, preset, corpus, steps, settings in SHAPES:
                    for label, threads in policies:
                        r = steps_per_s(tmp, preset, corpus, steps, a.cap, threads, settings)
                        rate[load, name, label] = r
                        print(f"  {name:20s} {label:8s} {r:8.2f} steps/s", flush=True)
                if not a.skip_demo:
                    extra[load, "demo"] = demo_seconds(tmp)
                    print(f"  charwise demo: {extra[load, 'demo']:.1f} s", flush=True)
                extra[load, "budget"] = budget_run(tmp, a.budget)
                b = extra[load, "budget"]
                print(f"  --max-time {a.budget:g}: trained {b['train_seconds']:.1f} s "
                      f"({b['train_seconds'] / a.budget:.1%} of the budget; whole call {b['wall']:.1f} s), "
                      f"{b['steps']} steps, val {b['val']:.4f}", flush=True)

    print("\n| shape | load | default | fixed 1 | fixed N | default / best fixed | default busy / quiet |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    verdicts = []
    for name, *_ in SHAPES:
        for load in ("quiet", "busy"):
            d, one, many = (rate[load, name, label] for label, _ in policies)
            ratio = d / max(one, many)
            own = d / rate["quiet", name, "default"]
            print(f"| {name} | {load} | {d:.2f} | {one:.2f} | {many:.2f} | {ratio:.2f} | "
                  f"{own:.2f} |" if load == "busy" else
                  f"| {name} | {load} | {d:.2f} | {one:.2f} | {many:.2f} | {ratio:.2f} | |")
            if load == "busy":
                verdicts.append((f"{name}: busy default >= 0.8x best fixed", ratio >= 0.8, f"{ratio:.2f}"))
                verdicts.append((f"{name}: busy default >= 0.4x its quiet", own >= 0.4, f"{own:.2f}"))
    for load in ("quiet", "busy"):
        if (load, "demo") in extra:
            s = extra[load, "demo"]
            verdicts.append((f"demo {load} < 15 s", s < 15, f"{s:.1f} s"))
        b = extra[load, "budget"]
        off = abs(b["train_seconds"] - a.budget) / a.budget
        verdicts.append((f"--max-time {a.budget:g} {load}: ends within 5 %", off <= 0.05,
                         f"{b['train_seconds']:.1f} s ({off:.1%} off)"))
    print()
    for what, ok, value in verdicts:
        print(f"{'met   ' if ok else 'MISSED'} {what}: {value}")


if __name__ == "__main__":
    main()
