"""How text is drawn: `SamplingParams`, checked once, here, whoever asks for text.

`charwise sample` (its SampleOptions), the Python API (`charwise.sample`, `CharModel.generate`,
`stream`, `steps`, `items`, `beam`), `charwise serve` (a JSON request) and the pages' defaults all
go through this one frozen dataclass. Its fields are SampleOptions's sampling fields, with their
defaults, documentation and bounds as declared there (the CLI's flags): a value is checked by
that declaration's check (settings.options.check_value), so a bad one gets the same one-line
CharwiseError naming the flag from every entry (serve rewrites the flag as its JSON field). The
rules between fields (beam search does not sample) and the limits beyond one field's
(MAX_CHARS) are here too. What is not about drawing stays with each call: the prime and its
out-of-vocabulary rule, threads, the step's precision, the device.
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CharwiseError
from ..settings.commands import SampleOptions
from ..settings.options import DEFAULT_TEMPERATURE, MAX_CHARS, check_value
from .stops import parse_escapes, parse_stops

# SampleOptions's fields, the one declaration of each sampling setting
DECLARED = {f.name: f for f in dataclasses.fields(SampleOptions)}


def _declared(name: str) -> Any:
    """A field whose default is SampleOptions's `name` default (declared there, once)."""
    return dataclasses.field(default=DECLARED[name].default)


@dataclass(frozen=True)
class SamplingParams:
    """What to draw: n characters (items, for a line-mode model) per sample, with temperature
    (None: not given, so DEFAULT_TEMPERATURE; beam search refuses a given one), top-k, top-p
    and seed; num_samples independent samples; stop strings (a string or several, real
    characters: SampleOptions's --stop text goes through `from_options`, which reads its
    escapes); beam search of width `beam` instead of sampling; new_only (line mode: items
    that are not lines of the training text). Checked when made: a bad value or combination
    is a one-line CharwiseError."""
    n: int = _declared("n")
    temperature: float | None = _declared("temperature")
    top_k: int | None = _declared("top_k")
    top_p: float | None = _declared("top_p")
    seed: int | None = _declared("seed")
    num_samples: int = _declared("num_samples")
    stop: str | Sequence[str] | None = _declared("stop")      # a tuple of strings once checked
    keep_stop: bool = _declared("keep_stop")
    beam: int | None = _declared("beam")
    new_only: bool = _declared("new_only")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "stop":
                value = parse_stops(value, escapes=False)
            else:
                if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                    value = int(value)                  # a NumPy integer is an integer
                value = check_value(DECLARED[f.name], value)
            object.__setattr__(self, f.name, value)
        if self.n > MAX_CHARS:
            raise CharwiseError(f"-n {self.n} is too large (at most {MAX_CHARS:,} characters per call)")
        if self.beam is not None:
            check_beam(self.beam, temperature_given=self.temperature is not None, top_k=self.top_k,
                       top_p=self.top_p)
            if self.stops or self.new_only or self.num_samples != 1:
                raise CharwiseError("--beam returns the K likeliest texts: it does not combine with "
                                    "--stop, --new-only or --num-samples")

    @classmethod
    def from_options(cls, o: SampleOptions) -> SamplingParams:
        """The sampling part of `charwise sample`'s options; its stop strings are the CLI's text,
        so their backslash escapes ("\\n\\n") are read here."""
        given = {name: getattr(o, name) for name in FIELDS}
        given["stop"] = None if o.stop is None else tuple(parse_escapes(s) for s in o.stop)
        return cls(**given)

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop strings, checked (`stop` as a tuple)."""
        assert isinstance(self.stop, tuple)
        return self.stop

    @property
    def effective_temperature(self) -> float:
        """The temperature the draws use: the one given, else DEFAULT_TEMPERATURE."""
        return DEFAULT_TEMPERATURE if self.temperature is None else float(self.temperature)


FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


def check_beam(width: Any, *, temperature_given: bool = False, top_k: int | None = None,
               top_p: float | None = None) -> int:
    """A beam width SampleOptions's --beam allows (1..MAX_BEAM), or a one-line error; beam
    search picks the likeliest texts, so a temperature given, top-k or top-p is refused."""
    width = check_value(DECLARED["beam"], width)
    if width is None:
        raise CharwiseError("--beam must be given a width")
    used = [name for name, on in (("--temperature", temperature_given), ("--top-k", top_k is not None),
                                  ("--top-p", top_p is not None)) if on]
    if used:
        raise CharwiseError(f"--beam finds the most likely texts and does not sample: drop "
                            f"{' and '.join(used)}")
    return int(width)


def page_defaults(max_chars: int | None = None) -> dict:
    """The sampling defaults a page's controls start from (serve's playground, the web export):
    SamplingParams's, top-p 1 standing for "off"; n at most `max_chars` when given."""
    d = SamplingParams()
    n = d.n if max_chars is None else min(d.n, max_chars)
    return {"n": n, "temperature": d.effective_temperature, "top_p": 1.0 if d.top_p is None else d.top_p,
            "top_k": d.top_k}
