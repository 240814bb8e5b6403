"""The documentation: README.md as a short landing page whose commands all run, and the MkDocs
site (mkdocs.yml, docs/) that holds everything else.

- README.md stays under 200 lines.
- Every command README.md shows in a ```sh block runs. `make X` is checked with `make -n X` (the
  target exists and its recipe expands; nothing is built). `charwise ...` runs as written, in
  a temporary directory holding a copy of `data/` whose tiny-shakespeare is cut to its first
  30,000 characters (so the run is fast; it is still >= 99 % in base's vocabulary, so auto
  fine-tunes base as it does for the whole file), with two markers in a trailing comment:
  `# long: ...` runs the command with a small budget (a train's --max-time/--max-steps/
  --max-epochs replaced by --max-steps 2), `# runs until Ctrl-C` starts the command on a free
  port, waits for it to answer /api/info and stops it. Any other command fails the test, so a
  README command that nothing here runs cannot creep in.
- The built site's search index holds every flag of every command (from cli.py's parser).
- No README line or docs page cites an issue number.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from charwise.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ISSUE = re.compile(r"issue \d+|#\d\d\b", re.IGNORECASE)
LONG, FOREVER = "# long", "# runs until ctrl-c"
BUDGETS = ("--max-time", "--max-steps", "--max-epochs")
CORPUS_CHARS = 30_000


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(command, trailing comment) for every line of every ```sh block, `\\` continuations joined."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command, comment = split_comment(line)
            out.append((shlex.join(shlex.split(command)), comment.lower()))
    return out


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's command and its trailing `# comment` (a # outside quotes, after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i:].strip()
    return line, ""


def small_budget(argv: list[str]) -> list[str]:
    """A train command with its budget replaced by two steps."""
    assert argv[1] == "train", f"only train commands can be marked long: {shlex.join(argv)}"
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word in BUDGETS:
            skip = True
            continue
        if not word.startswith(tuple(f"{b}=" for b in BUDGETS)):
            kept.append(word)
    return [*kept, "--max-steps", "2"]


def run_forever(argv: list[str], cwd: Path) -> None:
    """Start a serving command on a free port, check it answers, stop it."""
    assert argv[1] == "serve", f"only serve runs until Ctrl-C: {shlex.join(argv)}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "charwise", *argv[1:], "--port", "0"], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+/", line)
        assert url, f"{shlex.join(argv)} printed {line!r} (exit {proc.poll()})"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url.group(0) + "api/info", timeout=5) as r:
                    assert json.load(r)["parameters"] > 0
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_readme_is_a_short_landing_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < 200, f"README.md has {n} lines; move detail to docs/"


def test_no_issue_numbers_in_readme_or_docs():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in [README, *sorted((ROOT / "docs").rglob("*.md"))]
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if ISSUE.search(line)]
    assert not hits, "\n".join(hits)


def test_readme_command_parser():
    text = ('```sh\ncharwise sample base -n 3   # the chapter\'s note\nmake demo\n'
            'charwise sample r --stop "#1 \\n"\ncharwise train x \\\n  --out "a b"  # long: 3 minutes\n'
            '```\n```\nnot sh\n```\n')
    assert readme_commands(text) == [("charwise sample base -n 3", "# the chapter's note"), ("make demo", ""),
                                     ("charwise sample r --stop '#1 \\n'", ""),
                                     ("charwise train x --out 'a b'", "# long: 3 minutes")]
    assert small_budget(["charwise", "train", "x", "--max-time", "600", "--out", "r"]) == \
        ["charwise", "train", "x", "--out", "r", "--max-steps", "2"]


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert any(c.startswith("charwise train") for c, _ in commands)
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("gutenberg"))
    shk = tmp_path / "data" / "tinyshakespeare.txt"
    shk.write_text(shk.read_text(encoding="utf-8")[:CORPUS_CHARS], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for command, comment in commands:
        argv = shlex.split(command)
        if argv[0] == "make":
            res = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                                 env={**os.environ, "MAKEFLAGS": ""}, timeout=60)
            assert res.returncode == 0, f"{command}: {res.stderr}"
            continue
        assert argv[0] == "charwise", f"README shows {command!r}, which this test does not run"
        if comment.startswith(FOREVER):
            run_forever(argv, tmp_path)
            continue
        if comment.startswith(LONG):
            argv = small_budget(argv)
        code = main(argv[1:])
        captured = capsys.readouterr()
        assert code == 0, f"{shlex.join(argv)} exited {code}: {captured.err[-2000:]}"


def _flags() -> set[str]:
    parser = build_parser()
    found, todo = set(), [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            found.update(action.option_strings)
            if action.choices and isinstance(action.choices, dict):      # the subcommands
                todo.extend(action.choices.values())
    return found


def test_the_site_builds_offline_and_its_search_index_has_every_flag(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_PROXY": "*",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}   # no network
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    text = "\n".join(f"{d['title']}\n{d['text']}" for d in index["docs"])
    flags = _flags()
    assert {"--max-time", "--stop", "--keep-stop", "-n", "--init-from", "--format"} <= flags
    missing = sorted(f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text))
    assert not missing, f"flags absent from the site: {missing}"
    pages = {p.relative_to(ROOT / "docs").with_suffix("").as_posix() for p in (ROOT / "docs").glob("*.md")}
    built = {p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")}
    assert {p for p in pages if p != "index"} <= built
    fetched = [p for p in site.rglob("*.html") if "fonts.googleapis" in p.read_text(encoding="utf-8")]
    assert not fetched, f"pages that load Google fonts: {fetched}"
