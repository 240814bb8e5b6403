"""Start a run from another run's weights: `charwise train TEXT --init-from SOURCE`.

SOURCE is a run directory, a model packed by `charwise pack`, or a bundled model's name
(`base`). The new run takes SOURCE's model shape (cell, embedding, hidden size, layers) and its
weights; its training settings come from the flags and the preset as usual (`finetune` unless
another is named).

The vocabularies are merged. A vocabulary in charwise is always sorted by code point (ids
follow `sorted(set(text))`, which `Vocab` enforces), and the merged one is too: it is the sorted
union of SOURCE's characters and the new text's. So rows are *moved*, never changed:

- a character both know gets SOURCE's embedding row and output row (weights and bias) exactly,
  at its id in the merged vocabulary;
- a character only SOURCE knows keeps its rows too, so the model can still write it;
- a character new to SOURCE gets fresh rows that start it unlikely, not uniform: an output row
  of zero weights with a bias equal to SOURCE's lowest output bias (its rarest character's, so
  the newcomer starts about as likely as that one whatever the context) and the mean of SOURCE's
  embedding rows as its input embedding (it reads as "some character", not as noise).

The text is then encoded with the merged vocabulary (`remap`), so token ids, character counts
and every later step agree with the model's rows. Everything but the embedding and the output
layer is copied as it is.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.vocab import AnyVocab, Vocab
from ..data.corpus import Corpus
from ..errors import CharwiseError
from ..settings.train import SHAPE_FIELDS, ModelConfig
from . import bundled
from ..data.corpus import Corpus
from ..data.vocab import AnyVocab, Vocab
from .checkpoint import load_model
from .rundir import BEST, LAST

# Settings that fix the weights' shapes: SOURCE decides them, a flag may only repeat them.
VOCAB_ROWS = ("embed.weight", "head.weight", "head.bias")     # first axis indexed by character id


@dataclass
class Source:
    """What a new run starts from."""
    name: str                       # as the user gave it: "base" or a path
    path: Path                      # the run directory it resolved to
    mcfg: ModelConfig
    vocab: AnyVocab
    state: dict[str, torch.Tensor]
    weights_file: str
    sha256: str
    info: dict

    def record(self, vocab, text_vocab) -> dict:
        """What the new run's run.json keeps about where it started."""
        src, txt = set(self.vocab.chars), set(text_vocab.chars)
        return {"name": str(self.name), "path": str(self.path.resolve()), "weights": self.weights_file,
                "sha256": self.sha256, "vocab_size": len(self.vocab),
                "best": self.info.get("best"),
                "new_chars": sorted(txt - src), "source_only_chars": len(src - txt),
                "merged_vocab_size": len(vocab)}


def read_source(spec: str | os.PathLike) -> Source:
    """SOURCE's config, vocabulary and weights (best, else last), or a one-line error."""
    name = str(spec)
    try:
        path = bundled.resolve(spec)
        net, vocab, info = load_model(path, "best")
    except CharwiseError as e:
        raise CharwiseError(f"--init-from {name}: {e}") from None
    if info.get("vocab_kind", "chars") != "chars" or info.get("line_mode"):
        raise CharwiseError(f"--init-from {name}: a byte-level or line-mode run cannot start a "
                            "code-point model")
    if path.is_file():                       # a packed model (charwise pack): the file itself
        weights, sha = path.name, bundled.sha256_file(path)
    else:
        weights = BEST if (path / BEST).is_file() else LAST
        sha = bundled.verify(path) if bundled.is_bundled(spec) else bundled.sha256_file(path / weights)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return Source(name, path, net.cfg, vocab, state, weights, sha, info)


def merge_vocab(source, text):
    """The sorted union of two vocabularies (every character of either, each once)."""
    return Vocab(tuple(sorted(set(source.chars) | set(text.chars))))


