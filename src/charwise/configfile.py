"""Config files: `charwise train --config run.toml`.

A config file is flat TOML whose keys are exactly the `train` flags: every setting declared in
config.py (hidden-size, lr, max-time, tensorboard, ...) plus corpus, out, preset, force and
quiet. Keys are written with dashes like the flags; the Python names with underscores are
accepted too. Relative paths (corpus, out) are taken from the config file's own directory, so a
config works whatever the working directory is. Flags given on the command line override it.

Every run directory gets RUN_DIR/config.toml: the fully resolved settings with preset = "none"
(so no preset fills anything in underneath), which trains the same run again with
`charwise train --config RUN_DIR/config.toml --out NEW_DIR`.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from .config import INIT_FROM_AND_RESUME, PRESETS, CharwiseError, ModelConfig, TrainConfig, check_value, config_fields
from .data import bundled_corpus_path
from .rundir import CONFIG_TOML, atomic_write_bytes

MAX_CONFIG_BYTES = 1 << 20
NO_PRESET = "none"

# The train flags that are not settings of ModelConfig/TrainConfig, with their TOML type.
_RUN_KEYS = {"corpus": str, "out": str, "preset": str, "force": bool, "quiet": bool,
             "init_from": str}
# Flags that make no sense in a file, with the reason.
_REFUSED = {"resume": "pass --resume on the command line (a resumed run keeps its own settings)",
            "config": "config files do not include other config files"}


def _fields() -> dict:
    return {f.name: f for cls in (ModelConfig, TrainConfig) for f in config_fields(cls)}


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:             # Python 3.10
        import tomli as tomllib
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CharwiseError(f"{path}: no such config file") from None
    if path.is_dir():
        raise CharwiseError(f"{path}: is a directory, expected a .toml config file")
    if size > MAX_CONFIG_BYTES:
        raise CharwiseError(f"{path}: {size} bytes is too large for a config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CharwiseError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise CharwiseError(f"{path}: not valid TOML ({e})") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as train() keyword arguments (Python names), validated.

    Usable from Python as `charwise.train(**read_config("run.toml"))`: corpus and out come
    back resolved against the file's directory, quiet becomes progress=False, and
    preset = "none" becomes preset=None (no preset: the dataclass defaults)."""
    path = Path(path)
    raw = _load_toml(path)
    fields = _fields()
    known = {**{k: k for k in _RUN_KEYS}, **{k: k for k in _REFUSED}, **{k: k for k in fields}}
    seen: dict[str, str] = {}                   # python name -> the key as written
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            kind = "a table" if isinstance(value, dict) else "an array"
            raise CharwiseError(f"{path}: {key!r} is {kind}; a charwise config is flat "
                                "`key = value` lines, one per train flag")
        name = key.replace("-", "_")
        if name not in known:
            spelled = sorted({k.replace("_", "-") for k in known})
            close = difflib.get_close_matches(key.replace("_", "-"), spelled, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CharwiseError(f"{path}: unknown key {key!r}{hint}; the keys are the flags of "
                                "`charwise train` (see charwise train --help)")
        if name in seen:
            raise CharwiseError(f"{path}: {key!r} is given twice (also as {seen[name]!r})")
        seen[name] = key
        if name in _REFUSED:
            raise CharwiseError(f"{path}: {key!r} is not allowed in a config file; {_REFUSED[name]}")
        out[name] = _check(path, key, name, value, fields)
    return _as_train_kwargs(path, out)


def _check(path: Path, key: str, name: str, value: Any, fields: dict) -> Any:
    if name in _RUN_KEYS:
        kind = _RUN_KEYS[name]
        if not isinstance(value, kind):
            want = "true or false" if kind is bool else "a string"
            raise CharwiseError(f"{path}: {key!r} must be {want}, got {value!r}")
        if name == "preset" and value not in (*PRESETS, NO_PRESET):
            raise CharwiseError(f"{path}: preset must be one of {', '.join(PRESETS)} or "
                                f"{NO_PRESET!r}; got {value!r}")
        if name in ("corpus", "out", "init_from") and not value.strip():
            raise CharwiseError(f"{path}: {key!r} must not be empty")
        return value
    try:
        return check_value(fields[name], value)
    except CharwiseError as e:
        # check_value names the flag ("--hidden-size must be ..."); name the key as written.
        msg, flag = str(e), "--" + name.replace("_", "-")
        if msg.startswith(flag):
            msg = key + msg[len(flag):]
        raise CharwiseError(f"{path}: {msg}") from None


def _as_train_kwargs(path: Path, values: dict) -> dict:
    kw = dict(values)
    base = path.parent
    for k in ("corpus", "out", "init_from"):
        if k == "init_from" and kw.get(k) == "base":
            continue                        # the bundled model's name, not a path
        if k in kw:
            kw[k] = os.path.normpath(base / Path(kw[k]).expanduser())
    if "preset" in kw and kw["preset"] == NO_PRESET:
        kw["preset"] = None
    if kw.pop("quiet", False):
        kw["progress"] = False
    return kw


def merge_cli(args) -> dict[str, Any]:
    """train() keyword arguments from parsed `charwise train` flags over an optional --config
    file. A setting flag that was not given is None in `args`, so the file's value stands."""
    fields = _fields()
    if getattr(args, "config", None) and args.resume:
        raise CharwiseError("--config and --resume do not mix: a resumed run keeps its own "
                            "settings (only budget flags such as --max-steps may change)")
    kw = read_config(args.config) if getattr(args, "config", None) else {}
    if args.resume and (getattr(args, "init_from", None) or kw.get("init_from")):
        raise CharwiseError(INIT_FROM_AND_RESUME)
    kw.update({name: getattr(args, name) for name in fields if getattr(args, name) is not None})
    if args.corpus is not None:
        kw["corpus"] = args.corpus
    if getattr(args, "init_from", None) is not None:
        kw["init_from"] = args.init_from
    kw["out"] = args.out or kw.get("out") or "runs/latest"
    if args.preset is not None:
        kw["preset"] = None if args.preset == NO_PRESET else args.preset
    elif "preset" not in kw:
        kw["preset"] = None if args.resume else "auto"
    kw["force"] = bool(args.force or kw.get("force", False))
    if args.quiet:
        kw["progress"] = False
    return kw


# ----------------------------------------------------------------------------- writing

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)                  # finite (checked): repr is valid TOML, e.g. 1e-05
    # A JSON string is a valid TOML basic string (same escapes), non-ASCII kept as is.
    return json.dumps(str(v), ensure_ascii=False)


def config_text(info: dict) -> str:
    """The resolved settings of a run (its run.json `info`) as a config file."""
    lines = [f"# charwise {info.get('charwise_version', '')} run settings, fully resolved.",
             "# Train the same run again:  charwise train --config THIS_FILE --out NEW_DIR",
             "# Keys are the `charwise train` flags; flags given on the command line win.", ""]
    corpus = info.get("corpus", {})
    source = corpus.get("source")
    if source and Path(source).resolve() != bundled_corpus_path().resolve():
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
            flag = f.name.replace("_", "-")
            if value is None:
                lines.append(f"# {flag} = (not set)".ljust(34) + f"# {f.metadata['help']}")
            else:
                lines.append(f"{flag} = {_toml_value(value)}".ljust(34) + f"# {f.metadata['help']}")
    return "\n".join(lines) + "\n"


def write_run_config(run_dir, info: dict) -> Path:
    """Save RUN_DIR/config.toml (atomically, like every file of a run)."""
    path = Path(run_dir) / CONFIG_TOML
    atomic_write_bytes(path, config_text(info).encode("utf-8"))
    return path
