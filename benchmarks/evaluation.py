"""Benchmark 4: evaluation and analysis speed.

Exact validation loss over tiny-shakespeare's last 10 % (111,539 chars, one stateful pass) for
LSTM 1x512 and 1x640 (the `small` preset's model), and per-character loss over the first 1 MB
(the analysis pass, with top-1 accuracy and the table) for 1x512, each in fp32 and in bf16
autocast. `charwise eval/analyze` and training use `--precision auto`: bf16 on a CPU with fast
bf16 from 256 units (this machine), fp32 elsewhere. Untrained weights unless --run is given.

    python benchmarks/evaluation.py [--run RUN_DIR]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from charwise.data.corpus import prepare_corpus
from charwise.inspect.analysis import char_table, position_losses
from charwise.model import CharRNN
from charwise.scoring import eval_precision, evaluate_tokens
from charwise.settings.train import ModelConfig

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a trained run on tiny-shakespeare to score instead of untrained models")
    a = ap.parse_args()
    corpus = prepare_corpus(CORPUS)
    _, val = corpus.split(0.1)
    if a.run:
        from charwise.api import load
        nets = {"run": load(a.run).net}
    else:
        nets = {}
        for H in (512, 640):
            torch.manual_seed(0)
            nets[f"1x{H}"] = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), embed_dim=64,
                                                  hidden_size=H)).eval()
    print(f"{torch.get_num_threads()} threads; precision auto here = "
          f"{eval_precision(next(iter(nets.values())))}")
    print(f"{'what':52s} {'fp32 s':>7s} {'bf16 s':>7s} {'speed-up':>8s} {'|loss diff|':>11s} {'target':>7s}")
    for name, net in nets.items():
        res = {p: timed(lambda p=p: evaluate_tokens(net, val, p)) for p in ("fp32", "bf16")}
        (r32, t32), (r16, t16) = res["fp32"], res["bf16"]
        print(f"{'exact val loss, %s, %d chars' % (name, r32['chars']):52s} {t32:7.2f} {t16:7.2f} "
              f"{t32 / t16:8.2f} {abs(r32['loss'] - r16['loss']):11.5f} {'< 5':>7s}")
    name, net = next(iter(nets.items()))
    mb = np.asarray(corpus.tokens[: 1_000_000])
    times, tables = {}, {}
    for p in ("fp32", "bf16"):
        def per_char(p=p):
            losses, correct = position_losses(net, mb, precision=p)
            return char_table(corpus.vocab, mb, losses, correct)
        tables[p], times[p] = timed(per_char)
    diff = abs(tables["fp32"].overall_nats - tables["bf16"].overall_nats)
    print(f"{'per-character loss + table, %s, 1,000,000 chars' % name:52s} {times['fp32']:7.2f} "
          f"{times['bf16']:7.2f} {times['fp32'] / times['bf16']:8.2f} {diff:11.5f} {'< 30':>7s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