def transplant(state: dict[str, torch.Tensor], source_vocab, vocab) -> dict[str, torch.Tensor]:
    """SOURCE's state dict re-indexed for `vocab` (a superset of source_vocab): shared and
    SOURCE-only characters' rows moved to their new ids, new characters' rows made fresh."""
    missing = set(source_vocab.chars) - set(vocab.chars)
    if missing:
        raise ValueError(f"the new vocabulary lacks {len(missing)} of SOURCE's characters")
    where = {c: i for i, c in enumerate(source_vocab.chars)}
    old = torch.tensor([where.get(c, -1) for c in vocab.chars])         # new id -> SOURCE id or -1
    known, fresh = old >= 0, old < 0
    out = dict(state)
    emb, hw, hb = state["embed.weight"], state["head.weight"], state["head.bias"]
    fills = {"embed.weight": emb.mean(0),                 # "some character"
             "head.weight": torch.zeros_like(hw[0]),      # no opinion from the context...
             "head.bias": hb.min()}                       # ...and as unlikely as the rarest
    for key in VOCAB_ROWS:
        t = state[key]
        new = t.new_empty((len(vocab), *t.shape[1:]))
        new[known] = t[old[known]]
        new[fresh] = fills[key].to(t.dtype)
        out[key] = new
    return out


def remap(tokens: np.ndarray, from_vocab, to_vocab, chunk: int = 1 << 24) -> np.ndarray:
    """Token ids of `from_vocab` -> the same characters' ids in `to_vocab` (a superset)."""
    where = {c: i for i, c in enumerate(to_vocab.chars)}
    try:
        lut = np.array([where[c] for c in from_vocab.chars], dtype=to_vocab.dtype)
    except KeyError as e:
        raise CharwiseError(f"character {e.args[0]!r} is not in the model's vocabulary") from None
    out = np.empty(len(tokens), dtype=to_vocab.dtype)
    for i in range(0, len(tokens), chunk):                       # bounded memory for memmaps
        out[i:i + chunk] = lut[np.asarray(tokens[i:i + chunk])]
    return out


def in_vocab(corpus: Corpus, vocab: Vocab) -> Corpus:
    """`corpus` encoded in `vocab` (a superset of its own vocabulary), as a run started with
    --init-from trains on it; the corpus itself when the vocabularies are the same or `vocab`
    lacks some of its characters (the caller's checks then report the mismatch)."""
    if corpus.vocab == vocab or not set(corpus.vocab.chars) <= set(vocab.chars):
        return corpus
    return Corpus(vocab, remap(corpus.tokens, corpus.vocab, vocab), corpus.source, corpus.sha256)


def _a(cell: str) -> str:
    """"an LSTM", "an RNN", "a GRU", "a TRANSFORMER"."""
    return ("an " if cell in ("lstm", "rnn") else "a ") + cell.upper()


def model_config(source: Source, overrides: dict) -> ModelConfig:
    """SOURCE's model config; a shape flag that contradicts it is a one-line error. Dropout is a
    training choice and may be changed."""
    src = source.mcfg
    for key in SHAPE_FIELDS:
        value = overrides.get(key)
        if value is None or value == getattr(src, key):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "cell":
            raise CharwiseError(f"--init-from {source.name} is {_a(src.cell)} model; {flag} "
                                f"{value} asks for {_a(str(value))} (a model's cell cannot change: "
                                f"drop {flag})")
        raise CharwiseError(f"--init-from {source.name} has {key.replace('_', ' ')} "
                            f"{getattr(src, key)}; {flag} {value} contradicts it (the model's "
                            f"shape comes from SOURCE: drop {flag})")
    dropout = overrides.get("dropout")
    return dataclasses.replace(src, dropout=src.dropout if dropout is None else dropout)


def training_overrides(overrides: dict) -> dict:
    """The overrides minus the shape fields SOURCE fixes (already checked by model_config)."""
    return {k: v for k, v in overrides.items() if k not in SHAPE_FIELDS}
