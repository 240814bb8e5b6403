"""The Python API (api.py and the functions charwise exports): the same functions, options and
errors as the CLI; --device; scoring in the precision a run recorded."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import charwise
import charwise.scoring as EVALUATE  # the module; calling charwise.evaluate runs the command
from charwise.cli import main
from charwise.errors import CharwiseError
from charwise.runs import bundled
from charwise.settings.commands import AnalyzeOptions, SampleOptions
from conftest import needs_bf16


def cli_error(capsys, argv) -> str:
    """The message `charwise ARGV` prints, checked to be one line and exit status 2."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charwise: error: "), err
    return lines[0][len("charwise: error: "):]


def api_error(call) -> str:
    with pytest.raises(CharwiseError) as e:
        call()
    return str(e.value)


# (subcommand and its arguments, the bad flags, the API call with the same bad value)
SAME = [
    (["sample", "base"], ["-n", "-1"], lambda: charwise.sample("base", n=-1)),
    (["sample", "base"], ["--top-p", "1.5"], lambda: charwise.sample("base", top_p=1.5)),
    (["sample", "base"], ["--num-samples", "0"], lambda: charwise.sample("base", num_samples=0)),
    (["sample", "base"], ["--beam", "65"], lambda: charwise.sample("base", beam=65)),
    (["sample", "base"], ["--which", "worst"], lambda: charwise.sample("base", which="worst")),
    (["sample", "base"], ["--threads", "0"], lambda: charwise.sample("base", threads=0)),
    (["sample", "base"], ["--device", "tpu"], lambda: charwise.sample("base", device="tpu")),
    (["sample", "base"], ["--seed", "-3"], lambda: charwise.sample("base", seed=-3)),
    (["sample", "base"], ["--precision", "bf16"], lambda: charwise.sample("base", precision="bf16")),
    (["eval", "base", "t.txt"], ["--precision", "fp16"], lambda: charwise.evaluate("base", "t.txt", precision="fp16")),
    (["eval", "base", "t.txt"], ["--oov", "drop"], lambda: charwise.evaluate("base", "t.txt", oov="drop")),
    (["analyze", "base"], ["--max-units", "0"], lambda: charwise.analyze("base", max_units=0)),
    (["analyze", "base"], ["--temperatures", "1", "-1"], lambda: charwise.analyze("base", temperatures=[1, -1])),
    (["analyze", "base"], ["-n", "0"], lambda: charwise.analyze("base", n=0)),
    (["analyze", "base"], ["--state", "z"], lambda: charwise.analyze("base", state="z")),
    (["export", "base"], ["--quantize", "int4"], lambda: charwise.export("base", quantize="int4")),
    (["export", "base"], ["--format", "pdf"], lambda: charwise.export("base", "pdf")),
    (["export", "base"], ["--device", "cuda"], lambda: charwise.export("base", device="cuda")),
    (["serve", "base"], ["--port", "70000"], lambda: charwise.serve("base", port=70000)),
    (["serve", "base"], ["--max-chars", "0"], lambda: charwise.serve("base", max_chars=0)),
    (["plot", "base"], ["--window", "0"], lambda: charwise.plot("base", window=0)),
    (["pack", "base"], ["--which", "worst"], lambda: charwise.pack("base", which="worst")),
    (["prepare"], [], lambda: charwise.prepare([], None)),
]


@pytest.mark.parametrize("command, flags, call", SAME, ids=[" ".join(c[:1] + f) for c, f, _ in SAME])
def test_api_and_cli_give_the_same_error(capsys, command, flags, call):
    shown = cli_error(capsys, command + flags)
    assert api_error(call) == shown
    assert (flags[0] if flags else "--out") in shown


def test_every_command_with_options_and_an_api_function_is_in_the_table_above():
    """commands.COMMANDS is where a command is declared; SAME must not fall behind it."""
    from charwise.commands import COMMANDS
    from charwise.settings.commands import Options
    checked = {c.name for c in COMMANDS if c.api and isinstance(c.options, type) and issubclass(c.options, Options)}
    assert checked == {command[0] for command, _, _ in SAME}


