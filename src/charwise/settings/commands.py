"""Each subcommand's options but train's (train.py), declared once as frozen dataclasses.

A field's metadata holds its documentation and its checks. The CLI makes each field a flag with
that name, default, help and choices; the Python API takes the same names as keyword arguments
(`charwise.sample("runs/x", n=100)`). Both build the same dataclass, and the checks run when it
is made, so a bad value gets the same one-line CharwiseError from either. Paths (the run
directory, a text file, --out) are the functions' own arguments, not options. How a field is
declared and checked is options.py's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..cells import RECURRENT
from ..errors import CharwiseError
from ..exporting.formats import DEFAULT_MAX_LOSS_INCREASE, FORMATS, QUANTIZE
from .options import (
    DEFAULT_TEMPERATURE,
    GREEDY_BELOW,
    MAX_BEAM,
    MAX_SAMPLES,
    SAMPLE_PRECISIONS,
    _f,
    check_value,
    device_opt,
    encoding_opt,
    force_out_opt,
    oov_opt,
    precision_opt,
    seed_opt,
    threads_opt,
    which_opt,
)

T = TypeVar("T", bound="Options")


# Options lives beside its subclasses, not in options.py: an instance is made by the dataclass's
# own __init__ (this module's), which calls __post_init__, so a value checked while the options
# are made goes down from here to options.py and never climbs back (tests/test_params.py).
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


@dataclass(frozen=True)
class PrepareOptions(Options):
    command: ClassVar[str] = "prepare"
    separator: str = _f("\n\n", "text between documents; backslash escapes as in a Python string "
                        "(\\n, \\t, \\\\, \\xHH, ...; an unknown one is refused)",
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
    new_only: bool = _f(False, "line mode: drop items that are lines of the training text, or "
                        "empty (and say how many were new)")
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
    text: str | None = _f(None, "sentence for the hidden-state heatmap (a transformer: for its "
                          "attention maps, at most its context)",
                          shown='the chapter\'s "Mr Bennet replied that he had not." if the '
                                "vocabulary allows")
    state: str = _f("h", "hidden state h or LSTM cell state c (heatmap and neuron view; "
                    "recurrent cells)", choices=("h", "c"))
    layer: int | None = _f(None, "layer, 0 = first; -1 = the top",
                           shown="the top; a transformer: every layer's attention")
    sort: str = _f("cluster", "heatmap row order: cluster puts similar units together "
                   "(recurrent cells)", choices=("cluster", "variance", "none"))
    max_units: int = _f(128, "heatmap rows: the most variable units beyond this are left out "
                        "(recurrent cells)", min=1)
    unit: int | None = _f(None, "also colour the neuron view by this unit (recurrent cells)")
    neuron_chars: int = _f(1000, "characters of text in the neuron view (recurrent cells)", min=1)
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
                                         "than this, in nats/char", metavar="NATS", min=0.0,
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
    cell: str = _f("lstm", "recurrent cell (the NumPy engine has no transformer)", choices=RECURRENT)
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
