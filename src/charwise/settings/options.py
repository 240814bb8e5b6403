"""How a setting is declared and checked, for every command: `_f` declares a dataclass field
(its help, default, bounds, choices), `kind` parses its declared type (in this one place),
`check_value` checks a value and names the flag (or a config file's key); each command's options
are dataclasses of such fields (commands.py; train's settings are train.py's). The limits
every command shares (MAX_SEED, MAX_BEAM, LN2, ...) are declared here, once. This module imports no torch (`charwise
--help` stays fast), and of charwise only errors and the export formats' table.
"""
from __future__ import annotations

import codecs
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import CharwiseError

# ----------------------------------------------------------------------------- declaring settings

def _f(default, help: str, **meta):
    """A setting: default, documentation and checks (choices, min, exclusive_min, max, pattern,
    text_encoding).
    Presentation: flag (its name when not --the-name), shown (the default as --help says it),
    metavar, append (a repeatable flag), positional (an argument's nargs), path (a file or
    directory: the CLI refuses an empty one)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Kind:
    """A setting's declared type: int, float, str or bool; None allowed; a tuple of them."""
    base: type
    optional: bool
    many: bool


@functools.lru_cache(maxsize=None)
def _parse_type(annotation: str) -> Kind:
    parts = [p.strip() for p in annotation.split("|")]
    head, many = parts[0], parts[0].startswith("tuple[")
    if many:
        head = head[len("tuple["):].split(",")[0].strip()
    base = {"int": int, "float": float, "str": str, "bool": bool}.get(head)
    if base is None:
        raise TypeError(f"unsupported setting type {annotation!r}")
    return Kind(base, "None" in parts, many)


def kind(f: dataclasses.Field) -> Kind:
    """The declared type of a setting (annotations are strings here), parsed in one place."""
    return _parse_type(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)))


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_value(f: dataclasses.Field, value: Any, label: str | None = None) -> Any:
    """Validate one setting against its declared type and checks; raise CharwiseError naming it
    (as `label`: the flag by default, a config file's key as written there)."""
    label = label or flag_name(f)
    k = kind(f)
    if value is None:
        if k.optional or f.default is None:
            return None
        raise CharwiseError(f"{label} must be given a value")
    if not k.many:
        return _check_one(f, k.base, value, label)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise CharwiseError(f"{label} must be a list of values, got {shown_value(value)}")
    if not value:
        raise CharwiseError(f"{label} needs at least one value")
    return tuple(_check_one(f, k.base, v, label) for v in value)


