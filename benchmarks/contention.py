"""Benchmark 8: training on a busy CPU. In one run, first on the machine as it is ("quiet"), then
with a busy-loop process pinned to one of this process's CPUs ("busy"):

  * steps/s of `charwise.train` with the default thread policy (measured, threads.py) vs fixed
    1 and fixed N threads (N = the CPUs this process may use), for the spec preset's shape and
    the small preset's shape;
  * the wall time of `charwise demo` (a fresh process, as a user runs it);
  * a `--max-time` run of the small preset on tiny-shakespeare (its whole validation split
    scored at the end): how close to the budget it ends. --max-time counts from the start of
    training (corpus read, model built: the run's header line) to the end of the last save
    (budget.py); the benchmark times exactly that span itself, from the header line being
    logged to train() returning, and prints it beside the run's own train_seconds and its
    plan (when training stopped, the reserve, the predicted and the actual final evaluation).

Targets (issue 14): busy, the default keeps >= 0.8x the best fixed choice and >= 0.4x its own
quiet throughput; `charwise demo` stays under 15 s; a --max-time run ends within 5 % of it.

    python benchmarks/contention.py [--budget 30] [--cap 10]     # about 4 minutes on 2 cores
    python benchmarks/contention.py --budget 60 --budget-only    # only the --max-time runs
    python benchmarks/contention.py --budget 10 --budget-only --val-fraction 0.005   # a check
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
from charwise.errors import CharwiseError
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
    # checkpoint_every=0: no checkpoint (with a time budget one is written early) in the timing
    train(corpus, out=out, preset=preset, max_steps=steps, max_time=cap, eval_every=0,
          checkpoint_every=0, threads=threads, **extra, **QUIET)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and "event" not in r]
    return rows[-1]["step"] / rows[-1]["t"] if rows else 0.0     # not one step within the cap


def demo_seconds(tmp: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charwise", "demo", "--out", str(tmp / "demo")],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def budget_run(tmp: Path, budget: float, settings: dict) -> dict:
    """A --max-time run of the small preset; its length by --max-time's definition, timed
    here: from the header line (logged as the run's clock starts) to train() returning."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    marks: dict = {}

    def log(line: str, *_) -> None:
        if line.startswith("charwise ") and "start" not in marks:
            marks["start"] = time.perf_counter()
        elif line.startswith("note:"):
            print(f"    {line}", flush=True)

    t = time.perf_counter()
    try:
        res = train(CORPUS, out=out, preset="small", max_time=budget, log=log,
                    **settings)
    except CharwiseError as e:                   # a budget too short for the final evaluation
        return {"refused": str(e)}
    end = time.perf_counter()
    plan = json.loads((out / "run.json").read_text()).get("time_budget") or {}
    return {"seconds": end - marks["start"], "train_seconds": res.train_seconds,
            "call": end - t, "steps": res.steps, "val": res.best_val_loss, "plan": plan}


def show_budget(load: str, budget: float, b: dict) -> None:
    if "refused" in b:
        print(f"  --max-time {budget:g}: refused: {b['refused']}", flush=True)
        return
    p = b["plan"]
    print(f"  --max-time {budget:g}: took {b['seconds']:.2f} s by its definition "
          f"({(b['seconds'] - budget) / budget:+.1%}; the run's train_seconds "
          f"{b['train_seconds']:.2f}; whole call with start-up {b['call']:.1f} s), "
          f"{b['steps']} steps, val {b['val']:.4f}", flush=True)
    print(f"    training ended at {p.get('training_ended', float('nan')):.2f} s, reserved "
          f"{p.get('reserved', float('nan')):.2f} s; final evaluation predicted "
          f"{p.get('predicted_evaluation', float('nan')):.2f} s, took "
          f"{p.get('final_evaluation') or float('nan'):.2f} s", flush=True)


def throughput_table(rate: dict, policies: list) -> list:
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
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="--max-time of the budget runs (s)")
    ap.add_argument("--cap", type=float, default=10.0, help="most seconds per throughput run")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--budget-only", action="store_true",
                    help="only the --max-time runs (no throughput runs, no demo)")
    ap.add_argument("--val-fraction", type=float, default=None,
                    help="the budget runs' validation split (default: the small preset's, 0.1)")
    a = ap.parse_args()
    settings = {} if a.val_fraction is None else {"val_fraction": a.val_fraction}
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
                for name, preset, corpus, steps, shape in [] if a.budget_only else SHAPES:
                    for label, threads in policies:
                        r = steps_per_s(tmp, preset, corpus, steps, a.cap, threads, shape)
                        rate[load, name, label] = r
                        print(f"  {name:20s} {label:8s} {r:8.2f} steps/s", flush=True)
                if not (a.skip_demo or a.budget_only):
                    extra[load, "demo"] = demo_seconds(tmp)
                    print(f"  charwise demo: {extra[load, 'demo']:.1f} s", flush=True)
                extra[load, "budget"] = budget_run(tmp, a.budget, settings)
                show_budget(load, a.budget, extra[load, "budget"])

    verdicts = []
    if not a.budget_only:
        verdicts += throughput_table(rate, policies)
    print("\n| load | --max-time | took (from the header to the last save) | deviation | steps |")
    print("| --- | --- | --- | --- | --- |")
    for load in ("quiet", "busy"):
        if (load, "demo") in extra:
            s = extra[load, "demo"]
            verdicts.append((f"demo {load} < 15 s", s < 15, f"{s:.1f} s"))
        b = extra[load, "budget"]
        if "refused" in b:
            print(f"| {load} | {a.budget:g} s | refused | | 0 |")
            verdicts.append((f"--max-time {a.budget:g} {load}: ends within 5 %", False, "refused: too short"))
            continue
        dev = (b["seconds"] - a.budget) / a.budget
        print(f"| {load} | {a.budget:g} s | {b['seconds']:.2f} s | {dev:+.1%} | {b['steps']} |")
        verdicts.append((f"--max-time {a.budget:g} {load}: ends within 5 %", abs(dev) <= 0.05,
                         f"{b['seconds']:.2f} s ({dev:+.1%})"))
    print()
    for what, ok, value in verdicts:
        print(f"{'met   ' if ok else 'MISSED'} {what}: {value}")


if __name__ == "__main__":
    main()
