"""Beam search: the K most likely continuations of n symbols, with their log-probabilities.

The beams run as the rows of one batch through any step function `step(ids, state) -> (logits,
state)`. At each step every beam is extended by every symbol, and the K best sums of log-
probabilities (float64) survive; ties go to the lower beam, then the lower symbol id, so the
result is deterministic. Width 1 is greedy decoding exactly.

Beam search is a heuristic: a wider beam usually finds likelier texts, but it can lose the
greedy path and end below it. So when K > 1 the greedy path runs as one more row of the same
batch and takes part in the final ranking: the best result is never less likely than greedy's.
With an end-of-item symbol, a beam that draws it is finished: it keeps its score (extending it
costs nothing) and its text ends there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .loop import take_rows


@dataclass
class Beam:
    ids: np.ndarray           # the n symbols chosen (an ended beam: up to and including the end symbol)
    logprob: float            # natural log of the model's probability of those symbols
    greedy: bool = False      # this is the greedy path (kept because it beat a beam)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _expand(scores: np.ndarray, logp: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `width` best (parent, symbol) pairs of scores[:, None] + logp: parents, symbols, scores."""
    total = (scores[:, None] + logp).reshape(-1)
    order = np.argsort(-total, kind="stable")[:width]
    V = logp.shape[1]
    return order // V, order % V, total[order]


def _ended_rows(logp: np.ndarray, ended: np.ndarray, end_id: int | None) -> np.ndarray:
    """A finished beam's only continuation is the end symbol again, at no cost."""
    if end_id is None or not ended.any():
        return logp
    logp = logp.copy()
    logp[ended] = -np.inf
    logp[ended, end_id] = 0.0
    return logp


def _ban(logp: np.ndarray, banned: int | None) -> np.ndarray:
    """Log-probabilities with the symbol `banned` made impossible (the others' unchanged)."""
    if banned is not None:
        logp[:, banned] = -np.inf
    return logp


def beam_search(step: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]], logits: np.ndarray,
                state: Any, width: int, n: int, end_id: int | None = None,
                banned: int | None = None) -> list[Beam]:
    """The `width` likeliest continuations of n symbols after a primed (1, V) `logits` and its
    batch-1 `state`, best first. `banned`: a symbol never chosen (a byte model's end symbol
    outside line mode); the scores stay the model's log-probabilities. `width` is a checked
    SamplingParams.beam (1..MAX_BEAM)."""
    if n < 1:
        return [Beam(np.zeros(0, np.int64), 0.0)]
    lp0 = _ban(log_softmax(np.asarray(logits)[:1]), banned)          # (1, V)
    _, syms, scores = _expand(np.zeros(1), lp0, width)
    seqs = syms[:, None]
    with_greedy = width > 1
    g_sym = int(np.argmax(lp0[0]))
    g_ids, g_score = [g_sym], float(lp0[0, g_sym])
    rows = np.zeros(len(syms) + with_greedy, dtype=np.int64)
    state = take_rows(state, rows)
    cur = np.concatenate([syms, [g_sym]]) if with_greedy else syms
    for _ in range(n - 1):
        logits, state = step(cur, state)
        lp = _ban(log_softmax(logits), banned)
        k = len(seqs)
        ended = np.array([end_id is not None and end_id in s for s in seqs], dtype=bool)
        parents, syms, scores = _expand(scores, _ended_rows(lp[:k], ended, end_id), width)
        seqs = np.concatenate([seqs[parents], syms[:, None]], axis=1)
        order = parents
        if with_greedy:
            g_lp = _ended_rows(lp[k:], np.array([end_id in g_ids]), end_id)[0]
            g_sym = int(np.argmax(g_lp))
            g_ids.append(g_sym)
            g_score += float(g_lp[g_sym])
            order = np.concatenate([parents, [k]])
        state = take_rows(state, order)
        cur = np.concatenate([syms, [g_sym]]) if with_greedy else syms
    beams = [Beam(_cut(s, end_id), float(sc)) for s, sc in zip(seqs, scores)]
    if with_greedy:
        g = np.array(g_ids, dtype=np.int64)
        if not any(np.array_equal(_cut(g, end_id), b.ids) for b in beams) and (
                len(beams) < width or g_score > beams[-1].logprob):
            beams = sorted(beams + [Beam(_cut(g, end_id), g_score, greedy=True)],
                           key=lambda b: -b.logprob)[:width]
    return beams


def _cut(ids: np.ndarray, end_id: int | None) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if end_id is not None:
        hit = np.flatnonzero(ids == end_id)
        if len(hit):
            return ids[: hit[0] + 1]
    return ids
