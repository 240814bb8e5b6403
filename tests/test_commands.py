"""The declaration tables: commands.COMMANDS (each subcommand once: the parser, the dispatch,
the API charwise exports) and exporting.formats.FORMATS (each export format once: --format,
charwise.export, ExportOptions)."""
import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import charwise
import charwise.api as api
from charwise.cli import build_parser, check_paths, path_arguments
from charwise.commands import API, BY_NAME, COMMANDS
from charwise.errors import CharwiseError
from charwise.exporting import command as export_command
from charwise.exporting.formats import FORMATS, QUANTIZE, Format, check_quantize
from charwise.settings.commands import ALL, ExportOptions, Options

ROOT = Path(__file__).resolve().parents[1]


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


# ----------------------------------------------------------------------------- COMMANDS

def test_the_parser_has_each_command_of_the_table_in_its_order_with_its_help():
    sub = subparsers(build_parser())
    assert list(sub.choices) == [c.name for c in COMMANDS]
    assert [a.help for a in sub._choices_actions] == [c.help for c in COMMANDS]
    assert all(len(c.help.splitlines()) == 1 for c in COMMANDS)


def test_each_command_calls_the_function_charwise_exports():
    for c in COMMANDS:
        if c.function is None:
            assert c.api is None, c.name
            continue
        module, _, name = c.function.partition(":")
        f = getattr(__import__(module, fromlist=[name]), name)
        assert getattr(api, c.api) is f and getattr(charwise, c.api) is f, c.name


def test_charwise_exports_the_table_api_and_type_checkers_see_the_same_names():
    assert set(charwise.__all__) == {*API, "CharwiseError", "__version__"}
    assert {"load", "open_run", "evaluate", "info"} <= set(API)
    tree = ast.parse((ROOT / "src" / "charwise" / "__init__.py").read_text(encoding="utf-8"))
    guarded = next(n for n in tree.body if isinstance(n, ast.If))      # if TYPE_CHECKING:
    names = {a.asname or a.name for n in guarded.body for a in n.names}
    assert names == set(API)


def test_options_classes_name_their_command_and_all_lists_them():
    declared = [c.options for c in COMMANDS if isinstance(c.options, type) and issubclass(c.options, Options)]
    assert set(declared) == set(ALL)
    for c in COMMANDS:
        if c.options in ALL:
            assert c.options.command == c.name


def test_an_empty_path_is_refused_for_every_path_argument_of_every_command():
    parser = build_parser()
    for c in COMMANDS:
        names = path_arguments(c)
        positionals = [a for a in c.args if not a.names[0].startswith("-") and a.kw.get("nargs") not in ("?", "*")]
        args = parser.parse_args([c.name, *["x"] * len(positionals)])
        check_paths(args)                                  # nothing empty: fine
        for attr, shown in names.items():
            empty = [""] if isinstance(getattr(args, attr), list) else ""
            bad = argparse.Namespace(**{**vars(args), attr: empty})
            with pytest.raises(CharwiseError, match=f"^{shown}: an empty path"):
                check_paths(bad)
    assert path_arguments(BY_NAME["export"])["text"] == "--text"         # a file; analyze's is a sentence
    assert "text" not in path_arguments(BY_NAME["analyze"])
    assert path_arguments(BY_NAME["train"]) == {"corpus": "CORPUS", "config": "--config", "out": "--out",
                                                 "init_from": "--init-from"}


def test_info_and_prepare_verify_load_no_torch(tmp_path):
    """Each command imports only its function's module: charwise.api imports everything."""
    code = ("import sys\nfrom charwise.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'torch loaded'\nsys.exit(rc)\n")
    for argv in (["info", "base"], ["prepare", "--verify", str(tmp_path)]):
        p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode in (0, 2) and "torch loaded" not in p.stderr, p.stderr


# ----------------------------------------------------------------------------- FORMATS

def test_export_options_and_the_flag_take_their_choices_from_formats():
    fields = {f.name: f for f in dataclasses.fields(ExportOptions)}
    assert fields["format"].metadata["choices"] == tuple(FORMATS) == ("onnx", "web")
    assert fields["quantize"].metadata["choices"] == QUANTIZE
    assert all(name in fields["format"].metadata["help"] for name in FORMATS)
    sub = subparsers(build_parser()).choices["export"]
    flag = next(a for a in sub._actions if a.dest == "format")
    assert flag.metavar == "{" + ",".join(FORMATS) + "}"


def test_the_formats_table_is_a_leaf_that_settings_may_read():
    """settings/options.py declares ExportOptions from FORMATS, so formats.py (and the package
    it is in, which Python imports first) must import nothing above errors, and no torch."""
    from test_structure import import_graph
    graph = import_graph()
    assert graph["charwise.exporting.formats"] <= {"charwise.errors"}
    assert graph["charwise.exporting"] == set()
    code = "import sys, charwise.exporting.formats; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_format_names_functions_that_exist():
    for f in FORMATS.values():
        for ref in (f.write, f.summary):
            module, _, name = ref.partition(":")
            assert callable(getattr(__import__(module, fromlist=[name]), name)), ref
        assert f.quantize[0] == "none" and f.suffix.startswith(".")


def test_a_quantization_a_format_does_not_take_is_refused(monkeypatch):
    monkeypatch.setitem(FORMATS, "web", dataclasses.replace(FORMATS["web"], quantize=("none",)))
    with pytest.raises(CharwiseError, match="--format web takes --quantize none; got 'int8'"):
        ExportOptions(format="web", quantize="int8")
    with pytest.raises(CharwiseError, match="unknown --quantize 'fp16'; choose one of none"):
        check_quantize("fp16", "web")
    assert ExportOptions(format="onnx", quantize="int8").quantize == "int8"


def fake_write(run_dir, out, options):
    return {"run_dir": run_dir, "out": out, "which": options.which}


def fake_summary(res):
    return f"fake {res['out']}"


def test_export_dispatches_through_the_registry(monkeypatch):
    monkeypatch.setitem(FORMATS, "web", Format("web", "test_commands:fake_write",
                                               "test_commands:fake_summary", ".x", ("none",)))
    res = charwise.export("R", "web", out="o.x", which="last")
    assert res == {"run_dir": "R", "out": "o.x", "which": "last", "format": "web"}
    assert export_command.summary_line(res) == "fake o.x"
