"""options.py: every subcommand's options declared once, and the flags made from them."""
import dataclasses

import pytest

from charwise.cli import build_parser
from charwise.errors import CharwiseError
from charwise.settings.commands import (
    ALL,
    AnalyzeOptions,
    ExportOptions,
    GradcheckOptions,
    PackOptions,
    SampleOptions,
    ServeOptions,
)
from charwise.settings.options import check_value, flag_name, kind
from charwise.settings.train import ModelConfig, TrainConfig, TrainRun

# Each dataclass, with the subcommand whose --help must show its fields.
DECLARED = [(cls.command, cls) for cls in ALL] + [("train", c) for c in (TrainRun, ModelConfig, TrainConfig)]


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def squeezed(text: str) -> str:
    """Without whitespace: argparse wraps help lines, and may break them after a hyphen."""
    return "".join(text.split())


@pytest.mark.parametrize("command, cls", DECLARED, ids=lambda x: getattr(x, "__name__", x))
def test_every_option_is_documented_and_in_help(capsys, command, cls):
    text = help_text(capsys, command)
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    assert fields
    for f in fields:
        doc = f.metadata.get("help", "")
        assert doc.strip(), f"{cls.__name__}.{f.name} has no help"
        shown = f.name if "positional" in f.metadata else flag_name(f)
        assert shown in text, shown
        assert squeezed(doc) in squeezed(text), f"{cls.__name__}.{f.name}: help not in --help"


def test_help_shows_defaults_and_choices(capsys):
    def shows(command, *parts):
        text = squeezed(help_text(capsys, command))
        for part in parts:
            assert squeezed(part) in text, part
    shows("analyze", "sampling temperatures (default: 0.5 1.0 1.5)", "(default: 128)",
          "--sort {cluster,variance,none}")
    shows("sample", "softmax temperature; 0 (or below 0.0001) = greedy (default: 1.0)", "--beam K",
          "--which {best,last}", "(default: measured as it runs")
    shows("train", "presets: spec 128, small 640, medium 512, large 1024", "presets: small 180",
          "{auto,scratch,spec,small,transformer,medium,large,finetune,none}", "(default: runs/latest)")


@pytest.mark.parametrize("cls, argv", [(SampleOptions, ["sample", "R"]), (AnalyzeOptions, ["analyze", "R"]),
                                       (ExportOptions, ["export", "R"]), (ServeOptions, ["serve", "R"]),
                                       (PackOptions, ["pack", "R"]),
                                       (GradcheckOptions, ["gradcheck"])])
def test_flag_defaults_are_the_dataclass_defaults(cls, argv):
    assert cls.from_args(build_parser().parse_args(argv)) == cls()


def test_flags_reach_the_options_object():
    a = build_parser().parse_args(["sample", "R", "-n", "7", "--stop", "a", "--stop", "b", "--top-p",
                                   "0.5", "--keep-stop", "--device", "cuda:1"])
    o = SampleOptions.from_args(a)
    assert (o.n, o.stop, o.top_p, o.keep_stop, o.device) == (7, ("a", "b"), 0.5, True, "cuda:1")
    a = build_parser().parse_args(["analyze", "R", "--temperatures", "0.2", "2", "--state", "c"])
    assert AnalyzeOptions.from_args(a).temperatures == (0.2, 2.0)


def test_declared_types_are_parsed_once_into_kinds():
    f = {x.name: x for x in dataclasses.fields(AnalyzeOptions)}
    assert (kind(f["temperatures"]).base, kind(f["temperatures"]).many) == (float, True)
    assert kind(f["unit"]).optional and kind(f["unit"]).base is int
    assert not kind(f["n"]).optional and flag_name(f["n"]) == "-n"
    g = {x.name: x for x in dataclasses.fields(TrainConfig)}
    assert kind(g["max_time"]).base is float and kind(g["tensorboard"]).base is bool


@pytest.mark.parametrize("kw, match", [
    ({"n": -1}, "-n must be >= 0, got -1"),
    ({"n": 2.5}, "-n must be an integer, got 2.5"),
    ({"n": True}, "-n must be a number, not True"),
    ({"top_p": 0}, "--top-p must be > 0.0, got 0.0"),
    ({"beam": 65}, "--beam must be in 1..64, got 65"),
    ({"num_samples": 0}, "--num-samples must be in 1..4096, got 0"),
    ({"oov": "drop"}, "--oov must be one of error, skip; got 'drop'"),
    ({"device": "gpu"}, "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ({"stop": "x"}, "--stop must be a list of values, got 'x'"),
    ({"stop": ["a", 3]}, "--stop must be a string, got 3"),
    ({"temperature": float("nan")}, "--temperature must be a finite number"),
    ({"nucleus": 0.9}, "unknown option(s) for sample: nucleus"),
])
def test_bad_values_are_one_line_errors_naming_the_flag(kw, match):
    with pytest.raises(CharwiseError) as e:
        SampleOptions.make(**kw)
    assert match in str(e.value) and "\n" not in str(e.value)


def test_make_replaces_fields_of_given_options_and_checks_them():
    base = SampleOptions(n=10, seed=3)
    assert SampleOptions.make(base, n=20) == SampleOptions(n=20, seed=3)
    with pytest.raises(CharwiseError, match="options must be a SampleOptions, got ServeOptions"):
        SampleOptions.make(ServeOptions())
    with pytest.raises(CharwiseError, match="--port must be in 0..65535, got -1"):
        ServeOptions.make(ServeOptions(), port=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.n = 5                                      # type: ignore[misc]


def test_check_value_names_a_config_key_as_written():
    f = {x.name: x for x in dataclasses.fields(ModelConfig)}["hidden_size"]
    with pytest.raises(CharwiseError, match=r"^hidden_size must be >= 1, got 0$"):
        check_value(f, 0, label="hidden_size")
    with pytest.raises(CharwiseError, match=r"^--hidden-size must be >= 1, got 0$"):
        check_value(f, 0)


def test_export_refuses_a_gpu_in_one_line():
    with pytest.raises(CharwiseError, match="export runs on the CPU"):
        ExportOptions(device="cuda")
    assert ExportOptions(device="auto").device == "auto"
