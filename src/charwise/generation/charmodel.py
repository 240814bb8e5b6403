"""A trained model with its vocabulary, as `charwise.load(run_dir)` returns it: sampling (prime
the state with every prime character, then draw one character at a time, streaming as it goes),
line-mode items, beam search and exact scoring.

What is drawn is a SamplingParams (params.py), checked once when it is made: the keyword methods
(`steps`, `stream`, `generate`, `items`, `beam`) make one from their arguments, the `sample_*`
methods take one (`charwise sample` and serve make theirs from their options and requests). The
step functions are in steps.py, the draws in sampler.py, the batched loop with stop strings and
end symbols in loop.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data.bytevocab import ByteVocab
from ..data.lines import NoveltyFilter, encode_items, evaluate_items, read_items, split_items
from ..data.vocab import AnyVocab
from ..errors import CharwiseError
from ..model import CharModule
from ..runs.bundled import sha256_file
from ..runs.checkpoint import load_model
from ..scoring import eval_precision, evaluate_bytes, evaluate_tokens, fp32_flags, pick_device, window_record
from ..settings.options import DEFAULT_TEMPERATURE
from ..threads import check_threads
from ..transformer import CharTransformer
from .beam import beam_search
from .loop import Generation, run
from .params import SamplingParams
from .prime import fit_prime
from .sampler import Sampler
from .steps import KVState, TimedStep, check_precision, make_step, make_timed_step

PRIME_LOGITS_BUDGET = 1 << 22      # logit values per priming call (16 MB in fp32)
ITEM_ROUNDS = 20                   # --new-only: rounds of drawing before giving up


@dataclass
class CharModel:
    """A trained model with its vocabulary: what `charwise.load(run_dir)` returns."""
    net: CharModule
    vocab: AnyVocab
    info: dict = field(default_factory=dict)

    @property
    def line_mode(self) -> bool:
        """Trained with --line-mode: every sample is one item, started after the end symbol."""
        return bool(self.info.get("line_mode", False))

    @property
    def end_id(self) -> int | None:
        """The end-of-item symbol a sample may draw: line mode's. Outside line mode none: a
        byte vocabulary has one all the same, which no text holds, so it is banned."""
        return self.vocab.end_id if self.line_mode else None

    @property
    def banned_id(self) -> int | None:
        """The symbol never drawn: a byte vocabulary's end symbol outside line mode."""
        return None if self.line_mode else self.vocab.end_id

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def fit_prime(self, prime: str, oov: str = "error") -> tuple[str, str]:
        """(the prime as the model reads it: quotes matched to the corpus's forms and, with
        oov="skip", unknown characters dropped; a note saying what changed, or "")."""
        if not isinstance(prime, str):
            raise CharwiseError("the prime must be text")
        if isinstance(self.vocab, ByteVocab):
            return prime, ""                                 # any text is bytes: nothing to fit
        return fit_prime(prime, self.vocab.chars, oov)

    @torch.inference_mode()
    def prime(self, prime: str, num_samples: int = 1, oov: str = "error", fast: bool = True):
        """Run every prime character through the model. Returns (last logits (S, V), state)."""
        if not isinstance(prime, str):
            raise CharwiseError("the prime must be text")
        try:
            prime.encode("utf-8")
        except UnicodeEncodeError:
            raise CharwiseError("the prime contains a lone surrogate (not valid Unicode text)") from None
        prime, _ = self.fit_prime(prime, oov)                    # what the model reads
        ids = self.vocab.encode(prime, oov=oov)
        if self.line_mode:                                   # an item starts after an end symbol
            ids = np.concatenate([[self.vocab.end_id], ids]).astype(np.int64)
        net = self.net
        # a transformer's state is its KV cache, filled from position 0
        state = (KVState(net.new_cache(num_samples, self.device), 0)
                 if isinstance(net, CharTransformer) else net.zero_state(num_samples, self.device))
        if len(ids) == 0:
            # No prime: the first character comes from the corpus's character frequencies.
            counts = np.asarray(self.info.get("char_counts") or np.ones(len(self.vocab)), float)
            return np.log(np.maximum(counts, 1e-12))[None].repeat(num_samples, 0), state
        x = torch.as_tensor(ids, device=self.device)[None].expand(num_samples, -1)
        # the prime in as few calls as fit: each call's logits are S x piece x V values, so a
        # large vocabulary takes shorter pieces (only the last position's logits are kept)
        piece = max(1, PRIME_LOGITS_BUDGET // (num_samples * len(self.vocab)))
        with fp32_flags(self.device, "fp32"):      # IEEE on a GPU, as the steps that follow
            for s in range(0, x.shape[1], piece):
                if isinstance(state, KVState):  # the cache slides past the context
                    assert isinstance(net, CharTransformer)
                    logits, cache = net.step(x[:, s: s + piece], state.cache, state.pos)
                    state = KVState(cache, state.pos + x[:, s: s + piece].shape[1])
                else:
                    logits, state = net(x[:, s: s + piece], state)
        return logits[:, -1].float().cpu().numpy(), state

    # ------------------------------------------------------------------------- the keyword API

    def steps(self, prime: str = "", n: int = 200, temperature: float = DEFAULT_TEMPERATURE,
              top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
              num_samples: int = 1, oov: str = "error", fast: bool = True,
              threads: int | None = None, precision: str = "fp32") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The sampling loop: yield n times (logits (S, V) drawn from, ids (S,) drawn).
        `threads`: CPU threads of the step (None: measured and chosen as it runs; the text is
        the same either way). `precision`: "fp32" (exact) or "int8" (LSTMs on the CPU: int8
        recurrent weights, faster; the prime still runs in fp32)."""
        params = SamplingParams(n=n, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                num_samples=num_samples)
        return self.sample_steps(prime, params, oov=oov, fast=fast, threads=threads, precision=precision)

    def stream(self, prime: str = "", n: int = 200, temperature: float = DEFAULT_TEMPERATURE,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               num_samples: int = 1, oov: str = "error", fast: bool = True,
               threads: int | None = None, stop: str | Sequence[str] | None = None,
               keep_stop: bool = False, result: Generation | None = None,
               precision: str = "fp32") -> Iterator[list[str]]:
        """Yield, step by step, a list of num_samples new texts (usually one character each; ""
        while a sample holds text back or has ended). Each sample ends at n characters, at the
        first of the `stop` strings (excluded unless keep_stop) or at the end-of-item symbol;
        `result` receives how each ended. `threads` and `precision` as in `steps`."""
        params = SamplingParams(n=n, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                num_samples=num_samples, stop=stop, keep_stop=keep_stop)
        return self.sample_texts(prime, params, oov=oov, fast=fast, threads=threads, result=result,
                                 precision=precision)

    def generate(self, prime: str = "", n: int = 200, temperature: float = DEFAULT_TEMPERATURE,
                 **kw) -> str | list[str]:
        """prime + up to n sampled characters (a list of strings when num_samples > 1); `stop`
        ends each sample at the first of its strings. Keywords as in `stream`."""
        num = kw.get("num_samples", 1)
        texts = self.joined(prime, self.stream(prime, n, temperature, **kw), num, kw.get("oov", "error"))
        return texts[0] if num == 1 else texts

    def items(self, n: int = 20, prime: str = "", temperature: float = DEFAULT_TEMPERATURE,
              top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
              oov: str = "error", new_only: bool = False, max_chars: int | None = None,
              known: list[str] | None = None, precision: str = "fp32") -> tuple[list[str], dict]:
        """Line mode: n whole items (each from a fresh state, ended by the end symbol). With
        new_only, items that are lines of the training text are dropped and more are drawn
        (up to ITEM_ROUNDS rounds); the report says how many were new. `precision` as in
        `steps`."""
        params = SamplingParams(n=n, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                new_only=new_only)
        return self.sample_items(prime, params, oov=oov, max_chars=max_chars, known=known,
                                 precision=precision)

    def beam(self, prime: str = "", n: int = 200, width: int = 4,
             oov: str = "error") -> list[tuple[str, float]]:
        """The `width` most likely continuations of n symbols (bytes, for a byte model) as
        (prime + text, natural log-probability), best first; deterministic."""
        params = SamplingParams(n=n, beam=width)
        assert params.beam is not None
        logits, state = self.prime(prime, 1, oov)
        step = make_step(self.net, params.beam + 1)
        beams = beam_search(step, logits, step.begin(state), params.beam, params.n,
                            end_id=self.end_id, banned=self.banned_id)
        return [(prime + self.vocab.decode(b.ids), b.logprob) for b in beams]

    # ------------------------------------------------------------------------- a SamplingParams

    def sample_steps(self, prime: str, params: SamplingParams, *, oov: str = "error",
                     fast: bool = True, threads: int | None = None,
                     precision: str = "fp32") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`steps` for a SamplingParams (its n, sampling settings and num_samples)."""
        check_threads(threads)
        check_precision(precision, self.net, fast)
        return self._draws(prime, params, oov, fast, threads, precision)

    def _draws(self, prime: str, params: SamplingParams, oov: str, fast: bool,
               threads: int | None, precision: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sampler = Sampler(params, self.banned_id)
        logits, state = self.prime(prime, params.num_samples, oov)
        step = make_timed_step(self.net, params.num_samples, fast, threads, precision)
        state = step.begin(state)
        # No inference_mode around the loop: a generator would leak it into the caller's code
        # between yields; each step function enters it for its own torch work.
        try:
            for i in range(params.n):
                ids = sampler(logits)                    # (S,); the banned symbol masked in place
                yield logits, ids
                if i + 1 < params.n:
                    logits, state = step(ids, state)
        finally:
            if isinstance(step, TimedStep):
                step.close()

    def sample_texts(self, prime: str, params: SamplingParams, *, oov: str = "error",
                     fast: bool = True, threads: int | None = None, result: Generation | None = None,
                     precision: str = "fp32") -> Iterator[list[str]]:
        """`stream` for a SamplingParams (its n, sampling settings, samples and stop strings)."""
        check_threads(threads)
        check_precision(precision, self.net, fast)
        return self.texts(prime, params.n, Sampler(params, self.banned_id), params.num_samples,
                          oov=oov, fast=fast, stops=params.stops, keep_stop=params.keep_stop,
                          result=result, threads=threads, precision=precision)

    def texts(self, prime: str, n: int, sampler: Sampler, streams: int, *, oov: str = "error",
              fast: bool = True, stops: Sequence[str] = (), keep_stop: bool = False,
              result: Generation | None = None, threads: int | None = None,
              precision: str = "fp32") -> Iterator[list[str]]:
        """The generation loop (loop.run) over `streams` samples of up to n characters drawn
        by `sampler`: per step, the text each sample completed."""
        logits, state = self.prime(prime, streams, oov)
        step = make_timed_step(self.net, streams, fast, threads, precision)
        decoders = [self.vocab.decoder() for _ in range(streams)]
        # No inference_mode around the loop: a generator would leak it into the caller's code
        # between yields; each step function enters it for its own torch work.
        try:
            yield from run(step, logits, step.begin(state), n, sampler, decoders, stops, keep_stop,
                           self.end_id, result=result)
        finally:
            if isinstance(step, TimedStep):
                step.close()

    def joined(self, prime: str, chunks: Iterator[list[str]], streams: int,
               oov: str = "error") -> list[str]:
        """Each sample's whole text from `stream`'s steps: the prime as read, then its text."""
        cols: list[list[str]] = [[] for _ in range(streams)]
        for chars in chunks:
            for s, ch in enumerate(chars):
                cols[s].append(ch)
        used, _ = self.fit_prime(prime, oov)                 # the prime as the model read it
        return [used + "".join(c) for c in cols]

    def sample_items(self, prime: str, params: SamplingParams, *, oov: str = "error",
                     max_chars: int | None = None, known: list[str] | None = None,
                     precision: str = "fp32") -> tuple[list[str], dict]:
        """`items` for a SamplingParams (params.n items; its sampling settings and new_only)."""
        if not self.line_mode:
            raise CharwiseError("this run was not trained with --line-mode: it has no items "
                                "(sample text with -n instead)")
        check_precision(precision, self.net)
        limit = max_chars or 2 * int(self.info.get("items", {}).get("longest", 200)) + 10
        novelty = None
        if params.new_only:
            novelty = NoveltyFilter(known if known is not None else self.training_items())
        sampler = Sampler(params, self.banned_id)        # one seeded run across the rounds
        out: list[str] = []
        unfinished = 0
        for _ in range(ITEM_ROUNDS if novelty else 1):
            want = params.n - len(out)
            if want <= 0:
                break
            gen = Generation()
            texts = [prime] * want
            for chars in self.texts(prime, limit, sampler, want, oov=oov, result=gen, precision=precision):
                texts = [t + c for t, c in zip(texts, chars)]
            unfinished += sum(e.reason != "end" for e in gen.ends)
            out += [t for t in texts if novelty is None or novelty(t)]
        report: dict[str, Any] = {"items": len(out), "unfinished": unfinished}
        if novelty is not None:
            report.update(drawn=novelty.seen, new=novelty.new, new_share=novelty.new / max(novelty.seen, 1),
                          message=novelty.report())
        return out, report

    def training_items(self) -> list[str]:
        """The lines of the training text (for --new-only), read again from the corpus file
        the run recorded; refused if it is gone or changed since."""
        corpus = self.info.get("corpus", {})
        source = corpus.get("source")
        if not source or not Path(source).is_file():
            raise CharwiseError(f"--new-only compares with the training text, but {source!r} "
                                "is not there any more")
        if corpus.get("sha256") and sha256_file(Path(source)) != corpus["sha256"]:
            raise CharwiseError(f"--new-only: {source} changed since this run trained on it")
        return read_items(source, self.info.get("train", {}).get("encoding", "utf-8"))[1]

    # ------------------------------------------------------------------------- scoring

    def evaluate(self, text: str, oov: str = "error", precision: str = "auto",
                 threads: int | None = None) -> dict:
        """Exact loss of `text` in one stateful pass; precision auto/fp32/bf16 (see
        eval_precision). A byte model reports per byte and per character (comparable with a
        code-point model); a line-mode model scores each line as an item, per item too.
        threads: a fixed CPU thread count, or None to measure and choose."""
        if self.line_mode and precision == "bf16":         # whatever the CPU: before its check
            raise CharwiseError("a line-mode run's items are scored in fp32 (data/lines.py); "
                                "--precision bf16 is not available for it")
        prec = eval_precision(self.net, precision, self.info.get("precision"))
        if self.line_mode:
            end_id = self.vocab.end_id
            assert end_id is not None
            items = encode_items(lambda t: self.vocab.encode(t, oov=oov), split_items(text))
            return {**evaluate_items(self.net, items, end_id), "precision": "fp32"}
        ids = self.vocab.encode(text, oov=oov)
        if isinstance(self.vocab, ByteVocab):
            if len(ids) < 2:
                raise CharwiseError("need at least 2 characters to evaluate")
            res = {**evaluate_bytes(self.net, ids, prec), "precision": prec}
        else:
            res = {**evaluate_tokens(self.net, ids, prec, threads=check_threads(threads)), "precision": prec}
        if isinstance(self.net, CharTransformer):
            res["context"] = window_record(self.net.cfg.context)
        return res


def load(run_dir: str | Path, which: str = "best", device: str = "cpu") -> CharModel:
    """A trained run as a CharModel (generate / stream / evaluate). Executes no stored code."""
    net, vocab, info = load_model(run_dir, which, str(pick_device(device)))
    return CharModel(net, vocab, info)
