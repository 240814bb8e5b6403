"""Command line: the parser, built from commands.COMMANDS, and `main`.

Every flag is generated from a dataclass field -- train's settings from settings/train.py,
every other subcommand's options from settings/options.py -- so its name, default, help text
and choices have one declaration. Each command's `run` (commands.py) builds the options object
from the parsed flags and calls the API function, which checks it: `charwise sample RUN -n -1`
and `charwise.sample(RUN, n=-1)` fail with the same message. Errors are one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from typing import Any

from ._version import __version__
from .commands import BY_NAME, COMMANDS, Command
from .errors import CharwiseError, CharwiseWarning
from .settings.commands import Options
from .settings.options import config_fields, flag_name, kind
from .settings.train import ModelConfig, TrainConfig, preset_values

EXAMPLES = """examples:
  charwise demo                                   # the chapter's whole pipeline in < 1 minute
  charwise train --out runs/pp                    # bundled corpus, spec model
  charwise train input.txt --preset small --max-time 180 --out runs/shk
  charwise prepare books/ --out data/books        # huge or many files: encode once, then
  charwise train data/books --preset small        #   training memory-maps the tokens
  charwise sample runs/shk --prime "ROMEO:" -n 300 --temperature 0.8
  charwise eval runs/shk held_out.txt
  charwise analyze runs/shk --out runs/shk/analysis   # per-char loss, heatmap, neurons, report.html
  charwise train --config configs/shakespeare.toml --max-time 60   # a TOML file, flags override
  charwise info runs/shk                          # config, parameters, vocabulary, best loss
  charwise export runs/shk --format onnx          # runs/shk/model.onnx for onnxruntime
  charwise export runs/shk --format web --quantize int8   # one HTML page, runs in any browser
  charwise serve runs/shk                         # playground page on http://127.0.0.1:8000/
  charwise pack runs/shk -o shk.charwise          # one file to share; sample/eval/serve take it
"""


def _number(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value
    return parse


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def option_help(f: dataclasses.Field, note: str = "", switch_default: bool = False) -> str:
    """A field's documentation with its default (a switch's only when asked: it is off)."""
    text = f.metadata["help"]
    if switch_default or kind(f).base is not bool:
        text += f" (default: {f.metadata.get('shown', _shown(f.default))}{note})"
    return text.replace("%", "%%")          # argparse formats help with %


def _argument(f: dataclasses.Field, note: str = "", unset: bool = False,
              checked: bool = False) -> dict[str, Any]:
    """add_argument's keywords for a field. unset: the default is None ("not given"), and a
    switch has a --no- form, so that a config file's value stands unless a flag overrides it.
    checked: the options object checks the choices (argparse only shows them), so a bad choice
    gets the dataclass's message, as from the API."""
    m, k = f.metadata, kind(f)
    kw: dict[str, Any] = {"default": None if unset else f.default,
                          "help": option_help(f, note, switch_default=unset)}
    if "positional" not in m:
        kw["dest"] = f.name
    if k.base is bool:
        kw["action"] = argparse.BooleanOptionalAction if unset else "store_true"
        return kw
    kw["type"] = _number(int) if k.base is int else _number(float) if k.base is float else str
    kw.update({key: m[key] for key in ("choices", "metavar") if key in m})
    if checked and "choices" in m:
        kw["metavar"] = "{" + ",".join(kw.pop("choices")) + "}"
    if m.get("append"):
        kw["action"] = "append"
    elif k.many:
        kw["nargs"] = "+"
    if "positional" in m:
        kw["nargs"] = m["positional"]
    return kw


def add_option_flags(parser, cls) -> None:
    """One flag (or positional argument) per field of the dataclass `cls`."""
    for f in dataclasses.fields(cls):
        name = f.name if "positional" in f.metadata else flag_name(f)
        parser.add_argument(name, **_argument(f, checked=issubclass(cls, Options)))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    for cls, title in ((ModelConfig, "model"), (TrainConfig, "training")):
        group = parser.add_argument_group(f"{title} settings (override the preset)")
        for f in config_fields(cls):
            values = preset_values(f.name)
            group.add_argument(flag_name(f), **_argument(f, f"; presets: {values}" if values else "",
                                                          unset=True))


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (plus exit 2), like every other charwise error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="charwise", description="Train character-level language models, "
                      "sample from them, and see what they learned.", epilog=EXAMPLES,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"charwise {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        add_command(sub, command)
    return p


def add_command(sub, c: Command) -> argparse.ArgumentParser:
    """One subcommand's parser: its arguments, then a flag per field of its options dataclass
    (train: then its settings' flags, in groups)."""
    extra: dict[str, Any] = {"description": c.description} if c.description else {}
    if c.epilog:                    # examples: shown as written, not re-wrapped
        extra.update(epilog=c.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = sub.add_parser(c.name, help=c.help, **extra)
    for a in c.args:
        p.add_argument(*a.names, **a.kw)
    if c.options is not None:
        add_option_flags(p, c.options)
    if c.config_flags:
        add_config_flags(p)
    return p


def _one_line_warnings() -> None:
    """A CharwiseWarning (a font to install, say) as one line, like the errors:
    charwise: warning: ...; other warnings as Python shows them."""
    plain = warnings.formatwarning
    if getattr(plain, "charwise", False):
        return

    def fmt(message, category, filename, lineno, line=None):
        if issubclass(category, CharwiseWarning):
            return f"charwise: warning: {message}\n"
        return plain(message, category, filename, lineno, line)
    fmt.charwise = True                                 # type: ignore[attr-defined]
    warnings.formatwarning = fmt


def path_arguments(c: Command) -> dict[str, str]:
    """The command's arguments that are paths: attribute -> the name the user typed (RUN_DIR,
    --out)."""
    names = {a.kw.get("dest", a.names[-1].lstrip("-").replace("-", "_")):
             a.names[-1] if a.names[0].startswith("-") else a.names[0].upper()
             for a in c.args if a.path}
    if c.options is not None:
        names.update({f.name: f.name.upper() if "positional" in f.metadata else flag_name(f)
                      for f in dataclasses.fields(c.options) if f.metadata.get("path")})
    return names


def check_paths(args: argparse.Namespace) -> None:
    """An empty path (`--out "$OUT"` with OUT unset) is refused: read as a path it is ".", the
    current directory, and an empty --out would be the default."""
    for attr, name in path_arguments(BY_NAME[args.command]).items():
        v = getattr(args, attr, None)
        if v == "" or (isinstance(v, list) and "" in v):
            raise CharwiseError(f"{name}: an empty path (an unset shell variable?); give a path")


def main(argv: list[str] | None = None) -> int:
    _one_line_warnings()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                 # --help, --version, usage errors: argparse's codes
        return e.code if isinstance(e.code, int) else 2
    try:
        check_paths(args)
        c = BY_NAME[args.command]
        return c.run(args, c.call)
    except CharwiseError as e:
        print(f"charwise: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("charwise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()                  # `charwise sample ... | head`: not an error
        return 0
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"charwise: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