def _check_one(f: dataclasses.Field, base: type, value: Any, label: str) -> Any:
    if base is bool:                    # on/off switches (e.g. --tensorboard)
        if not isinstance(value, bool):
            raise CharwiseError(f"{label} must be true or false, got {shown_value(value)}")
        return value
    if isinstance(value, bool):         # bool is an int to Python, never a setting's number
        raise CharwiseError(f"{label} must be {'a string' if base is str else 'a number'}, "
                            f"not {shown_value(value)}")
    if base is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise CharwiseError(f"{label} must be an integer, got {shown_value(value)}")
    elif base is float:
        if not isinstance(value, (int, float)):
            raise CharwiseError(f"{label} must be a number, got {shown_value(value)}")
        try:
            value = float(value)
        except OverflowError:           # an int beyond float's range: not a finite number
            raise CharwiseError(f"{label} must be a finite number, got {shown_value(value)}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise CharwiseError(f"{label} must be a finite number, got {shown_value(value)}")
    elif not isinstance(value, str):
        raise CharwiseError(f"{label} must be a string, got {shown_value(value)}")
    _check_bounds(f.metadata, value, label, base)
    return value


def shown_value(value: Any) -> str:
    """A value as an error message shows it: its repr, at most 60 characters, an integer of
    30 digits or more by its length (a flag, a config file or an HTTP request may hold any)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:                      # beyond Python's int_max_str_digits
            return "an integer of thousands of digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_bounds(m, value: Any, label: str, base: type) -> None:
    if "choices" in m and value not in m["choices"]:
        raise CharwiseError(f"{label} must be one of {', '.join(m['choices'])}; got {shown_value(value)}")
    if m.get("text_encoding"):
        check_encoding(value, label)
    if "pattern" in m and not re.fullmatch(m["pattern"], value):
        raise CharwiseError(f"{label} must be {m['pattern_text']}, got {shown_value(value)}")
    if base is int and "min" in m and "max" in m and not m["min"] <= value <= m["max"]:
        raise CharwiseError(f"{label} must be in {m['min']}..{m['max']}, got {shown_value(value)}")
    if "min" in m and (value < m["min"] or (m.get("exclusive_min") and value == m["min"])):
        op = ">" if m.get("exclusive_min") else ">="
        raise CharwiseError(f"{label} must be {op} {m['min']}, got {shown_value(value)}")
    if "max" in m and value > m["max"]:
        raise CharwiseError(f"{label} must be <= {m['max']}, got {shown_value(value)}")


def check_encoding(name: str, label: str = "--encoding") -> str:
    """`name` if it is a text encoding (bytes <-> text) Python knows, else a one-line error.
    codecs also holds bytes-to-bytes and text-to-text codecs (base64, hex, zlib_codec, rot13):
    decoding a file with one is a TypeError deep inside, so they are refused here."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise CharwiseError(f"{label}: unknown text encoding {name!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise CharwiseError(f"{label}: {name!r} is not a text encoding (it converts bytes to "
                            "bytes or text to text); give one such as utf-8, latin-1 or cp1252")
    return name


def config_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def build(cls, values: dict[str, Any]):
    """Make a validated `cls` from a dict; unknown keys are an error that names them."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CharwiseError(f"unknown setting(s) for {cls.__name__}: {', '.join(unknown)}")
    checked = {k: (check_value(known[k], v) if known[k].metadata.get("cli", True) else v)
               for k, v in values.items()}
    return cls(**checked)



# ----------------------------------------------------------------------------- options of a subcommand

PRECISIONS = ("auto", "fp32", "bf16")
MAX_SEED = 2 ** 63 - 1                     # every seed (train, sample, analyze, serve): an int64
# A sampling temperature below this is greedy (argmax), in every sampling path (sampler.draw and
# filter_probs, so sample, analyze, serve and the web page): dividing float32 logits by less
# can overflow to inf, and inf - inf is NaN (5e-324 gave NaN probabilities and always id 0).
GREEDY_BELOW = 1e-4
DEVICES = r"auto|cpu|cuda(:\d+)?"          # what --device accepts (a regular expression)
MAX_BEAM = 64
# More sampling limits, for every path (sample, serve, analyze, the API; SamplingParams checks)
DEFAULT_TEMPERATURE = 1.0                  # when none is given (the CLI's, the API's, serve's)
MAX_SAMPLES = 4096                         # streams of one call (--num-samples)
MAX_CHARS = 10_000_000                     # characters (or line-mode items) of one call
SAMPLE_PRECISIONS = ("fp32", "int8")       # the sampling step's arithmetic (generation.steps)
LN2 = math.log(2)                          # nats per bit: every bits/char and bits/item


# Options several subcommands share, declared once (each call makes a fresh field).

def which_opt():
    return _f("best", "which weights: the best evaluated (best) or the last saved (last)",
              choices=("best", "last"))


def oov_opt(what: str = "characters"):
    return _f("error", f"{what} outside the vocabulary: error, or skip them",
              choices=("error", "skip"))


def encoding_opt(what: str):
    return _f("utf-8", f"text encoding of {what}", text_encoding=True)


def seed_opt(default: int | None, help: str = "random seed (repeatable output)"):
    return _f(default, help, min=0, max=MAX_SEED)


def threads_opt():
    return _f(None, "CPU threads; a count above the CPUs available is capped", min=1,
              shown="measured as it runs: one, or all this process may use, whichever is faster")


def device_opt(help: str = "where the model runs: cpu, cuda, cuda:N (that GPU), or auto (a CUDA "
                             "GPU when there is one)"):
    return _f("cpu", help, pattern=DEVICES, pattern_text="auto, cpu, cuda or cuda:N")


def precision_opt():
    return _f("auto", "arithmetic of the scoring pass: auto = the precision the run trained in "
              "(run.json) where this device runs it natively, else what training would pick "
              "here (bf16 on CPUs with fast bf16, from 256 units); fp32; or bf16",
              choices=PRECISIONS)


def force_out_opt():
    return _f(False, "replace an existing --out file (never a run's own file or a non-regular file)")