def test_api_functions_are_plain_functions_with_their_real_signatures(trained_run):
    """The API is plain functions (no callable modules): importlib, inspect and monkeypatch see
    what a user calls, in any import order."""
    import importlib
    import inspect as pyinspect
    import types

    import charwise.api as api
    import charwise.exporting.onnx  # noqa: F401  (importing a module must not change the API)
    import charwise.generation.charmodel  # noqa: F401
    from charwise import info
    for name in ("analyze", "evaluate", "export", "info", "pack", "prepare", "sample", "serve", "train"):
        f = getattr(charwise, name)
        assert isinstance(f, types.FunctionType) and getattr(api, name) is f, name
    assert "run_dir" in pyinspect.signature(charwise.sample).parameters
    assert importlib.import_module("charwise").sample is api.sample
    assert charwise.info(trained_run) == info(trained_run) and info(trained_run)["run_dir"] == str(trained_run)
    assert sorted(charwise.__all__) == sorted(set(charwise.__all__)) and "open_run" in dir(charwise)


def test_monkeypatching_an_api_function_is_seen(monkeypatch):
    monkeypatch.setattr(charwise, "sample", lambda *a, **k: "patched")
    assert charwise.sample("anything") == "patched"


def test_import_of_reference_and_options_stays_torch_free():
    code = ("import sys, charwise, charwise.reference, charwise.settings.options, charwise.cli; "
            "charwise.cli.build_parser(); assert 'torch' not in sys.modules, 'torch loaded'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_sample_returns_what_the_cli_prints(capsys):
    assert main(["sample", "base", "--prime", "The night", "-n", "40", "--seed", "4", "--num-samples", "2"]) == 0
    printed = capsys.readouterr().out
    text = charwise.sample("base", SampleOptions(prime="The night", n=40, seed=4, num_samples=2), err=sys.stderr)
    assert text == printed and text.startswith("--- sample 1\nThe night")
    assert charwise.sample("base", prime="The night", n=40, seed=4, num_samples=2) == printed


@pytest.mark.parametrize("argv", [["sample", "base", "-n", "5"], ["eval", "base", "{text}"],
                                  ["analyze", "base", "{text}"], ["serve", "base"],
                                  ["sample", "base", "--device", "cuda:1"]])
def test_device_cuda_without_cuda_is_one_line_exit_2(capsys, monkeypatch, tmp_path, argv):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = tmp_path / "t.txt"
    text.write_text("The night was dark.")
    argv = [a.format(text=text) for a in argv]
    if "--device" not in argv:
        argv += ["--device", "cuda"]
    if argv[0] == "analyze":
        argv += ["--out", str(tmp_path / "a")]
    msg = cli_error(capsys, argv)
    assert "no CUDA GPU is available" in msg and msg.startswith("--device cuda")
    assert not (tmp_path / "a").exists()


def test_device_cpu_and_auto_work(capsys, tmp_path, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text("The night was dark and the wind blew.")
    assert main(["eval", "base", str(text), "--device", "cpu", "--json"]) == 0
    cpu = json.loads(capsys.readouterr().out)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)     # auto: the CPU here
    assert charwise.evaluate("base", text, device="auto")["loss"] == cpu["loss"]
    assert main(["sample", "base", "--prime", "The", "-n", "10", "--seed", "1", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("The")


@pytest.fixture
def base_copy(tmp_path):
    """The bundled model as an ordinary run directory whose run.json we may edit."""
    run = tmp_path / "base"
    shutil.copytree(bundled.models_root() / "base", run)
    return run


def test_scoring_uses_the_precision_the_run_recorded(base_copy, tmp_path, monkeypatch):
    """auto scores a run in the precision it trained in where this CPU runs that natively."""
    text = tmp_path / "t.txt"
    text.write_text("It was a dark and stormy night; the rain fell in torrents.")
    info = json.loads((base_copy / "run.json").read_text())
    assert info["precision"] == "fp32" and info["model"]["hidden_size"] >= 256
    net = charwise.load(base_copy).net
    monkeypatch.setattr(EVALUATE, "cpu_has_fast_bf16", lambda: True)
    # 640 units on a CPU with fast bf16: training would pick bf16 here, but the run trained in fp32
    assert EVALUATE.eval_precision(net) == "bf16"
    assert EVALUATE.eval_precision(net, recorded="fp32") == "fp32"
    assert charwise.evaluate(base_copy, text)["precision"] == "fp32"
    assert EVALUATE.eval_precision(net, recorded="bf16") == "bf16"
    assert EVALUATE.eval_precision(net, "fp32", recorded="bf16") == "fp32"
    monkeypatch.setattr(EVALUATE, "cpu_has_fast_bf16", lambda: False)   # bf16 not in hardware here
    assert EVALUATE.eval_precision(net, recorded="bf16") == "fp32"
    info["precision"] = "bf16"
    (base_copy / "run.json").write_text(json.dumps(info))
    assert charwise.evaluate(base_copy, text)["precision"] == "fp32"


@needs_bf16
def test_a_bf16_run_is_scored_in_bf16_where_the_cpu_has_it(base_copy, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("It was a dark and stormy night; the rain fell in torrents.")
    info = json.loads((base_copy / "run.json").read_text())
    info["precision"] = "bf16"
    (base_copy / "run.json").write_text(json.dumps(info))
    assert charwise.evaluate(base_copy, text)["precision"] == "bf16"
    assert charwise.evaluate(base_copy, text, precision="fp32")["precision"] == "fp32"


def test_training_records_its_resolved_precision(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    assert info["precision"] in ("fp32", "bf16") and info["device"] == "cpu"


def test_analyze_takes_an_options_object(trained_run, tmp_path):
    opts = AnalyzeOptions(n=5, neuron_chars=40, temperatures=(1.0,), max_units=16)
    res = charwise.analyze(trained_run, None, tmp_path / "a", opts, log=lambda *a: None)
    assert [s["temperature"] for s in res["samples"]] == [1.0] and (tmp_path / "a" / "report.html").is_file()
    assert len(res["heatmap"]["units"]) <= 16


def test_sample_shows_and_types_the_options_as_keywords():
    """charwise.sample's keyword parameters are SampleOptions's fields, with their types and
    defaults (taken from the dataclass: declared once), for inspect/help and for type checkers
    (SampleKeywords, the **kw's TypedDict)."""
    import dataclasses
    import inspect as pyinspect
    import typing

    from charwise.api import SampleKeywords
    params = pyinspect.signature(charwise.sample).parameters
    fields = dataclasses.fields(SampleOptions)
    assert list(params) == ["run_dir", "options", "out", "err"] + [f.name for f in fields]
    for f in fields:
        p = params[f.name]
        assert p.kind is p.KEYWORD_ONLY and p.default == f.default and p.annotation == f.type, f.name
    hints = typing.get_type_hints(SampleKeywords)
    assert list(hints) == [f.name for f in fields] and not SampleKeywords.__required_keys__
    assert {k: str(v) for k, v in hints.items()} == {
        f.name: str(typing.get_type_hints(SampleOptions)[f.name]) for f in fields}


def test_a_users_mypy_checks_sample_keywords(tmp_path, monkeypatch):
    """mypy accepts charwise.sample("runs/x", n=10) and rejects n="ten" and unknown keywords
    (charwise is found through MYPYPATH, py.typed; no site-packages, so it takes seconds)."""
    import os
    from pathlib import Path
    mypy_api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "user.py"
    snippet.write_text('import charwise\n\ncharwise.sample("runs/x", n=10, temperature=0.8, stop=("\\n",))\n'
                       'charwise.sample("runs/x", n="ten")\ncharwise.sample("runs/x", nucleus=0.9)\n')
    monkeypatch.setenv("MYPYPATH", str(Path(charwise.__file__).resolve().parents[1]))
    out, err, status = mypy_api.run([str(snippet), "--no-site-packages", "--ignore-missing-imports",
                                     "--follow-imports=silent", "--no-incremental",
                                     "--config-file", os.devnull, "--python-version", "3.10"])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and len(errors) == 2, out + err
    assert "user.py:4:" in errors[0] and '"n"' in errors[0] and '"str"' in errors[0], errors
    assert "user.py:5:" in errors[1] and "nucleus" in errors[1], errors


def test_the_bundled_base_records_no_path_of_the_machine_that_built_it():
    """`info base` showed the build machine's scratch folder as the corpus: it says what the
    corpus was instead (docs/base-model-card.md), and nothing that reads as a local path."""
    info = json.loads((bundled.models_root() / "base" / "run.json").read_text())
    source = info["corpus"]["source"]
    assert not Path(source).is_absolute() and "base-model-card" in source
