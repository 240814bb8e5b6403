"""How far reduced-precision sampling (precision="int8") moves the text from the exact fp32
step: the length of identical greedy text, and the loss of sampled text scored by the fp32
model. Used by tests/test_sample_int8.py and benchmarks/sampling.py.

The loss gap is measured two ways. Literally: draw samples with each precision (the same
seed), score both with the fp32 model, subtract the mean losses; at temperature 1 a character's
loss varies by ~1.5 nats, so this needs ~10^5 characters to resolve 0.005. And in expectation:
at every position of the reduced-precision samples, the loss the fp32 model expects of the
next character if it is drawn from the reduced step's distribution q rather than its own p,
sum over x of (q(x) - p(x)) * -log p(x); that has no draw noise, so a few thousand characters
resolve it.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import CharwiseError
from .charmodel import CharModel


def greedy_agreement(model: CharModel, prime: str, n: int, precision: str = "int8") -> int:
    """How many of n greedy characters after `prime` the `precision` step shares with fp32
    before the first difference (n when all are equal)."""
    exact = model.generate(prime, n, temperature=0)
    other = model.generate(prime, n, temperature=0, precision=precision)
    assert isinstance(exact, str) and isinstance(other, str)
    same = next((i for i, (a, b) in enumerate(zip(exact, other)) if a != b), min(len(exact), len(other)))
    return same - len(model.fit_prime(prime)[0])


def _draw(model: CharModel, prime: str, n: int, streams: int, seed: int, precision: str,
          threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(logits the sampler drew from (S, n, V), ids drawn (S, n)) at temperature 1."""
    logits, ids = [], []
    for lg, i in model.steps(prime, n, 1.0, seed=seed, num_samples=streams, precision=precision,
                             threads=threads):
        logits.append(np.asarray(lg, np.float64))
        ids.append(i)
    return np.stack(logits, 1), np.stack(ids, 1)


@torch.inference_mode()
def exact_log_probs(model: CharModel, prime: str, ids: np.ndarray) -> np.ndarray:
    """(S, n, V) fp32-model log-probabilities of each drawn character's position, given the
    prime and the sample's own earlier characters (one teacher-forced pass)."""
    p = model.vocab.encode(model.fit_prime(prime)[0])
    x = np.concatenate([np.broadcast_to(p, (len(ids), len(p))), ids[:, :-1]], axis=1)
    logits, _ = model.net(torch.as_tensor(x, dtype=torch.long))
    return torch.log_softmax(logits[:, len(p) - 1:].double(), -1).numpy()


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def sample_loss_gap(model: CharModel, prime: str, n: int = 500, streams: int = 16, seed: int = 0,
                    precision: str = "int8", threads: int | None = None) -> dict:
    """Loss (nats/char) of `streams` x n characters sampled at temperature 1 in fp32 and in
    `precision`, both scored by the fp32 model; their difference with its standard error;
    and the expected difference (module docstring)."""
    if not prime or model.line_mode:
        raise CharwiseError("the loss gap needs a non-empty prime and a plain character model")
    out: dict = {"chars": n * streams}
    for name in ("fp32", precision):
        drawn, ids = _draw(model, prime, n, streams, seed, name, threads)
        logp = exact_log_probs(model, prime, ids)
        nll = -np.take_along_axis(logp, ids[..., None], -1)[..., 0]
        out[name] = float(nll.mean())
        out[name + "_var"] = float(nll.var())
    out["gap"] = out[precision] - out["fp32"]
    out["stderr"] = float(np.sqrt((out["fp32_var"] + out[precision + "_var"]) / out["chars"]))
    # the last draw of `precision`: its own distribution q against the fp32 model's p
    q, p = np.exp(_log_softmax(drawn)), np.exp(logp)
    out["expected_gap"] = float(((q - p) * -logp).sum(-1).mean())
    return out
