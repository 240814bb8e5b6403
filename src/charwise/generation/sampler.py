"""Drawing symbols from logits: temperature, top-k and top-p, then one draw per sample.

The draws use float64 probabilities and inverse CDF with one uniform number per symbol from a
seeded NumPy generator, so a seed fixes the text whichever step function computed the logits
(generation/steps.py). This is where a temperature is applied to logits, for every sampling
path (`charwise sample`, the API, serve; the web page's JavaScript does the same arithmetic).
"""
from __future__ import annotations

import numpy as np

from ..settings.options import GREEDY_BELOW
from .params import SamplingParams


def filter_probs(logits: np.ndarray, temperature: float, top_k: int | None = None,
                 top_p: float | None = None) -> np.ndarray:
    """(S, V) logits -> (S, V) float64 probabilities after temperature, top-k and top-p; a
    temperature below GREEDY_BELOW is greedy: all the probability on the likeliest."""
    if temperature < GREEDY_BELOW:
        p = np.zeros(logits.shape, dtype=np.float64)
        p[np.arange(len(p)), logits.argmax(axis=1)] = 1.0
        return p
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        # keep the smallest prefix whose mass reaches top_p (the first char always stays)
        keep_sorted = np.cumsum(sorted_p, axis=1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p


def draw(logits: np.ndarray, rng: np.random.Generator, temperature: float,
         top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """One id per row of (S, V) logits. A temperature below GREEDY_BELOW (0 too) is greedy."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(axis=1)
    p = filter_probs(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(len(p))[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)


class Sampler:
    """The draws of one sampling run: `params` applied to each (S, V) logits, one generator
    seeded with params.seed for the whole run. `banned`: a symbol never drawn (a byte model's
    end symbol outside line mode); its logit is set to -inf in place, so the caller's logits
    show what was drawn from."""

    def __init__(self, params: SamplingParams, banned: int | None = None):
        self.params = params
        self.banned = banned
        self.rng = np.random.default_rng(params.seed)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        if self.banned is not None:
            logits[:, self.banned] = -np.inf
        return logits

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """(S, V) probabilities the next draw uses (filter_probs)."""
        p = self.params
        return filter_probs(self.mask(logits), p.effective_temperature, p.top_k, p.top_p)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """(S,) ids drawn from (S, V) logits."""
        p = self.params
        return draw(self.mask(logits), self.rng, p.effective_temperature, p.top_k, p.top_p)
