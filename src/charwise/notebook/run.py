"""Run: a run directory in a notebook, with its best weights loaded: the numbers, the card
it shows itself as, and its pictures (drawn by views.py and inspect/)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..cells import shape_text
from ..errors import CharwiseError
from ..inspect import analysis as A
from ..inspect import attention as ATT
from ..inspect import neurons as N
from ..inspect.plots import attention_figure, curve_figure, heatmap_figure, per_char_figure
from ..scoring import LN2
from .views import HTML, Neurons, Samples, card_html, thumbnail, unit_html


class Run:
    """A trained (or training) run directory with its best weights loaded.

    info is run.json (settings, vocabulary, history); model is the CharModel that
    `charwise.load` returns (generate, stream, evaluate)."""

    def __init__(self, path, which: str = "best"):
        from ..api import load
        self.path = Path(path)
        self.which = which
        self.model = load(self.path, which=which)
        self.info = self.model.info
        self._texts: dict = {}

    @classmethod
    def from_result(cls, result, which: str = "best") -> "Run":
        """The Run of what `charwise.train(...)` returned (its TrainResult)."""
        return cls(result.run_dir, which)

    # ------------------------------------------------------------------------- numbers

    @property
    def vocab(self):
        return self.model.vocab

    @property
    def net(self):
        return self.model.net

    @property
    def config(self) -> dict:
        """The settings the run was trained with: {"model": {...}, "train": {...}}."""
        return {"model": dict(self.info["model"]), "train": dict(self.info["train"])}

    @property
    def best_loss(self) -> float | None:
        """Best evaluation loss (nats/char): the validation split's, or the whole text's when
        the run has no split (the spec preset)."""
        best = self.info.get("best") or {}
        return best.get("val_loss")

    @property
    def best_step(self) -> int | None:
        return (self.info.get("best") or {}).get("step")

    @property
    def eval_split(self) -> str:
        hist = self.info.get("history") or []
        return hist[-1].get("eval_split", "val") if hist else "val"

    def parameters(self) -> dict:
        """Parameter count per part: embedding (a transformer's positions too), the core (the
        recurrent layers, or the transformer's blocks and final norm), output head, total. A
        tensor shared by two parts (a tied head) counts once, in the first."""
        core = self.net.cfg.cell.upper()
        parts = {"embedding": 0, core: 0, "output head": 0}
        for name, p in self.net.named_parameters():          # each tensor once
            part = ("embedding" if name.startswith(("embed.", "pos.")) else
                    "output head" if name.startswith("head.") else core)
            parts[part] += p.numel()
        parts["total"] = sum(parts.values())
        return parts

    def plateau(self, tol: float = 0.01) -> dict | None:
        """When the evaluation loss stopped improving (see charwise.analysis.plateau)."""
        return A.plateau(self.info, tol)

    def generate(self, prime: str = "", n: int = 200, temperature: float = 1.0, **kw) -> str | list[str]:
        return self.model.generate(prime, n, temperature, **kw)

    def evaluate(self, text: str, oov: str = "error") -> dict:
        """Exact loss of `text` (nats/char, bits/char, perplexity) in one stateful pass."""
        return self.model.evaluate(text, oov=oov)

    # ------------------------------------------------------------------------- the card

    def _summary_rows(self) -> list[tuple[str, str]]:
        m, t, c = self.info["model"], self.info["train"], self.info.get("corpus", {})
        V = len(self.vocab)
        rows = [("run", str(self.path)),
                ("model", f"{shape_text(m)}, dropout {m['dropout']}"),
                ("parameters", f"{self.info.get('parameters', 0):,}"),
                ("vocabulary", f"{V} characters (uniform guessing: ln {V} = {math.log(V):.3f} nats/char)"),
                ("corpus", f"{Path(str(c.get('source', '?'))).name}: {c.get('chars', 0):,} chars "
                           f"({c.get('train_chars', 0):,} train, {c.get('val_chars', 0):,} validation)"),
                ("training", f"{self.info.get('step', 0):,} steps in {self.info.get('train_seconds', 0):.1f} s; "
                             f"windows {t['seq_len']} \u00d7 {t['batch_size']} streams, lr {t['lr']}; "
                             f"{self.info.get('status')} ({self.info.get('stopped_because') or '-'})")]
        if self.best_loss is not None:
            where = "validation" if self.eval_split == "val" else "whole training text"
            rows.append(("best loss", f"{self.best_loss:.4f} nats/char ({self.best_loss / LN2:.3f} "
                                      f"bits/char) on the {where}, step {self.best_step}"))
        return rows

    def thumbnail(self):
        """A small training curve (Figure) for the card, or None before the first step."""
        return thumbnail(self.path)

    def _repr_html_(self) -> str:
        return card_html(self._summary_rows(), self.thumbnail())

    def __repr__(self) -> str:
        return "\n".join(f"{k:<11} {v}" for k, v in self._summary_rows())

    # ------------------------------------------------------------------------- pictures

    def plot_curve(self, window: int = 10, title: str | None = None):
        """The training curve: raw loss, its moving average, evaluations, best step (a Figure)."""
        return curve_figure(self.path, window, title)

    def _text(self, text=None, oov: str = "error"):
        """(ids, description) of `text`, or of the run's own analysis text when None (its
        validation split, or the training text when it has none)."""
        if text is not None:
            ids, skipped = self.vocab.encode_text(text, oov, what="text")
            return np.asarray(ids, np.int64), ("the given text" + (f" ({skipped} characters skipped)"
                                                                    if skipped else ""))
        if None not in self._texts:
            t = A.analysis_text(self.path, self.info, self.vocab)
            self._texts[None] = (t.ids, t.source)
        return self._texts[None]

    def losses(self, text=None, window: int | None = None, oov: str = "error") -> np.ndarray:
        """Loss (nats) of each prediction of `text` (None: the run's analysis text); entry i
        predicts character i+1. window None: one pass with the state carried through the whole
        text; window T: each T-character window scored from a zero state, as the chapter does
        (the same predictions, less context)."""
        ids, _ = self._text(text, oov)
        if window is None:
            return A.position_losses(self.net, ids)[0]
        if window < 1:
            raise CharwiseError(f"window must be >= 1, got {window}")
        parts = [A.position_losses(self.net, ids[k:k + window + 1])[0]
                 for k in range(0, len(ids) - 1, window)]
        return np.concatenate(parts)

    def per_char_table(self, text=None, oov: str = "error"):
        """Loss per target character, hardest first (a CharTable), from one stateful pass."""
        key = ("table", text, oov)
        if key not in self._texts:
            ids, _ = self._text(text, oov)
            self._texts[key] = A.char_table(self.vocab, ids, *A.position_losses(self.net, ids))
        return self._texts[key]

    def per_char(self, text=None, k: int = 15, oov: str = "error"):
        """Chart of the k hardest characters to predict (a Figure); text None: the run's
        validation split (the training text for a run without one)."""
        _, source = self._text(text, oov)
        return per_char_figure(self.per_char_table(text, oov), k,
                               title=f"Per-character average loss (hardest to predict): {source}")

    def default_sentence(self) -> str:
        """The chapter's heatmap sentence if the model knows its characters, else the first
        line of the run's analysis text."""
        if not self.vocab.unknown(A.SPEC_SENTENCE):
            return A.SPEC_SENTENCE
        ids, _ = self._text()
        first = next((ln for ln in self.vocab.decode(ids[:500]).split("\n") if ln.strip()), "")
        return first[:60]

    def heatmap(self, text: str | None = None, layer: int = -1, state: str = "h",
                sort: str = "cluster", max_units: int = 128, oov: str = "error"):
        """Hidden (or cell) state of one layer while reading `text`: units x characters (a Figure).
        A recurrent model's; a transformer has no units, and run.attention draws what it reads."""
        hm = N.heatmap(self.net, self.vocab, text or self.default_sentence(), layer, state, sort,
                       max_units, oov)
        return heatmap_figure(hm)

    def attention(self, text: str | None = None, layer: int | None = None, oov: str = "error"):
        """A transformer's heatmap: its attention weights while reading `text` (at most its
        context; a longer text is cut, and the title says so), one panel per layer (None: every
        layer; k: layer k alone) and head; row = the character just read, column = an earlier
        character it attends to (a Figure)."""
        ATT.check_transformer(self.net, "run.attention", "run.heatmap(text) and run.neurons()")
        return attention_figure(ATT.attention(self.net, self.vocab, text or self.default_sentence(),
                                              layer, oov, what="text"))

    def samples(self, prime: str | None = None, temperatures=(0.5, 1.0, 1.5), n: int = 200,
                seed: int = 1) -> "Samples":
        """One sample per temperature from the same prime and seed, shown side by side, with the
        mean log-likelihood of each sample's generated characters under the model."""
        if prime is None:
            prime = A.SPEC_PRIME if not self.vocab.unknown(A.SPEC_PRIME) else ""
        return Samples(A.temperature_sweep(self.model, prime, temperatures, n, seed))

    # ------------------------------------------------------------------------- neurons

    def neurons(self, text=None, chars: int = 20_000, top: int = 3, layer: int = -1,
                state: str = "h") -> "Neurons":
        """For each property of the character just read (inside quotes, line start, word start,
        capital...), the `top` units whose activation correlates with it most (Pearson r) over
        the first `chars` characters of `text` (None: the run's analysis text)."""
        ids, source = self._text(text)
        ids = ids[:chars]
        acts = N.layer_states(self.net, ids, layer, state)
        feats = N.text_features(self.vocab.decode(ids))
        return Neurons(N.selective_units(acts, feats, top), len(ids), source)

    def show_unit(self, unit: int, text=None, chars: int = 600, layer: int = -1,
                  state: str = "h", label: str = "") -> HTML:
        """The text coloured by one unit's activation just after each character is read (red
        positive, blue negative); hover a character for the activation and the model's top-5
        guesses for the next one. Without a text: the run's analysis text, from its first line start."""
        ids, source = self._text(text)
        if text is None:
            nl: np.ndarray | list = (np.flatnonzero(ids[:200] == self.vocab.chars.index("\n"))
                                     if "\n" in self.vocab.chars else [])
            ids = ids[nl[0] + 1:] if len(nl) else ids
        ids = ids[:chars]
        acts = N.layer_states(self.net, ids, layer, state)
        if not 0 <= unit < acts.shape[1]:
            raise CharwiseError(f"unit must be in 0..{acts.shape[1] - 1} for this model, got {unit}")
        top, p = N.next_guesses(self.net, ids, 5)
        where = (f"{state} of layer {layer + self.net.cfg.layers if layer < 0 else layer}, "
                 f"{len(ids)} characters of {source}")
        return unit_html(self.vocab.chars, ids, acts[:, unit], top, p, f"{state}[{unit}]",
                         f"Unit {unit}", label, where, scale=1.0 if state == "h" else None)
