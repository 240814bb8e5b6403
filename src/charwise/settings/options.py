"""Every subcommand's options, declared once as frozen dataclasses (train's are in train.py).

A field's metadata holds its documentation and its checks. The CLI makes each field a flag with
that name, default, help and choices (cli.add_option_flags); the Python API takes the same names
as keyword arguments (`charwise.sample("runs/x", n=100)`). Both build the same dataclass, and
the checks run when it is made, so a bad value gets the same one-line CharwiseError from either.
Paths (the run directory, a text file, --out) are the functions' own arguments, not options.

The machinery is here too, below train.py, which declares train's settings with it: `_f`
declares a field, `kind` parses its declared type (in this one place), `check_value` checks a
value and names the flag (or a config file's key). This module imports no torch (`charwise
--help` stays fast), and of charwise only errors and the export formats' table.
"""
from __future__ import annotations

import codecs
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..cells import NAMES as CELL_NAMES
from ..errors import CharwiseError
from ..exporting.formats import DEFAULT_MAX_LOSS_INCREASE, FORMATS, QUANTIZE

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

T = TypeVar("T", bound="Options")

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


class Options:
    """Base of the subcommands' options: every field is checked when an instance is made (from
    flags or from Python), then `check` applies the rules between fields."""

    command: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, check_value(f, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Rules between options, as one-line CharwiseErrors (none by default)."""

    @classmethod
    def make(cls: type[T], options: T | None = None, **kw: Any) -> T:
        """The options of an API call: `options` (or the defaults) with `kw` replaced, checked."""
        if options is not None and not isinstance(options, cls):
            raise CharwiseError(f"options must be a {cls.__name__}, got {type(options).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(kw) - set(names))
        if unknown:
            raise CharwiseError(f"unknown option(s) for {cls.command}: {', '.join(unknown)} "
                                f"(the options are {', '.join(names) or 'none'})")
        return dataclasses.replace(options, **kw) if options is not None else cls(**kw)  # type: ignore[type-var]

    @classmethod
    def from_args(cls: type[T], args: Any) -> T:
        """The options from parsed flags (an argparse Namespace)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


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


# ----------------------------------------------------------------------------- subcommands

@dataclass(frozen=True)
class PrepareOptions(Options):
    command: ClassVar[str] = "prepare"
    separator: str = _f("\n\n", "text between documents; \\n \\t \\r \\\\ escapes are understood",
                        shown="\\n\\n, a blank line")
    encoding: str = encoding_opt("the inputs")
    force: bool = _f(False, "replace a prepared corpus in --out")


@dataclass(frozen=True)
class SampleOptions(Options):
    command: ClassVar[str] = "sample"
    prime: str = _f("", "text to start from")
    n: int = _f(500, "characters to generate; items for a --line-mode run", min=0, flag="-n")
    temperature: float | None = _f(None, f"softmax temperature; 0 (or below {GREEDY_BELOW:g}) = "
                                   "greedy", min=0.0, shown=str(DEFAULT_TEMPERATURE))
    top_k: int | None = _f(None, "sample from the k likeliest only", min=1)
    top_p: float | None = _f(None, "nucleus sampling: the smallest set of likeliest characters "
                             "holding this much probability, in (0, 1]", min=0.0,
                             exclusive_min=True, max=1.0)
    seed: int | None = seed_opt(None)
    num_samples: int = _f(1, "independent samples", min=1, max=MAX_SAMPLES)
    oov: str = oov_opt("prime characters")
    which: str = which_opt()
    threads: int | None = threads_opt()
    stop: tuple[str, ...] | None = _f(None, 'end each sample at the first occurrence of TEXT '
                                      '(repeatable; escapes such as "\\n\\n" understood); the stop '
                                      "string itself is not printed", append=True, metavar="TEXT")
    keep_stop: bool = _f(False, "print the stop string that ended a sample")
    beam: int | None = _f(None, "beam search: the K most likely continuations of -n symbols with "
                          "their log-probabilities, instead of sampling", min=1, max=MAX_BEAM,
                          metavar="K")
    new_only: bool = _f(False, "line mode: drop items that are lines of the training text (and "
                        "say how many were new)")
    # What "a seed repeats the text" may promise: the draws compare uniforms with cumulative
    # probabilities, so logits differing in their last bits can flip one. On the CPU the fused
    # NumPy step and the module path give the same text (tests); with a model on a GPU, one
    # stream steps in NumPy (OpenBLAS, CPU copies of the weights) and several in cuBLAS, whose
    # sums round differently, and another machine's BLAS may too.
    precision: str = _f("fp32", "fp32: IEEE fp32; a seed repeats the text on the same machine "
                        "and device (with a model on a GPU, one stream samples on the CPU and "
                        "several on the GPU: their last bits differ and can flip a draw); int8: "
                        "LSTMs on an x86 CPU with AVX-512 VNNI, int8 recurrent weights, faster, greedy text and "
                        "sample loss close to fp32's but not identical", choices=SAMPLE_PRECISIONS)
    device: str = device_opt()


@dataclass(frozen=True)
class EvalOptions(Options):
    command: ClassVar[str] = "eval"
    oov: str = oov_opt()
    encoding: str = encoding_opt("the text file")
    precision: str = precision_opt()
    threads: int | None = threads_opt()
    device: str = device_opt()


@dataclass(frozen=True)
class AnalyzeOptions(Options):
    command: ClassVar[str] = "analyze"
    oov: str = oov_opt()
    encoding: str = encoding_opt("the text file")
    text: str | None = _f(None, "sentence for the hidden-state heatmap",
                          shown='the chapter\'s "Mr Bennet replied that he had not." if the '
                                "vocabulary allows")
    state: str = _f("h", "hidden state h or LSTM cell state c (heatmap and neuron view)",
                    choices=("h", "c"))
    layer: int = _f(-1, "layer, 0 = first; -1 = the top")
    sort: str = _f("cluster", "heatmap row order: cluster puts similar units together",
                   choices=("cluster", "variance", "none"))
    max_units: int = _f(128, "heatmap rows: the most variable units beyond this are left out", min=1)
    unit: int | None = _f(None, "also colour the neuron view by this unit")
    neuron_chars: int = _f(1000, "characters of text in the neuron view", min=1)
    temperatures: tuple[float, ...] = _f((0.5, 1.0, 1.5), "sampling temperatures", min=0.0)
    prime: str | None = _f(None, "prime for the samples", shown='"Mr Bennet" if possible')
    n: int = _f(200, "characters per sample", min=1, flag="-n")
    seed: int = seed_opt(1, "sampling seed")
    which: str = which_opt()
    precision: str = precision_opt()
    threads: int | None = threads_opt()
    device: str = device_opt()
    force: bool = _f(False, "replace an earlier analysis's files in --out (never another run's "
                     "files or a non-regular file)")


@dataclass(frozen=True)
class ExportOptions(Options):
    command: ClassVar[str] = "export"
    format: str = _f("onnx", "onnx, or web: one self-contained HTML page that runs the model in "
                     "any browser, offline", choices=tuple(FORMATS))
    which: str = which_opt()
    quantize: str = _f("none", "weights as float16 or int8 with per-row scales (none = float32); "
                       "the loss change is checked on the validation split (or --text)",
                       choices=QUANTIZE)
    text: str | None = _f(None, "check a quantized export's loss on this text file",
                          metavar="FILE", shown="the run's validation split", path=True)
    max_loss_increase: float | None = _f(None, "refuse a quantized export whose loss rises more "
                                         "than this, in nats/char", metavar="NATS",
                                         shown=f"{DEFAULT_MAX_LOSS_INCREASE:g}")
    force: bool = force_out_opt()
    device: str = device_opt("the export runs on the CPU (the graph and the page it writes do not "
                             "depend on the device): cpu, or auto")

    def check(self) -> None:
        if self.device.startswith("cuda"):
            raise CharwiseError(f"charwise export runs on the CPU (the exported graph and page do "
                                f"not depend on the device): --device must be cpu or auto, got "
                                f"{self.device!r}")
        takes = FORMATS[self.format].quantize
        if self.quantize not in takes:
            raise CharwiseError(f"--format {self.format} takes --quantize {', '.join(takes)}; "
                                f"got {self.quantize!r}")


@dataclass(frozen=True)
class ServeOptions(Options):
    command: ClassVar[str] = "serve"
    host: str = _f("127.0.0.1", "address to listen on (127.0.0.1: this machine only)",
                   pattern=r"\S+", pattern_text="a host name or address, not empty")
    port: int = _f(8000, "TCP port", min=0, max=65535)
    which: str = which_opt()
    max_chars: int = _f(2000, "most characters one request may generate", min=1)
    max_concurrent: int = _f(4, "generations running at once; more get HTTP 429", min=1)
    threads: int | None = threads_opt()
    device: str = device_opt()


@dataclass(frozen=True)
class PackOptions(Options):
    command: ClassVar[str] = "pack"
    which: str = which_opt()
    force: bool = force_out_opt()


@dataclass(frozen=True)
class PlotOptions(Options):
    command: ClassVar[str] = "plot"
    window: int = _f(10, "moving-average window in steps (10, as in the chapter)", min=1)
    force: bool = force_out_opt()


@dataclass(frozen=True)
class GradcheckOptions(Options):
    command: ClassVar[str] = "gradcheck"
    cell: str = _f("lstm", "recurrent cell", choices=CELL_NAMES)
    layers: int = _f(1, "stacked layers", min=1)
    vocab: int = _f(7, "vocabulary size V", min=1)
    embed: int = _f(5, "embedding size E", min=1)
    hidden: int = _f(6, "hidden size H", min=1)
    batch: int = _f(2, "streams B", min=1)
    seq: int = _f(4, "window T", min=1)
    max_entries: int | None = _f(None, "check a random sample of this many entries per array",
                                 min=1, shown="all")
    seed: int = seed_opt(0, "random seed of the model and data")


ALL: tuple[type[Options], ...] = (PrepareOptions, SampleOptions, EvalOptions, AnalyzeOptions,
                                  ExportOptions, ServeOptions, PackOptions, PlotOptions,
                                  GradcheckOptions)
