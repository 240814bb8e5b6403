"""Check the analytic BPTT gradients against central finite differences (float64).

For one scalar entry p of any parameter array (or of the initial state), the spec's formula

    dL/dp  ~  (L(p + eps) - L(p - eps)) / (2 eps)

has error O(eps^2) from truncation plus about (machine eps * |L|) / eps from rounding, which
for eps = 1e-5 in float64 is ~1e-11 absolute. The relative error of an entry is

    |analytic - numeric| / max(|analytic| + |numeric|, FLOOR)

FLOOR keeps gradients that are (nearly) zero, where only the ~1e-11 rounding noise is left, from
producing huge ratios; with FLOOR = 1e-4 such an entry passes while its absolute error is below
1e-10, which still exposes any real bug (a wrong formula is off by far more). An array passes
when its largest relative error is below TOL = 1e-6.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .engine import CharLSTM

TOL = 1e-6
FLOOR = 1e-4


class Row(NamedTuple):
    name: str
    shape: tuple
    n_checked: int
    max_abs_err: float
    max_rel_err: float


def _as_float64(model: CharLSTM) -> CharLSTM:
    """The model itself if it is float64, else a float64 copy (float32 differences are noise)."""
    if model.dtype == np.float64:
        return model
    copy = CharLSTM(model.cfg, dtype=np.float64)
    copy.load_state_dict(model.params)
    return copy


def gradcheck(model: CharLSTM, x, y, state=None, eps: float = 1e-5,
              max_entries: int | None = None, seed: int = 0) -> list[Row]:
    """Compare analytic and numeric gradients of model.loss(x, y, state).

    Checks every entry of every parameter array and of each initial-state array (rows named
    'state.h' / 'state.c'), or a random sample of `max_entries` entries per array.
    The model's parameters are restored exactly after each perturbation."""
    model = _as_float64(model)
    x, y = np.asarray(x), np.asarray(y)
    state = model.zero_state(x.shape[0]) if state is None else state
    state = [np.array(s, dtype=np.float64) for s in state]          # private, perturbable copies
    logits, _, cache = model.forward(x, tuple(state))
    grads, dstate = model.backward(cache, y)
    rng = np.random.default_rng(seed)

    targets = [(name, model.params[name], grads[name]) for name in model.params]
    targets += [(f"state.{'hc'[j]}", state[j], dstate[j]) for j in range(len(state))]
    rows = []
    for name, arr, analytic in targets:
        flat = arr.reshape(-1)                                       # a view: edits reach arr
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = rng.choice(flat.size, max_entries, replace=False)
        abs_errs, rel_errs = [], []
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            lp = model.loss(x, y, tuple(state))                      # L(p + eps)
            flat[i] = old - eps
            lm = model.loss(x, y, tuple(state))                      # L(p - eps)
            flat[i] = old                                            # restore exactly
            numeric = (lp - lm) / (2 * eps)
            a = analytic.reshape(-1)[i]
            err = abs(a - numeric)
            abs_errs.append(err)
            rel_errs.append(err / max(abs(a) + abs(numeric), FLOOR))
        rows.append(Row(name, tuple(arr.shape), len(idx),
                        float(max(abs_errs, default=0.0)), float(max(rel_errs, default=0.0))))
    return rows


def passed(rows: list[Row], tol: float = TOL) -> bool:
    return all(r.max_rel_err < tol for r in rows)


def format_table(rows: list[Row], tol: float = TOL) -> str:
    """A fixed-width table, one line per array, ending with an overall PASS / FAIL line."""
    head = f"{'array':<20} {'shape':<14} {'checked':>8} {'max abs err':>12} {'max rel err':>12}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        ok = "yes" if r.max_rel_err < tol else "NO"
        lines.append(f"{r.name:<20} {str(r.shape):<14} {r.n_checked:>8} "
                     f"{r.max_abs_err:>12.2e} {r.max_rel_err:>12.2e}  {ok}")
    verdict = "PASS" if passed(rows, tol) else "FAIL"
    lines.append(f"{verdict}: relative error {'<' if verdict == 'PASS' else '>='} {tol:g} "
                 f"(central differences, float64)")
    return "\n".join(lines)


def run_gradcheck(cell: str = "lstm", layers: int = 1, V: int = 7, E: int = 5, H: int = 6,
                  B: int = 2, T: int = 4, seed: int = 0, eps: float = 1e-5,
                  max_entries: int | None = None) -> list[Row]:
    """Gradient-check a fresh random model on random data (what `charwise gradcheck` runs).

    Biases and the initial state are made nonzero so that every term of the backward pass is
    exercised (at init the biases are zero and the state usually starts at zero)."""
    model = CharLSTM(cell=cell, layers=layers, vocab_size=V, embed_dim=E, hidden_size=H,
                     dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, p in model.params.items():
        if p.ndim == 1:
            p += rng.normal(0.0, 0.5, p.shape)
    x = rng.integers(0, V, (B, T))
    y = rng.integers(0, V, (B, T))
    state = tuple(rng.normal(0.0, 0.5, s.shape) for s in model.zero_state(B))
    return gradcheck(model, x, y, state, eps=eps, max_entries=max_entries, seed=seed)
