"""Benchmark 3: sampling speed. 1 layer, 512 units, vocabulary 65 (tiny-shakespeare's size).

Compares, in one process run, a naive loop that calls nn.LSTM one character at a time (softmax
and torch.multinomial per step: what most char-rnn code does) with charwise's sampler (fused
LSTM step, no autograd), for one stream and for 64 streams. Speed does not depend on the weights,
so the model is freshly initialised.

    python benchmarks/sampling.py [--chars 3000] [--hidden 512]
"""
from __future__ import annotations

import argparse
import time

import torch

from charwise.config import ModelConfig
from charwise.data import Vocab
from charwise.model import CharRNN
from charwise.sample import CharModel

TARGET_ONE, TARGET_64 = 10_000, 250_000


@torch.inference_mode()
def naive(net: CharRNN, n: int, streams: int) -> float:
    """chars/s of the textbook loop: module call per character, softmax, multinomial."""
    x = torch.zeros(streams, 1, dtype=torch.long)
    state = None
    t = time.perf_counter()
    for _ in range(n):
        emb = net.embed(x)
        out, state = net.rnn(emb, state)
        probs = torch.softmax(net.head(out[:, -1]), -1)
        x = torch.multinomial(probs, 1)
    return n * streams / (time.perf_counter() - t)


def ours(model: CharModel, n: int, streams: int, fast: bool = True) -> float:
    t = time.perf_counter()
    for _ in model.stream("", n, temperature=1.0, seed=0, num_samples=streams, fast=fast):
        pass
    return n * streams / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=3000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="best of N (the machine is noisy)")
    a = ap.parse_args()
    torch.manual_seed(0)
    vocab = Vocab(tuple(chr(32 + i) for i in range(65)))
    net = CharRNN(ModelConfig(vocab_size=65, embed_dim=64, hidden_size=a.hidden)).eval()
    model = CharModel(net, vocab)
    print(f"LSTM 1x{a.hidden}, vocabulary 65, torch threads {torch.get_num_threads()}, "
          f"best of {a.repeats}")
    print(f"{'streams':>8s} {'naive chars/s':>14s} {'charwise chars/s':>17s} {'ratio':>7s} {'target':>9s}")
    rows = []
    for streams, target in ((1, TARGET_ONE), (64, TARGET_64)):
        n = a.chars if streams == 1 else max(200, a.chars // 10)
        slow = max(naive(net, n, streams) for _ in range(a.repeats))
        fast = max(ours(model, n, streams) for _ in range(a.repeats))
        verdict = "met" if fast >= target else f"missed ({fast / target:.0%})"
        print(f"{streams:8d} {slow:14,.0f} {fast:17,.0f} {fast / slow:7.1f} {target:9,d} {verdict}")
        rows.append((streams, slow, fast))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
