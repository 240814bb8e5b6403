"""What a trained model learned, as numbers: which text to analyse, per-character loss,
samples at several temperatures, their novelty against the training text, and the plateau.

This module and neurons.py (hidden states, selective units) compute; plots.py draws and
report.py writes the pages. The per-character loss is ONE stateful pass over the text
(`evaluate.token_losses`), so every position is predicted from its full left context in O(n); the
chapter instead re-runs a 21-character window for each position, O(21 n), and forgets
everything before the window. Aggregation is np.bincount.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.corpus import prepare_corpus, read_text
from ..data.vocab import AnyVocab, Vocab
from ..errors import CharwiseError
from ..runs import transfer
from ..runs.rundir import CACHE
from ..scoring import LN2, token_losses

SPEC_SENTENCE = "Mr Bennet replied that he had not."      # the chapter's heatmap sentence
SPEC_PRIME = "Mr Bennet"                                    # the chapter's sampling prime
VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}   # ␣ ↵ ⇥ ␍


def visible(ch: str) -> str:
    """A label a reader can see: space/newline/tab as symbols, other control characters escaped."""
    if ch in VISIBLE:
        return VISIBLE[ch]
    return ch if ch.isprintable() else repr(ch)[1:-1]


# ----------------------------------------------------------------------------- which text

@dataclass
class Text:
    ids: np.ndarray                 # (n,) int64
    source: str                     # what was analysed, for titles and the report
    note: str = ""                  # fallbacks and skipped characters, said out loud
    skipped: int = 0


def run_corpus(run_dir, info: dict):
    """The run's corpus, re-read (from the run's token cache when the file is unchanged)."""
    src = info["corpus"]["source"]
    cache = Path(run_dir) / CACHE
    try:
        corpus = prepare_corpus(src, cache_dir=cache if cache.is_dir() else None,
                                encoding=info["train"].get("encoding", "utf-8"))
    except CharwiseError as e:
        raise CharwiseError(f"cannot re-read the run's corpus ({e}); pass a TEXTFILE") from None
    if corpus.sha256 != info["corpus"].get("sha256"):
        raise CharwiseError(f"{src}: changed since the run was trained; pass a TEXTFILE")
    # a run started --init-from trained on its text encoded in the merged vocabulary
    return transfer.in_vocab(corpus, Vocab(tuple(info["vocab"])))


def run_split(run_dir, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """(training ids, validation ids) exactly as the run split them."""
    return run_corpus(run_dir, info).split(float(info["train"].get("val_fraction", 0.0)))


def analysis_text(run_dir, info: dict, vocab: AnyVocab, textfile=None, oov: str = "error",
                  encoding: str = "utf-8") -> Text:
    """TEXTFILE if given, else the run's validation split, else (the spec preset has
    val_fraction 0) its training text, with a note saying so."""
    if textfile is not None:
        ids, skipped = vocab.encode_text(read_text(textfile, encoding), oov, what=str(textfile))
        note = (f"{skipped:,} character(s) outside the vocabulary were skipped (--oov skip)"
                if skipped else "")
        return Text(np.asarray(ids, np.int64), str(textfile), note, skipped)
    train_ids, val_ids = run_split(run_dir, info)
    name = Path(info["corpus"]["source"]).name
    if len(val_ids) >= 2:
        return Text(np.asarray(val_ids, np.int64), f"validation split of {name}")
    why = ("val_fraction 0, as in the spec" if float(info["train"].get("val_fraction", 0)) == 0
           else "its validation split is under 2 characters")
    return Text(np.asarray(train_ids, np.int64), f"training text of {name}",
                f"the run has no validation split ({why}), so the training text is analysed: "
                "these numbers measure fit, not generalisation")


# ----------------------------------------------------------------------------- per-character loss

def position_losses(net, ids: np.ndarray, chunk: int = 8192, precision: str = "fp32",
                    threads=None) -> tuple[np.ndarray, np.ndarray]:
    """(losses (n-1,) float64 nats, correct (n-1,) bool): entry i is the prediction of ids[i+1]
    from ids[:i+1], the state carried through the whole text in one pass."""
    if len(ids) < 2:
        raise CharwiseError(f"need at least 2 characters to score, got {len(ids)}")
    parts = list(token_losses(net, np.asarray(ids), chunk=chunk, precision=precision, threads=threads))
    losses = torch.cat([p[0] for p in parts]).double().numpy()
    guess = torch.cat([p[1] for p in parts]).numpy()
    return losses, guess == np.asarray(ids[1:])


@dataclass
class CharTable:
    """Loss per target character, hardest (highest mean loss) first; only characters that occur."""
    chars: list[str]
    count: np.ndarray               # (k,) predictions of this character
    loss_sum: np.ndarray            # (k,) nats
    correct: np.ndarray             # (k,) top-1 guesses that were right

    @property
    def mean_nats(self) -> np.ndarray:
        return self.loss_sum / self.count

    @property
    def mean_bits(self) -> np.ndarray:
        return self.mean_nats / LN2

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct / self.count

    @property
    def total(self) -> int:
        return int(self.count.sum())

    @property
    def overall_nats(self) -> float:
        """Equals the mean of all position losses: the table adds up to the overall loss."""
        return float(self.loss_sum.sum() / self.count.sum())

    def head(self, k: int) -> "CharTable":
        return CharTable(self.chars[:k], self.count[:k], self.loss_sum[:k], self.correct[:k])

    def min_count(self) -> int:
        """How often a character must occur to be ranked among the hardest: a mean over a
        handful of occurrences is noise (a character seen 3 times tops any mean-loss ranking).
        20, or fewer on short texts (1 per 200 predictions, at least 1)."""
        return max(1, min(20, self.total // 200))

    def hardest(self, k: int, min_count: int | None = None) -> tuple["CharTable", int, int]:
        """(the k characters of highest mean loss among those seen >= min_count times,
        min_count, how many rarer characters were left out)."""
        m = self.min_count() if min_count is None else min_count
        keep = np.flatnonzero(self.count >= m)                       # already hardest first
        sub = CharTable([self.chars[i] for i in keep], self.count[keep], self.loss_sum[keep],
                        self.correct[keep])
        return sub.head(k), m, len(self.chars) - len(keep)

    def rows(self) -> list[dict]:
        total_loss = self.loss_sum.sum()
        return [{"char": c, "label": visible(c), "count": int(n), "mean_nats": float(m),
                 "mean_bits": float(m / LN2), "accuracy": float(a), "share_of_loss": float(s / total_loss)}
                for c, n, m, a, s in zip(self.chars, self.count, self.mean_nats, self.accuracy, self.loss_sum)]

    def csv(self) -> str:
        lines = ["char,codepoint,count,mean_nats,mean_bits,accuracy,share_of_loss"]
        for r in self.rows():
            label = '"' + r["label"].replace('"', '""') + '"'
            lines.append(f"{label},{ord(r['char'])},{r['count']},{r['mean_nats']:.6f},"
                         f"{r['mean_bits']:.6f},{r['accuracy']:.6f},{r['share_of_loss']:.6f}")
        return "\n".join(lines) + "\n"


def char_table(vocab: AnyVocab, ids: np.ndarray, losses: np.ndarray, correct: np.ndarray) -> CharTable:
    y = np.asarray(ids[1:], dtype=np.int64)                        # (n-1,) targets
    V = len(vocab)
    count = np.bincount(y, minlength=V)
    loss_sum = np.bincount(y, weights=losses, minlength=V)
    right = np.bincount(y, weights=correct.astype(np.float64), minlength=V)
    seen = np.flatnonzero(count)
    order = seen[np.argsort(-(loss_sum[seen] / count[seen]), kind="stable")]
    return CharTable([vocab.chars[i] for i in order], count[order], loss_sum[order],
                     right[order].astype(np.int64))


# ----------------------------------------------------------------------------- samples, novelty

def temperature_sweep(model, prime: str, temperatures=(0.5, 1.0, 1.5), n: int = 200,
                      seed: int = 1, threads: int | None = None) -> list[dict]:
    """A sample per temperature and the mean log-likelihood of its generated characters under
    the model (at temperature 1). With no prime the first character comes from the corpus
    frequencies, not the model, so it is not scored."""
    prime_len = len(model.vocab.encode(prime))
    out = []
    for t in temperatures:
        text = model.generate(prime, n, temperature=float(t), seed=seed, threads=threads)
        ids = model.vocab.encode(text)
        ll = None
        if len(ids) >= 2 and len(ids) - max(prime_len, 1) > 0:
            losses, _ = position_losses(model.net, ids, threads=threads)
            ll = -float(losses[max(prime_len - 1, 0):].mean())
        out.append({"temperature": float(t), "prime": prime, "text": text, "loglik_nats": ll,
                    "loglik_bits": None if ll is None else ll / LN2})
    return out


def longest_copy(sample: str, ref: str) -> str:
    """The longest substring of `sample` that occurs in `ref`. Two pointers: a suffix of a
    substring of ref is one too, so the window's start only moves forward, which takes
    O(len(sample)) substring searches (each a C-speed scan of ref)."""
    best, i = (0, 0), 0
    for j in range(1, len(sample) + 1):
        while i < j and sample[i:j] not in ref:
            i += 1
        if j - i > best[1] - best[0]:
            best = (i, j)
    return sample[best[0]:best[1]]


def ngram_overlap(sample: str, ref: str, n: int) -> float | None:
    """Fraction of the n-grams of `sample` (all positions) that occur somewhere in `ref`."""
    grams = [sample[i:i + n] for i in range(len(sample) - n + 1)]
    if not grams:
        return None
    found = {g for g in set(grams) if g in ref}
    return sum(g in found for g in grams) / len(grams)


def novelty(sample: str, ref: str, ns=(10, 20)) -> dict:
    """Memorisation vs invention: the longest stretch copied from `ref`, and per n the fraction
    of n-grams that appear in it (1.0: every n-gram copied; near 0: new text)."""
    copy = longest_copy(sample, ref)
    return {"chars": len(sample), "longest_copy": copy, "longest_copy_len": len(copy),
            "ngram_overlap": {n: ngram_overlap(sample, ref, n) for n in ns}}


# ----------------------------------------------------------------------------- plateau

def plateau(info: dict, tol: float = 0.01) -> dict | None:
    """When the evaluation loss stopped improving, from run.json's history."""
    hist = [h for h in info.get("history") or [] if math.isfinite(h.get("val_loss", math.nan))]
    if not hist:
        return None
    steps = [h["step"] for h in hist]
    loss = np.array([h["val_loss"] for h in hist])
    b = int(np.argmin(loss))
    near = int(np.flatnonzero(loss <= loss[b] * (1 + tol))[0])
    since = len(hist) - 1 - b
    out = {"best_step": steps[b], "best_loss": float(loss[b]), "last_step": steps[-1],
           "evals": len(hist), "evals_since_best": since, "within_tol_step": steps[near], "tol": tol,
           "split": hist[-1].get("eval_split", "val"), "stopped_because": info.get("stopped_because"),
           "status": info.get("status")}
    if len(hist) == 1:
        out["verdict"] = (f"one evaluation (step {steps[0]}): no plateau information; evaluate more "
                          "often (--eval-every) to see whether the loss is still falling")
        return out
    if info.get("stopped_because") == "patience":
        v = (f"stopped early by --patience {info['train'].get('patience')}: no improvement in "
             f"{since} evaluations after step {steps[b]}")
    elif since == 0:
        v = f"still improving at the last evaluation (step {steps[-1]}): more training would likely help"
    else:
        v = (f"best at step {steps[b]}, then {since} evaluation(s) without improvement "
             f"up to step {steps[-1]}: plateaued")
    out["verdict"] = (("still training; " if info.get("status") == "training" else "") + v +
                      f"; within {tol:.0%} of its best from step {steps[near]}")
    return out
