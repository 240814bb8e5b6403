"""Benchmark 6: training speed on the `spec` preset (embedding 32, LSTM 128, windows of 40) of
the torch engine, the NumPy reference engine (analytic BPTT), and the chapter's own method
(numerical gradients on 2 % of the weights), measured in one run.

    python benchmarks/engines.py [--steps 200] [--spec-steps 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from charwise.runs.bundled import corpus_path as bundled_corpus_path
from charwise.training import train


class SpecCharLSTM:
    """The chapter's class and update, verbatim in substance (forward, loss, numerical grads)."""

    def __init__(self, V, E, H, seed=0):
        rng = np.random.default_rng(seed)
        self.V, self.E, self.H = V, E, H
        self.embed = rng.normal(0, 0.1, (V, E))
        self.W = rng.normal(0, np.sqrt(1. / (E + H)), (4 * H, E + H))
        self.b = np.zeros(4 * H)
        self.b[H:2 * H] = 1.
        self.W_out = rng.normal(0, np.sqrt(1. / H), (V, H))
        self.b_out = np.zeros(V)

    def loss(self, ids):
        sig = lambda z: 1 / (1 + np.exp(-np.clip(z, -500, 500)))  # noqa: E731
        H = self.H
        h, c, total = np.zeros(H), np.zeros(H), 0.
        for tid, target in zip(ids[:-1], ids[1:]):
            g = self.W @ np.concatenate([self.embed[tid], h]) + self.b
            i, f, o, gg = sig(g[:H]), sig(g[H:2 * H]), sig(g[2 * H:3 * H]), np.tanh(g[3 * H:])
            c = f * c + i * gg
            h = o * np.tanh(c)
            z = self.W_out @ h + self.b_out
            z = z - z.max()
            p = np.exp(z) / np.exp(z).sum()
            total -= np.log(p[target] + 1e-10)
        return total / (len(ids) - 1)

    def numerical_step(self, seq, rng, lr=0.005, eps=1e-4):
        for P in (self.embed, self.W, self.b, self.W_out, self.b_out):
            flat = P.ravel()
            for idx in rng.choice(len(flat), max(1, len(flat) // 50), replace=False):
                flat[idx] += eps; lp = self.loss(seq)
                flat[idx] -= 2 * eps; lm = self.loss(seq)
                flat[idx] += eps
                flat[idx] -= lr * (lp - lm) / (2 * eps)


def engine_rate(engine: str, steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r"
        train(None, out=out, engine=engine, max_steps=steps, eval_every=0, precision="fp32",
              progress=False, log=lambda *a: None)
        rec = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        t = {r["step"]: r["t"] for r in rec if "t" in r}
        info = json.loads((out / "run.json").read_text())
    chars = info["train"]["batch_size"] * info["train"]["seq_len"]
    return (steps - 5) * chars / (t[steps] - t[5]), info["history"][-1]["val_loss"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--spec-steps", type=int, default=2)
    a = ap.parse_args()
    text = bundled_corpus_path().read_text()
    chars = sorted(set(text))
    data = np.array([chars.index(ch) for ch in text])
    spec = SpecCharLSTM(len(chars), 32, 128)
    rng = np.random.default_rng(42)
    t = time.perf_counter()
    for _ in range(a.spec_steps):
        start = rng.integers(0, len(data) - 41)
        spec.numerical_step(data[start:start + 41].tolist(), rng)
    spec_rate = a.spec_steps * 40 / (time.perf_counter() - t)
    torch_rate, torch_loss = engine_rate("torch", a.steps)
    numpy_rate, numpy_loss = engine_rate("numpy", a.steps)
    print(f"spec preset on the bundled corpus, {a.steps} steps of 8 x 40 characters")
    print(f"{'method':46s} {'train chars/s':>13s} {'vs spec':>9s}  loss after")
    print(f"{'chapter: numerical gradients, 2% of weights':46s} {spec_rate:13,.1f} {1:9.0f}x  "
          f"(~ln 38 = 3.64 after 200 steps, per the issue)")
    print(f"{'charwise NumPy engine (analytic BPTT, fp32)':46s} {numpy_rate:13,.0f} "
          f"{numpy_rate / spec_rate:9,.0f}x  {numpy_loss:.3f} nats")
    print(f"{'charwise torch engine (fp32)':46s} {torch_rate:13,.0f} {torch_rate / spec_rate:9,.0f}x  "
          f"{torch_loss:.3f} nats")
    print(f"torch / NumPy: {torch_rate / numpy_rate:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
