"""MkDocs hook (mkdocs.yml: hooks): fills docs/cli.md in from charwise's own argparse parser, so
the command-line reference lists every command (commands.COMMANDS, in its order, with its
one-line help) and flag with the help text and default that `charwise COMMAND --help` shows,
and cannot fall behind the code.

charwise.cli and charwise.commands import no torch at module level, so this costs the build a
fraction of a second.
"""
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
SRC = Path(__file__).resolve().parents[1] / "src"


def _cell(text: str) -> str:
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _forms(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    arg = ""
    if action.nargs != 0:
        metavar = action.metavar or action.dest.upper()
        arg = " " + (metavar if isinstance(metavar, str) else " ".join(metavar))
    return ", ".join(f"`{s}{arg if not s.startswith('--no-') else ''}`" for s in action.option_strings)


def _help(action: argparse.Action) -> str:
    text = (action.help or "").replace("%%", "%")
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        text += f" (one of: {', '.join(map(str, action.choices))})"
    return _cell(text)


def command_markdown(name: str, parser: argparse.ArgumentParser, summary: str) -> str:
    out = [f"## charwise {name}", ""]
    if summary:
        out += [summary[0].upper() + summary[1:] + ".", ""]
    if parser.description and parser.description != summary:
        out += [" ".join(parser.description.split()), ""]
    usage = parser.format_usage().strip().removeprefix("usage: ")
    out += ["```", usage, "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "arguments"
        out += [f"**{title[0].upper() + title[1:]}**", "", "| argument | meaning |", "| --- | --- |"]
        out += [f"| {_forms(a)} | {_help(a)} |" for a in actions]
        out.append("")
    if parser.epilog:
        out += ["```", parser.epilog.strip("\n"), "```", ""]
    return "\n".join(out)


def cli_markdown() -> str:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from charwise.cli import build_parser
    from charwise.commands import COMMANDS
    parser = build_parser()
    subs = _subparsers(parser)
    top = ["## charwise", "", "```", parser.format_usage().strip().removeprefix("usage: "), "```", "",
           "| argument | meaning |", "| --- | --- |"]
    top += [f"| {_forms(a)} | {_help(a)} |" for a in parser._actions
            if a.option_strings and a.help != argparse.SUPPRESS]
    parts = ["\n".join(top) + "\n"]
    parts += [command_markdown(c.name, subs[c.name], c.help) for c in COMMANDS]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri == "cli.md":
        return markdown.replace(MARKER, cli_markdown())
    return markdown
