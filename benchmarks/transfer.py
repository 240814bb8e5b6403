"""Benchmark: fine-tuning the bundled base model vs training from scratch, same wall-clock budget.

On texts the base never saw (slices of tiny-shakespeare: no Shakespeare in the base's books;
charwise's own Python source, code rather than prose; and any --prose FILE), each size gets the same budget
(60 s; 180 s from 1 MB): from scratch with the best preset for that size (both `spec` and `small`
are tried under 1 MB, the better counts; `small` from 1 MB, which it was tuned for) and
`--init-from base` (preset `finetune`). All runs of one text train side by side at the same time,
one thread each, so they see the same load on a shared machine. The score is the exact loss of
each run's best weights over the same held-out tail (the last 10 % of the text), in fp32.

    python benchmarks/transfer.py [--source base] [--sizes 20000 100000 1000000] [--code 100000]
                                  [--code-from DIR] [--prose FILE] [--budget 60] [--big-budget 180]
                                  [--json results.jsonl]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHAKESPEARE = REPO / "data" / "tinyshakespeare.txt"
CODE = REPO / "src" / "charwise"
VAL_FRACTION = 0.1
TARGET_SMALL, TARGET_BIG = 0.85, 1.0


def code_text(root: Path = CODE, limit: int | None = None) -> str:
    """The Python source under `root` (default charwise's own), files in sorted order, up to
    `limit` characters (not in the base's corpus: its books have no code)."""
    parts, n = [], 0
    for p in sorted(root.rglob("*.py")):
        parts.append(p.read_text(encoding="utf-8", errors="replace"))
        n += len(parts[-1]) + 2
        if limit is not None and n >= limit:
            break
    return "\n\n".join(parts)[:limit]


def tail(text: str) -> str:
    """The held-out tail exactly as `charwise train --val-fraction 0.1` splits it."""
    return text[len(text) - int(len(text) * VAL_FRACTION):]


def launch(corpus: Path, out: Path, budget: float, extra: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "charwise", "train", str(corpus), "--out", str(out),
           "--max-time", str(budget), "--val-fraction", str(VAL_FRACTION), "--threads", "1",
           "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def score(run: Path, held: str) -> dict:
    import torch

    from charwise.api import load
    torch.set_num_threads(1)
    model = load(run)
    info = json.loads((run / "run.json").read_text())
    res = model.evaluate(held, precision="fp32")
    return {"loss": res["loss"], "steps": info["step"], "seconds": info["train_seconds"],
            "vocab": len(info["vocab"])}


def run_case(name: str, text: str, budget: float, variants: dict[str, list[str]], tmp: Path) -> dict:
    corpus = tmp / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    procs = {}
    for label, extra in variants.items():
        out = tmp / f"{name}-{label}"
        procs[label] = (out, launch(corpus, out, budget, extra, tmp / f"{name}-{label}.log"))
    results = {}
    for label, (out, proc) in procs.items():
        if proc.wait() != 0:
            log = (tmp / f"{name}-{label}.log").read_text()
            raise SystemExit(f"{name} {label} failed:\n{log[-2000:]}")
    held = tail(text)
    for label, (out, _) in procs.items():
        results[label] = score(out, held)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="base", help="what to fine-tune from (default: base)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[20_000, 100_000, 1_000_000],
                    help="tiny-shakespeare slices (characters from the start)")
    ap.add_argument("--code", type=int, default=100_000,
                    help="characters of charwise's own source as a fourth text (0: skip)")
    ap.add_argument("--code-from", type=Path, default=CODE,
                    help="the source tree --code reads (default: src/charwise; a bigger one, e.g. an "
                    "installed package's, gives a text of several MB)")
    ap.add_argument("--prose", type=Path, action="append", default=[],
                    help="a text file (e.g. several MB of prose base never saw) as one more text; "
                    "may be given more than once")
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--big-budget", type=float, default=180.0, help="budget from 1 MB up")
    ap.add_argument("--scratch", nargs="+", default=["small", "spec"],
                    help="from-scratch presets to try under 1 MB, the best counts (default: small spec)")
    ap.add_argument("--json", help="append the results as JSON lines to this file")
    ap.add_argument("--keep", help="keep the runs in this directory (default: a temporary one)")
    a = ap.parse_args()

    shk = SHAKESPEARE.read_text(encoding="utf-8")
    cases = [(f"shakespeare-{n // 1000}k", shk[:n]) for n in a.sizes]
    if a.code:
        name = "charwise" if a.code_from == CODE else a.code_from.name
        cases.append((f"{name}-code-{a.code // 1000}k", code_text(a.code_from, a.code)))
    for p in a.prose:
        text = p.read_text(encoding="utf-8")
        cases.append((f"{p.stem}-{len(text) // 1000}k", text))
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(a.keep) if a.keep else Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        for name, text in cases:
            big = len(text) >= 1_000_000
            budget = a.big_budget if big else a.budget
            presets = ["small"] if big else a.scratch
            variants = {f"scratch-{p}": ["--preset", p] for p in presets}
            variants["finetune"] = ["--init-from", a.source]
            t0 = time.perf_counter()
            res = run_case(name, text, budget, variants, tmp)
            scratch = min((k for k in res if k.startswith("scratch")), key=lambda k: res[k]["loss"])
            row = {"text": name, "chars": len(text), "budget_s": budget,
                   "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "scratch_preset":
                   scratch.split("-", 1)[1], "scratch": res[scratch], "finetune": res["finetune"],
                   "all": res, "ratio": res["finetune"]["loss"] / res[scratch]["loss"],
                   "target": TARGET_BIG if big else TARGET_SMALL,
                   "wall_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(f"{name}: " + ", ".join(f"{k} {v['loss']:.4f} ({v['steps']} steps)"
                                           for k, v in res.items()), file=sys.stderr, flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    from charwise.runs import bundled
    src = bundled.resolve(a.source)
    sha = bundled.verify(src) if bundled.is_bundled(a.source) else bundled.sha256_file(src / "model.safetensors")
    print(f"\nSOURCE {a.source}: weights sha256 {sha[:16]}...")
    print(f"fine-tuning --init-from {a.source} vs from scratch, same wall-clock budget; exact "
          f"loss (nats/char, fp32) of the best weights on the last {VAL_FRACTION:.0%} of each text\n")
    print("| text (sha256 of its UTF-8) | chars | budget | from scratch (preset, steps) | fine-tuned (steps) "
          "| ratio | target | met |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        s, f = r["scratch"], r["finetune"]
        print(f"| {r['text']} ({r['sha256'][:12]}) | {r['chars']:,} | {r['budget_s']:.0f} s | {s['loss']:.4f} "
              f"({r['scratch_preset']}, {s['steps']} steps) | {f['loss']:.4f} ({f['steps']} steps) | "
              f"{r['ratio']:.3f} | <= {r['target']:.2f} | {'yes' if r['ratio'] <= r['target'] else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
