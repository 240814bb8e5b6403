"""Benchmark 1: quality at a wall-clock budget on tiny-shakespeare.

Trains `charwise train CORPUS --max-time BUDGET` (our default recipe for a corpus of this size,
or the overrides given) and prints the exact validation loss over the last 10 % of the text,
next to the anchors measured on this machine kind. The budget includes evaluation.

    python benchmarks/quality.py [--budget 180] [--seeds 1337 1 2] [--preset small] [--set lr=5e-3 ...]
    python benchmarks/quality.py --budget 60 --target 1.47    # issue 18's time to nanoGPT-A100 quality
    python benchmarks/quality.py --compare --budget 180 --widths 256 320 448 640
    python benchmarks/quality.py --compare --corpus novel.txt --widths 448 --no-plain
    python benchmarks/quality.py --cells transformer lstm --budget 180 --seeds 1337

--cells runs each architecture from scratch in one sitting, one after another: `--cell
transformer` (preset auto gives it the transformer recipe) and the recurrent cells with
`--preset scratch` (auto's width for this machine), with `--set` overrides for the transformer
(the recipe search). Each row: held-out loss, steps, chars/s and MFU, the model FLOPs of the
characters trained per second (6 x the weights each character multiplies, plus attention's
12 x blocks x window x width for a transformer: nanoGPT's estimate) over the fp32 matmul rate
this machine reaches in torch, measured in the same sitting (`peak_flops`).

--compare runs, in one sitting, one after another: the default command (`--preset auto`, which
fine-tunes base on this text), auto from scratch (`--preset scratch`: the width sized to this
machine), each width of the search from scratch (the small recipe at that width, lr from
recipe.lr_for), and a plain PyTorch LSTM loop (Adam 3e-3, batch 64, window 64, cosine to 10 %;
`--plain-hidden`); it prints each one's held-out loss and the two comparisons of the recipe's
"done when": the default within 0.02 of the best of the search, and 0.10 below the plain loop.

Each seed is one run of the whole protocol, one after another (never side by side: each run has
the machine to itself, as a user's run would).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "data" / "tinyshakespeare.txt"
ANCHORS = [  # (what, nats/char, seconds) measured on this 2-core machine kind (issue 5)
    ("nanoGPT CPU recipe", 1.886, 79), ("nanoGPT CPU recipe, 173 s", 1.71, 173),
    ("plain PyTorch 1x512 LSTM, bf16", 1.48, 180), ("plain PyTorch 1x640 LSTM, bf16", 1.45, 180),
    ("nanoGPT GPU recipe (A100)", 1.4697, 180)]
TARGET, STRETCH = 1.38, 1.36          # issue 18, at 180 s


def parse_value(v: str):
    if v in ("true", "false"):
        return v == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def fp32_val_loss(run: Path, corpus: str, info: dict) -> float:
    """The run's last weights over the last val_fraction of the text, in fp32, encoded with the
    run's own vocabulary (a fine-tuned run's is base's merged with the text's)."""
    from charwise.api import load
    from charwise.data.corpus import read_text
    from charwise.scoring import evaluate_tokens
    text = read_text(corpus)
    model = load(run, which="last")
    n_val = int(len(text) * info["train"]["val_fraction"])
    return evaluate_tokens(model.net, model.vocab.encode(text[len(text) - n_val:]), "fp32")["loss"]


def one_run(a, seed: int, overrides: dict) -> dict:
    from charwise.cells import shape_text
    from charwise.training import train
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(a.keep) / f"seed{seed}" if a.keep else Path(tmp) / "run"
        t = time.perf_counter()
        res = train(a.corpus, out=run, preset=a.preset, max_time=a.budget, force=bool(a.keep),
                    log=lambda *x: print(*x, file=sys.stderr), seed=seed, **overrides)
        wall = time.perf_counter() - t
        info = json.loads((run / "run.json").read_text())
        # The run scores itself in its training precision; the same final weights in fp32,
        # outside the budget, show how much that arithmetic moves the number.
        fp32 = fp32_val_loss(run, a.corpus, info)
    final = res.history[-1]
    return {"preset": a.preset, "seed": seed, "overrides": overrides, "budget": a.budget,
            "steps": res.steps, "train_seconds": res.train_seconds, "wall_seconds": round(wall, 1),
            "final_val_loss": round(final["val_loss"], 4), "best_val_loss": round(res.best_val_loss, 4),
            "final_val_loss_fp32": round(fp32, 4),
            "chars_per_s": round(res.steps * info["train"]["batch_size"] * info["train"]["seq_len"]
                                 / res.train_seconds), "precision": info["precision"],
            "hidden_size": info["model"]["hidden_size"], "flops_per_char": flops_per_char(info),
            "shape": shape_text(info["model"]),
            "auto": {k: info["auto"][k] for k in ("kind", "hidden_size", "lr", "expected_steps")}
            if "auto" in info else None}


def peak_flops(seconds: float = 3.0) -> float:
    """The fp32 matmul rate torch reaches here with its default threads (2048^3 products)."""
    import torch
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        n += 1
    return n * 2 * 2048 ** 3 / (time.perf_counter() - t)


def flops_per_char(info: dict) -> float:
    """Training FLOPs per character: 6 x the weights a character multiplies (the embedding is
    a lookup, so not those; a tied head's matrix, counted once as the embedding, multiplies), plus
    a transformer's attention, 12 x blocks x window x width."""
    from charwise import bounds
    from charwise.settings.options import build
    from charwise.settings.train import ModelConfig
    cfg = build(ModelConfig, info["model"])
    n = bounds.parameter_count(cfg) - (0 if cfg.tie_weights else cfg.vocab_size * cfg.embed_dim)
    if cfg.cell == "transformer":
        n -= cfg.context * cfg.embed_dim if cfg.positions == "learned" else 0
        return 6 * n + 12 * cfg.layers * info["train"]["seq_len"] * cfg.embed_dim
    return 6 * n


def cells(a) -> int:
    """--cells: architectures from scratch side by side (see the module docstring)."""
    from charwise import hardware
    peak = peak_flops()
    print(f"# CPU: {cpu_model()} ({hardware.cpu_class()}), budget {a.budget:g} s, seed {a.seeds[0]}, "
          f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')}, threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'auto')}, fp32 matmul peak {peak / 1e9:.1f} GFLOP/s",
          flush=True)
    sets = {k: parse_value(v) for k, v in (s.split("=", 1) for s in a.set)}
    for cell in a.cells:
        attention = cell == "transformer"
        a.preset = "auto" if attention else "scratch"
        # the LSTM as preset scratch trains it (the width sized to this machine: a --cell flag
        # would fix the shape, so it is left out); GRU and RNN at the small recipe's shape
        overrides = {"cell": cell, **sets} if attention else {} if cell == "lstm" else {"cell": cell}
        row = one_run(a, a.seeds[0], overrides)
        mfu = row["chars_per_s"] * row["flops_per_char"] / peak
        label = f"{cell} ({row['shape']})" + (f" {sets}" if attention and sets else "")
        report({"what": label, **row, "mfu": round(mfu, 4), "peak_flops": round(peak)}, a)
        print(f"{'':42s} MFU {mfu:.1%} ({row['flops_per_char'] / 1e6:.1f} MFLOP/char)", flush=True)
    return 0


def plain_loop(corpus: str, budget: float, hidden: int, seed: int) -> dict:
    """The baseline a user writes in an afternoon: embedding 128, one nn.LSTM, Adam 3e-3, random
    windows of 64 in batches of 64, cosine to 10 %, trained for 90 % of the budget, then the
    exact loss over the last 10 % of the text (one stateful pass, fp32)."""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as F

    from charwise.data.corpus import prepare_corpus
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        train_tok, val = prepare_corpus(corpus, cache_dir=tmp).split(0.1)
        train_tok, val = np.asarray(train_tok, np.int64), np.asarray(val, np.int64)
    V = int(max(train_tok.max(), val.max())) + 1
    emb, lstm, head = torch.nn.Embedding(V, 128), torch.nn.LSTM(128, hidden, batch_first=True), \
        torch.nn.Linear(hidden, V)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    rng, B, T = np.random.default_rng(seed), 64, 64
    t0, steps, horizon = time.perf_counter(), 0, 0.9 * budget
    while (now := time.perf_counter() - t0) < horizon:
        for g in opt.param_groups:                      # cosine over the time budget, to 10 %
            g["lr"] = 3e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * now / horizon)))
        starts = rng.integers(0, len(train_tok) - T - 1, B)
        xy = torch.from_numpy(np.stack([train_tok[s:s + T + 1] for s in starts]))
        out, _ = lstm(emb(xy[:, :-1]))
        loss = F.cross_entropy(head(out).reshape(-1, V), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    with torch.no_grad():                               # exact: every position, state carried
        total, state, x = 0.0, None, torch.from_numpy(val).view(1, -1)
        for i in range(0, x.shape[1] - 1, 4096):
            out, state = lstm(emb(x[:, i:i + 4096][:, : x.shape[1] - 1 - i]), state)
            y = x[:, i + 1:i + 4097]
            total += F.cross_entropy(head(out).reshape(-1, V), y.reshape(-1), reduction="sum").item()
    return {"what": f"plain torch loop 1x{hidden}", "steps": steps,
            "final_val_loss": round(total / (x.shape[1] - 1), 4),
            "chars_per_s": round(steps * B * T / horizon), "wall_seconds": round(time.perf_counter() - t0, 1)}


def compare(a) -> int:
    """--compare: the default command, auto from scratch, the width search and the plain loop."""
    import platform

    from charwise import hardware, recipe
    seed = a.seeds[0]
    print(f"# CPU: {cpu_model()} ({hardware.cpu_class()}), {platform.machine()}, budget {a.budget:g} s, "
          f"seed {seed}, ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')}, "
          f"threads {os.environ.get('OMP_NUM_THREADS', 'auto')}", flush=True)
    runs = [("default command (preset auto)", "auto", {}), ("auto from scratch (preset scratch)", "scratch", {})]
    runs += [(f"scratch 1x{w}, lr {recipe.lr_for(w):g}", "small", {"hidden_size": w, "lr": recipe.lr_for(w)})
             for w in a.widths]
    rows = []
    for what, preset, overrides in runs:
        a.preset = preset
        row = {"what": what, **one_run(a, seed, overrides)}
        rows.append(row)
        report(row, a)
    default, scratch = rows[0]["final_val_loss"], min(r["final_val_loss"] for r in rows[1:])
    line = (f"\ndefault {default:.4f}; best from scratch (auto's width and the search) {scratch:.4f} "
            f"(default - best = {default - scratch:+.4f}, goal <= +0.02)")
    if a.widths:
        search = min(r["final_val_loss"] for r in rows[2:])
        line += f"; best of the width search {search:.4f} ({default - search:+.4f})"
    if not a.no_plain:
        plain = {"budget": a.budget, "seed": seed, **plain_loop(a.corpus, a.budget, a.plain_hidden, seed)}
        report(plain, a)
        line += (f"; plain loop {plain['final_val_loss']:.4f} (plain - default = "
                 f"{plain['final_val_loss'] - default:+.4f}, goal >= +0.10)")
    print(line)
    return 0


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def report(row: dict, a) -> None:
    extra = f", {row['auto']}" if row.get("auto") else ""
    print(f"{row['what']:42s} {row['final_val_loss']:.4f}  {row['steps']:>6} steps  "
          f"{row['chars_per_s']:>7,} chars/s  wall {row['wall_seconds']:.1f} s{extra}", flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=180.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2],
                    help="one run per seed, one after another (default: 1337 1 2)")
    ap.add_argument("--target", type=float, default=None,
                    help=f"the loss to reach (default: {TARGET} at 180 s, stretch {STRETCH})")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--set", nargs="*", default=[], help="overrides as name=value")
    ap.add_argument("--json", help="append the results as JSON lines to this file")
    ap.add_argument("--keep", help="keep the runs in this directory (default: temporary ones)")
    ap.add_argument("--compare", action="store_true", help="default vs width search vs plain loop")
    ap.add_argument("--widths", type=int, nargs="*", default=[256, 320, 448, 640])
    ap.add_argument("--plain-hidden", type=int, default=512)
    ap.add_argument("--no-plain", action="store_true", help="--compare without the plain loop")
    ap.add_argument("--cells", nargs="+", help="architectures side by side (transformer, lstm, gru, rnn)")
    a = ap.parse_args()
    if a.compare:
        return compare(a)
    if a.cells:
        return cells(a)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in a.set)}
    target = TARGET if a.target is None else a.target
    rows = []
    for seed in a.seeds:
        row = one_run(a, seed, overrides)
        rows.append(row)
        print(f"seed {seed}: final exact val loss {row['final_val_loss']:.4f} nats/char (best "
              f"{row['best_val_loss']:.4f}; fp32 after the budget {row['final_val_loss_fp32']:.4f}), "
              f"{row['steps']} steps, {row['chars_per_s']:,} chars/s, train() {row['train_seconds']:.1f} s "
              f"(evaluation included, {row['precision']}), wall {row['wall_seconds']:.1f} s", flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n{'anchor':40s} {'nats':>7s} " + " ".join(f"{'seed ' + str(r['seed']):>10s}" for r in rows))
    for name, nats, secs in ANCHORS:
        print(f"{name + f' ({secs} s)':40s} {nats:7.3f} "
              + " ".join(f"{r['final_val_loss'] / nats:10.3f}" for r in rows))
    for r in rows:
        gap = r["final_val_loss"] - target
        verdict = "met" if gap <= 0 else f"missed by {gap:.3f}"
        extra = "" if a.target is not None else \
            f"; stretch <= {STRETCH}: {'met' if r['final_val_loss'] <= STRETCH else 'missed'}"
        print(f"seed {r['seed']}: {r['final_val_loss']:.4f} at {a.budget:.0f} s, target <= {target}: {verdict}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
