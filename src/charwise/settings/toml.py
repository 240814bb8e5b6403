"""`charwise train --config FILE.toml`: reading a config file, merging it with the flags, and
the text of RUN_DIR/config.toml.

A config file is flat TOML whose keys are exactly the `train` flags: every setting of
ModelConfig and TrainConfig plus corpus, out, preset, quiet and init-from (TrainRun; not resume
or force, which replace or continue a run and must be typed on the command line). Keys are
written with dashes like the flags; the Python names with underscores are accepted too.
Relative paths are taken from the file's own directory. Flags given on the command line
override it. Every run directory gets RUN_DIR/config.toml (rundir.write_run_config): the fully
resolved settings with preset = "none", which trains the same run again.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CharwiseError
from ..files import read_utf8
from .options import check_value, config_fields
from .train import NO_PRESET, PRESETS, ModelConfig, TrainConfig, TrainRun

MAX_CONFIG_BYTES = 1 << 20
# TrainRun's keys a file may hold; the others make no sense in a file, with the reason.
_REFUSED = {"resume": "pass --resume on the command line (a resumed run keeps its own settings)",
            "force": "pass --force on the command line (a file never replaces a run by itself)",
            "config": "config files do not include other config files"}
_PATHS = ("corpus", "out", "init_from")


def _settings() -> dict[str, dataclasses.Field]:
    return {f.name: f for cls in (ModelConfig, TrainConfig) for f in config_fields(cls)}


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:             # Python 3.10
        import tomli as tomllib
    text = read_utf8(path, MAX_CONFIG_BYTES, "config file")     # a FIFO or a device: refused
    text = text.removeprefix("\ufeff")          # a BOM (Windows editors): TOML has none
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CharwiseError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:                      # tomllib parses nested arrays recursively
        raise CharwiseError(f"{path}: nested too deeply; a charwise config is flat `key = value` "
                            "lines, one per train flag") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as train() keyword arguments (Python names), validated.

    Usable from Python as `charwise.train(**read_config("run.toml"))`: corpus and out come
    back resolved against the file's directory, quiet stays quiet (train's own name), and
    preset = "none" becomes preset=None (no preset: the dataclass defaults)."""
    path = Path(path)
    raw = _load_toml(path)
    fields = {**{f.name: f for f in dataclasses.fields(TrainRun)}, **_settings()}
    seen: dict[str, str] = {}                   # python name -> the key as written
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            what = "a table" if isinstance(value, dict) else "an array"
            raise CharwiseError(f"{path}: {key!r} is {what}; a charwise config is flat "
                                "`key = value` lines, one per train flag")
        name = key.replace("-", "_")
        if name not in fields:
            spelled = sorted(k.replace("_", "-") for k in fields)
            close = difflib.get_close_matches(key.replace("_", "-"), spelled, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CharwiseError(f"{path}: unknown key {key!r}{hint}; the keys are the flags of "
                                "`charwise train` (see charwise train --help)")
        if name in seen:
            raise CharwiseError(f"{path}: {key!r} is given twice (also as {seen[name]!r})")
        seen[name] = key
        if name in _REFUSED:
            raise CharwiseError(f"{path}: {key!r} is not allowed in a config file; {_REFUSED[name]}")
        out[name] = _check_key(path, key, fields[name], value)
    return _as_train_kwargs(path, out)


def _check_key(path: Path, key: str, f: dataclasses.Field, value: Any) -> Any:
    run_key = f.name in {g.name for g in dataclasses.fields(TrainRun)}
    if f.name == "preset" and value not in (*PRESETS, NO_PRESET):
        raise CharwiseError(f"{path}: preset must be one of {', '.join(PRESETS)} or "
                            f"{NO_PRESET!r}; got {value!r}")
    if f.name in _PATHS and isinstance(value, str) and not value.strip():
        raise CharwiseError(f"{path}: {key!r} must not be empty")
    try:                                # name the key as written (a run key in quotes)
        return check_value(f, value, label=repr(key) if run_key else key)
    except CharwiseError as e:
        raise CharwiseError(f"{path}: {e}") from None


def _as_train_kwargs(path: Path, values: dict) -> dict:
    kw = dict(values)
    for k in _PATHS:
        if k == "init_from" and kw.get(k) == "base":
            continue                        # the bundled model's name, not a path
        if k in kw:
            kw[k] = os.path.normpath(path.parent / Path(kw[k]).expanduser())
    if "preset" in kw and kw["preset"] == NO_PRESET:
        kw["preset"] = None
    return kw


def merge_cli(args) -> dict[str, Any]:
    """train() keyword arguments from parsed `charwise train` flags over an optional --config
    file. A setting flag that was not given is None in `args`, so the file's value stands.
    --init-from with --resume is train()'s to refuse (the API needs the check too)."""
    if args.config and args.resume:
        raise CharwiseError("--config and --resume do not mix: a resumed run keeps its own "
                            "settings (only budget flags such as --max-steps may change)")
    kw = read_config(args.config) if args.config else {}
    kw.update({name: getattr(args, name) for name in _settings() if getattr(args, name) is not None})
    for name in ("corpus", "init_from"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    kw["out"] = args.out or kw.get("out") or "runs/latest"
    if args.preset is not None:
        kw["preset"] = None if args.preset == NO_PRESET else args.preset
    elif "preset" not in kw:
        kw["preset"] = None if args.resume else "auto"
    kw["force"] = bool(args.force)          # typed here only: a config file cannot carry it
    if args.quiet:
        kw["quiet"] = True
    return kw


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)                  # finite (checked): repr is valid TOML, e.g. 1e-05
    # A JSON string is a valid TOML basic string (same escapes), non-ASCII kept as is.
    return json.dumps(str(v), ensure_ascii=False)


def config_text(info: dict, bundled_corpus: Path | None = None) -> str:
    """The resolved settings of a run (its run.json `info`) as a config file; a run on
    `bundled_corpus` (the package's own text) leaves corpus unset."""
    lines = [f"# charwise {info.get('charwise_version', '')} run settings, fully resolved.",
             "# Train the same run again:  charwise train --config THIS_FILE --out NEW_DIR",
             "# Keys are the `charwise train` flags; flags given on the command line win.", ""]
    corpus = info.get("corpus", {})
    source = corpus.get("source")
    if source and (bundled_corpus is None or Path(source).resolve() != bundled_corpus.resolve()):
        lines.append(f"corpus = {_toml_value(str(Path(source).resolve()))}")
        lines.append(f"# corpus sha256 {corpus.get('sha256', '?')}, {corpus.get('chars', '?')} chars")
    else:
        lines.append("# corpus: not set, so the bundled corpus")
    start = info.get("init_from")
    if start:
        name = start["name"] if start["name"] == "base" else start.get("path", start["name"])
        lines.append(f"init-from = {_toml_value(name)}")
        lines.append(f"# weights sha256 {start.get('sha256', '?')}")
    lines.append(f'preset = "{NO_PRESET}"    # every setting is below; no preset fills anything in')
    for cls, key, title in ((ModelConfig, "model", "model"), (TrainConfig, "train", "training")):
        lines += ["", f"# {title} settings"]
        saved = info.get(key, {})
        for f in config_fields(cls):
            value = saved.get(f.name, f.default)
            setting = "# " + f.name.replace("_", "-") + " = (not set)" if value is None else \
                f"{f.name.replace('_', '-')} = {_toml_value(value)}"
            lines.append(setting.ljust(34) + f"# {f.metadata['help']}")
    return "\n".join(lines) + "\n"
