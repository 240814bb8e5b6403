"""A run's text, as the loop uses it: the corpus encoded (by rank 0, the others reading its
cache), in the model's vocabulary, split, and cut into batches (batches.py); or in line mode
its items. The run directory is prepared here, the first write of a run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.bytevocab import ByteVocab
from ..data.corpus import Corpus, prepare_corpus
from ..data.lines import line_mode_hint, prepare_items
from ..data.vocab import AnyVocab, Vocab, vocab_record
from ..errors import CharwiseError
from ..runs import rundir, transfer
from ..runs.bundled import corpus_path as bundled_corpus_path
from ..runs.rundir import CACHE
from ..settings.train import TrainConfig
from . import distributed
from .batches import (
    Batches,
    ByteEvaluation,
    Evaluation,
    ItemBatches,
    ItemEvaluation,
    StreamBatches,
    TokenEvaluation,
)
from .distributed import Dist
from .plan import Plan


@dataclass
class RunData:
    corpus: Corpus                  # the tokens, in the model's vocabulary; source and sha256
    text_vocab: AnyVocab            # the text's own vocabulary (--init-from adds SOURCE's to it)
    train_tok: np.ndarray
    val_tok: np.ndarray
    batches: Batches
    evaluation: Evaluation
    tcfg: TrainConfig               # the plan's, with the streams a short text allows
    chars_per_step: int             # characters a step trains on (line mode: on average)
    items: dict | None              # line mode: the item counts run.json records
    eval_group: Any                 # torchrun: where the ranks wait for rank 0's evaluation


def load_data(plan: Plan, dist: Dist, log: Callable[..., Any]) -> RunData:
    """Check the output, encode the corpus (rank 0 first), split it, cut the streams."""
    tcfg, out = plan.tcfg, plan.out
    rundir.check_run_start(out, plan.resume, plan.force)     # again, now that the lock is held
    if plan.source is not None and (tcfg.vocab != "chars" or tcfg.line_mode):
        raise CharwiseError("--init-from continues a code-point model trained as one text: it "
                            "cannot start --vocab bytes or --line-mode training")
    dist.barrier()                                   # every rank checked before any write
    if tcfg.line_mode:
        return _load_items(plan, dist, log)
    # rank 0 encodes the corpus while the others wait, as long as that takes (distributed.py)
    encoding = dist.wait_group(distributed.rank0_timeout(
        _corpus_bytes(plan.corpus) * distributed.ENCODE_SECONDS_PER_BYTE))
    if dist.main:
        prepare_out(out, plan.resume, plan.force)
        text = prepare_corpus(plan.corpus, cache_dir=out / CACHE, encoding=tcfg.encoding,
                              vocab_kind=tcfg.vocab)
        hint = line_mode_hint(plan.corpus, tcfg.encoding) if plan.prev is None else None
        if hint:
            log(hint)
    dist.barrier(encoding)                           # then the others read rank 0's cache
    if not dist.main:
        text = prepare_corpus(plan.corpus, cache_dir=out / CACHE, encoding=tcfg.encoding,
                              vocab_kind=tcfg.vocab)
    text_vocab = text.vocab
    prev = plan.prev
    # the model's vocabulary is SOURCE's merged with the text's: encode the text in it
    if plan.source is not None:
        text = transfer.in_vocab(text, transfer.merge_vocab(plan.source.vocab, text_vocab))
    elif prev is not None and prev.get("init_from"):
        text = transfer.in_vocab(text, Vocab(tuple(prev["vocab"])))
    if prev is not None and vocab_record(text.vocab, False)["vocab"] != prev["vocab"]:
        raise CharwiseError(f"{text.source}: the corpus changed since this run began "
                            "(its vocabulary differs); cannot resume")
    train_tok, val_tok = text.split(tcfg.val_fraction)
    n_fit = (len(train_tok) - 1) // tcfg.seq_len
    if prev is None and 1 <= n_fit < tcfg.batch_size and not dist.enabled:
        log(f"note: text too short for {tcfg.batch_size} streams of {tcfg.seq_len}; using {n_fit}")
        tcfg = replace(tcfg, batch_size=n_fit)                 # a short text: fewer streams
    dist.check_world(tcfg.batch_size, prev.get("world_size", 1) if prev is not None else None)
    batches = StreamBatches(train_tok, tcfg.batch_size, tcfg.seq_len, seed=tcfg.seed,
                            streams=dist.streams(tcfg.batch_size), reset_every=tcfg.reset_every)
    # no split (the spec's setup): evaluate on the whole text
    split = "val" if len(val_tok) >= 2 else "train"
    if split == "train" and tcfg.val_fraction > 0:
        log("note: validation split too short; evaluating on the training text")
    scored = val_tok if split == "val" else train_tok
    evaluation = (ByteEvaluation if isinstance(text.vocab, ByteVocab) else TokenEvaluation)(scored, split)
    # rank 0 scores the whole split alone at each evaluation; the others wait that long
    eval_group = dist.wait_group(distributed.rank0_timeout(
        len(scored) * distributed.SCORE_SECONDS_PER_CHAR))
    return RunData(text, text_vocab, train_tok, val_tok, batches, evaluation, tcfg,
                   tcfg.batch_size * tcfg.seq_len, None, eval_group)


def _load_items(plan: Plan, dist: Dist, log: Callable[..., Any]) -> RunData:
    """Line mode: every line one item, B whole items a batch, each from a zero state."""
    tcfg = plan.tcfg
    if dist.enabled:
        raise CharwiseError("--line-mode trains in one process (no torchrun)")
    if tcfg.engine != "torch":
        raise CharwiseError("--line-mode needs --engine torch")
    prepare_out(plan.out, plan.resume, plan.force)
    items = prepare_items(plan.corpus, tcfg.vocab, tcfg.encoding, tcfg.val_fraction, log)
    text = Corpus(items.vocab, np.concatenate(items.train + items.val), items.source, items.sha256)
    train_tok = np.concatenate(items.train)
    val_tok = np.concatenate(items.val) if items.val else train_tok[:0]
    split = "val" if len(val_tok) >= 2 else "train"
    evaluation = ItemEvaluation(items.val or items.train, items.end_id, split)
    if not items.val:
        log("note: no validation items; evaluating on the training items")
    counts = {"train": len(items.train), "val": len(items.val), "longest": items.stats.longest}
    batches = ItemBatches(items.train, tcfg.batch_size, items.end_id, seed=tcfg.seed)
    mean_len = len(train_tok) / len(items.train) + 1
    return RunData(text, items.vocab, train_tok, val_tok, batches, evaluation, tcfg,
                   int(tcfg.batch_size * mean_len), counts, None)


def prepare_out(out: Path, resume: bool, force: bool) -> None:
    if not resume and out.is_dir() and force:
        # --force replaces only what charwise wrote (other files in the directory stay), and
        # only once the new run has started: until then the old run's files wait aside
        rundir.set_aside(out)
    out.mkdir(parents=True, exist_ok=True)


def _corpus_bytes(corpus: str | os.PathLike | None) -> int:
    """The size of the text rank 0 encodes (0 for a prepared corpus: it is read, not encoded)."""
    path = Path(corpus) if corpus is not None else bundled_corpus_path()
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
