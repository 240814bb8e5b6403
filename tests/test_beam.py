"""Beam search over a step function: exact on small problems, width 1 = greedy, never worse
than greedy, deterministic, and bad widths refused."""
import itertools

import numpy as np
import pytest
import torch

from charwise.errors import CharwiseError
from charwise.generation.beam import beam_search, log_softmax
from charwise.generation.params import check_beam
from charwise.generation.sampler import draw
from charwise.generation.steps import ModuleStep, NumpyLSTMStep
from charwise.model import CharRNN
from charwise.settings.options import MAX_BEAM
from charwise.settings.train import ModelConfig


class Markov:
    """A second-order toy model: logits depend on the last two symbols (kept in the state)."""

    def __init__(self, V=4, seed=0):
        self.table = np.random.default_rng(seed).normal(0, 2, (V, V, V))
        self.V = V

    def __call__(self, ids, state):
        prev = state[0][0, :, 0].astype(int)
        logits = self.table[prev, ids]
        return logits, (np.asarray(ids, float)[None, :, None],)

    def start(self, first=0):
        return self.table[0, first][None], (np.array([[[first]]], float),)

    def logprob(self, seq, first=0):
        lp, prev, cur = 0.0, 0, first
        for s in seq:
            lp += log_softmax(self.table[prev, cur])[s]
            prev, cur = cur, s
        return lp


def greedy(step, logits, state, n):
    out, lp = [], 0.0
    for i in range(n):
        p = log_softmax(logits)[0]
        j = int(np.argmax(p))
        out.append(j)
        lp += p[j]
        if i + 1 < n:
            logits, state = step(np.array([j]), state)
    return out, lp


def test_wide_beam_is_exhaustive_search():
    m = Markov(V=3, seed=1)
    n, K = 4, 5
    beams = beam_search(m, *m.start(), width=27, n=n)[:K]
    every = sorted(((m.logprob(s), s) for s in itertools.product(range(3), repeat=n)), reverse=True)[:K]
    assert [tuple(b.ids) for b in beams] == [s for _, s in every]
    for b, (lp, _) in zip(beams, every):
        assert b.logprob == pytest.approx(lp, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_width_one_is_greedy_and_wider_is_not_worse(seed):
    m = Markov(V=6, seed=seed)
    g_ids, g_lp = greedy(m, *m.start(), 12)
    b1 = beam_search(m, *m.start(), width=1, n=12)
    assert len(b1) == 1 and b1[0].ids.tolist() == g_ids and b1[0].logprob == pytest.approx(g_lp)
    for K in (2, 3, 8):
        beams = beam_search(m, *m.start(), width=K, n=12)
        assert len(beams) == K and beams[0].logprob >= g_lp - 1e-12
        assert [b.logprob for b in beams] == sorted((b.logprob for b in beams), reverse=True)
        for b in beams:                              # the scores are the model's log-probabilities
            assert b.logprob == pytest.approx(m.logprob(b.ids), abs=1e-9)
        assert len({tuple(b.ids) for b in beams}) == K


def test_greedy_path_kept_when_the_beam_loses_it():
    # Step 1: A(0) is likeliest; the beam of 2 keeps A and B(1). Step 2: after B two good options
    # push A's path out. Step 3: A's path is cheap, B's are all expensive.
    V = 3
    big = -30.0

    def step(ids, state):
        path = [tuple(map(int, r)) for r in state[0][0]]
        new = [p[1:] + (i,) for p, i in zip(path, ids)]
        out = np.full((len(ids), V), big)
        for r, p in enumerate(new):
            if p[-1] == 0 and p[-2] == -1:                       # after A
                out[r] = [np.log(0.4), np.log(0.3), np.log(0.3)]
            elif p[-2] == -1:                                    # after B or C
                out[r] = [np.log(0.5), np.log(0.5), big]
            elif p[-2] == 0:                                     # A then anything: certain
                out[r] = [0.0, big, big]
        return out, (np.array([new], float),)

    first = np.log(np.array([[0.5, 0.45, 0.05]]))
    state = (np.array([[[-1, -1]]], float),)
    g_ids, g_lp = greedy(step, first, state, 3)
    beams = beam_search(step, first, state, width=2, n=3)
    assert beams[0].logprob >= g_lp - 1e-12
    assert beams[0].greedy and beams[0].ids.tolist() == g_ids


def test_end_symbol_finishes_a_beam():
    m = Markov(V=4, seed=3)
    m.table[:, :, 3] += 3.0                          # symbol 3 (the end) is likely
    beams = beam_search(m, *m.start(), width=4, n=8, end_id=3)
    assert any(b.ids[-1] == 3 and len(b.ids) < 8 for b in beams)
    for b in beams:
        assert 3 not in b.ids[:-1]
        assert b.logprob == pytest.approx(m.logprob(b.ids), abs=1e-9)


@pytest.mark.parametrize("width", [0, -1, MAX_BEAM + 1, 2.5, True, "3"])
def test_bad_widths_refused(width):
    with pytest.raises(CharwiseError, match="--beam"):
        check_beam(width)


def test_beam_with_sampling_settings_refused():
    for kw in ({"temperature_given": True}, {"top_k": 5}, {"top_p": 0.9}):
        with pytest.raises(CharwiseError, match="does not sample"):
            check_beam(4, **kw)
    assert check_beam(MAX_BEAM) == MAX_BEAM


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_beam_on_a_model(cell):
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(cell=cell, embed_dim=8, hidden_size=16, vocab_size=12)).eval()
    step = NumpyLSTMStep(net) if cell == "lstm" else ModuleStep(net)
    with torch.inference_mode():
        logits, state = net(torch.tensor([[1, 2, 3]]), net.zero_state(1))
    logits = logits[:, -1].float().numpy()
    state = step.begin(state)
    g_ids, g_lp = greedy(step, logits, state, 20)
    assert [int(i) for i in g_ids[:5]] == [int(draw(logits, None, 0)[0])] + [int(i) for i in g_ids[1:5]]
    b1 = beam_search(step, logits, state, 1, 20)[0]
    assert b1.ids.tolist() == g_ids and b1.logprob == pytest.approx(g_lp, rel=1e-6)
    first = beam_search(step, logits, state, 8, 20)
    again = beam_search(step, logits, state, 8, 20)
    # never worse than greedy, up to float32 rounding (batch-8 and batch-1 products round apart)
    assert first[0].logprob >= g_lp - 1e-6 * abs(g_lp)
    assert [b.ids.tolist() for b in first] == [b.ids.tolist() for b in again]     # deterministic
