"""The base model shipped inside the package: it loads, samples and scores unseen text well.
Nothing here trains it (its recipe is configs/base.toml and docs/base-model-card.md)."""
import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charwise.cli import main
from charwise.runs import bundled
from charwise.runs.bundled import corpus_path as bundled_corpus_path

BASE = bundled.models_root() / "base"


def test_the_shipped_files_are_whole_and_small():
    assert bundled.verify(BASE) == (BASE / bundled.SHA_FILE).read_text().split()[0]
    assert (BASE / "model.safetensors").stat().st_size <= 10.5e6
    info = json.loads((BASE / "run.json").read_text())
    assert info["model"]["vocab_size"] == len(info["vocab"])


def test_package_data_ships_every_file_of_the_base():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["charwise"]
    pkg = bundled.models_root().parent
    for f in BASE.iterdir():
        rel = str(f.relative_to(pkg))
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_sample_base_works_with_no_training(capsys):
    assert main(["sample", "base", "--prime", "The night", "-n", "80", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The night") and len(out) > 80


def test_base_scores_unseen_text_well_below_uniform(capsys):
    # the opening of Pride and Prejudice: no Austen in the base's books
    assert main(["eval", "base", str(bundled_corpus_path()), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    V = len(json.loads((BASE / "run.json").read_text())["vocab"])
    assert res["loss"] < 0.5 * math.log(V)


def test_info_base(capsys):
    assert main(["info", "base"]) == 0
    assert "LSTM" in capsys.readouterr().out


@pytest.mark.slow
def test_sample_base_from_a_fresh_install(tmp_path):
    """Build the wheel, install it alone into an empty directory, sample from `base` there."""
    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "tree"
    shutil.copytree(repo / "src", work / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, work / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl"),
                    str(work)], check=True, capture_output=True)
    wheel = next((tmp_path / "whl").glob("charwise-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import charwise; print(charwise.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(tmp_path / "site"))
    res = subprocess.run([sys.executable, "-m", "charwise", "sample", "base", "--prime", "The night",
                          "-n", "40", "--seed", "1"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("The night")
