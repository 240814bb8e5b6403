"""Benchmark 2: training throughput of `charwise.train` vs a minimal hand-written TBPTT loop of
the same model, batch, window and precision, measured side by side in one process run; and
model-FLOP utilisation against the matmul peak this benchmark measures itself (fp32 and bf16).

    python benchmarks/throughput.py [--hidden 512] [--batch 64] [--seq 128] [--steps 40]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charwise.data.corpus import prepare_corpus
from charwise.model import CharRNN, detach_state
from charwise.scoring import autocast
from charwise.settings.train import ModelConfig
from charwise.training import train
from charwise.training.batches import StreamBatches

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a large square matmul on this machine: the ceiling for MFU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def model_flops_per_char(H: int, E: int, V: int, layers: int) -> float:
    """Training FLOPs per character (forward + backward = 3x forward matmul FLOPs)."""
    fwd = 2 * (4 * H * (E + H) + 4 * H * (H + H) * (layers - 1) + H * V)
    return 3 * fwd


def minimal_loop(tokens, V, H, E, B, T, steps, precision, lr=4e-3) -> float:
    """The shortest correct TBPTT loop: same model, batches and precision; chars/s."""
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(vocab_size=V, embed_dim=E, hidden_size=H))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99), fused=True)
    batches = StreamBatches(tokens, B, T, seed=0)
    state = net.zero_state(B)
    dev = torch.device("cpu")
    t = None
    for step in range(steps + 3):
        if step == 3:
            t = time.perf_counter()                       # after warm-up, as train() is timed below
        x, y = (torch.from_numpy(a) for a in batches.window(step % batches.windows_per_epoch))
        with autocast(dev, precision):
            logits, new = net(x, state)
            loss = F.cross_entropy(logits.reshape(-1, V).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        state = detach_state(new)
        loss.item()
    return steps * B * T / (time.perf_counter() - t)


def charwise_loop(corpus, H, E, B, T, steps, precision, warm=3) -> float:
    """chars/s of charwise.train over the same steps, from the per-step times it logs
    (steps warm..warm+steps: startup and the final evaluation are not counted, as above)."""
    import json
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        train(corpus, out=out, preset="small", hidden_size=H, embed_dim=E, batch_size=B,
              seq_len=T, max_steps=warm + steps, eval_every=0, val_fraction=0.05,
              precision=precision, progress=None, log=lambda *a: None, warmup_steps=0)
        t = {r["step"]: r["t"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "t" in r}
    return steps * B * T / (t[warm + steps] - t[warm])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--corpus", default=str(CORPUS))
    a = ap.parse_args()
    corpus = prepare_corpus(a.corpus)
    tokens, V = np.asarray(corpus.tokens), len(corpus.vocab)
    # alternate the two, twice each, and keep each one's best: noise hits both alike
    ours, mini = [], []
    for _ in range(2):
        mini.append(minimal_loop(tokens, V, a.hidden, a.embed, a.batch, a.seq, a.steps, a.precision))
        ours.append(charwise_loop(a.corpus, a.hidden, a.embed, a.batch, a.seq, a.steps, a.precision))
    o, m = max(ours), max(mini)
    flops = model_flops_per_char(a.hidden, a.embed, V, 1)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"LSTM 1x{a.hidden}, B={a.batch}, T={a.seq}, {a.precision}, {torch.get_num_threads()} threads")
    print(f"{'loop':28s} {'chars/s':>10s}")
    print(f"{'minimal hand-written loop':28s} {m:10,.0f}")
    print(f"{'charwise.train':28s} {o:10,.0f}")
    print(f"ratio charwise / minimal: {o / m:.3f} (target >= 1.0: {'met' if o >= m else 'missed'})")
    for name, p in peak.items():
        print(f"matmul peak {name} (2048x2048 matmul, measured now): {p / 1e9:7.1f} GFLOP/s")
    print(f"model FLOP utilisation of charwise.train against the {a.precision} peak: "
          f"{o * flops / peak[a.precision]:.1%} ({o * flops / 1e9:.0f} GFLOP/s of model maths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
