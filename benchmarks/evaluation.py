"""Benchmark 4: evaluation and analysis speed, LSTM 1x512 (the `small` preset's model).

Exact validation loss over tiny-shakespeare's last 10 % (111,539 chars, one stateful pass) and
per-character loss over the first 1 MB (the analysis pass, with top-1 accuracy and the table).

    python benchmarks/evaluation.py
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from charwise.analysis import char_table, position_losses
from charwise.config import ModelConfig
from charwise.data import prepare_corpus
from charwise.model import CharLSTM
from charwise.train import evaluate_tokens

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def main() -> int:
    corpus = prepare_corpus(CORPUS)
    _, val = corpus.split(0.1)
    torch.manual_seed(0)
    net = CharLSTM(ModelConfig(vocab_size=len(corpus.vocab), embed_dim=64, hidden_size=512)).eval()
    t = time.perf_counter()
    res = evaluate_tokens(net, val)
    t_eval = time.perf_counter() - t
    mb = np.asarray(corpus.tokens[: 1_000_000])
    t = time.perf_counter()
    losses, correct = position_losses(net, mb)
    char_table(corpus.vocab, mb, losses, correct)
    t_char = time.perf_counter() - t
    print(f"LSTM 1x512, {torch.get_num_threads()} threads")
    print(f"{'what':44s} {'seconds':>8s} {'target':>7s}")
    print(f"{'exact val loss, %d chars' % res['chars']:44s} {t_eval:8.2f} {'< 5':>7s} "
          f"{'met' if t_eval < 5 else 'missed'}")
    print(f"{'per-character loss + table, 1,000,000 chars':44s} {t_char:8.2f} {'< 30':>7s} "
          f"{'met' if t_char < 30 else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
