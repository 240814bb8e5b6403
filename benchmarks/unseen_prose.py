"""Build 5,000,000 characters of English prose the bundled base model never saw, for
`benchmarks/transfer.py --prose FILE` (benchmarks/README.md, section 6).

The base trained on 11 of the 13 books in data/gutenberg/MANIFEST.md; this text is the other two
(Frankenstein, pg84.txt; Alice's Adventures in Wonderland, pg11.txt), quotations from Debian's
`fortunes` package and the King James Bible from Debian's `bible-kjv` (verse labels removed),
all public domain or freely redistributable, joined with blank lines, its last 5,000,000
characters kept (so the held-out tail is Bible text), started at a paragraph:

    apt-get install bible-kjv fortunes
    python benchmarks/unseen_prose.py BOOKS_DIR OUT.txt
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
# the fortune files of quotations and prose (not the ASCII art, verse, or program listings)
TOPICS = ("literature wisdom people humorists education science love work law medicine food pets "
          "platitudes politics miscellaneous men-women fortunes sports kids magic paradoxum news "
          "riddles").split()
SIZE = 5_000_000


def kjv() -> str:
    """The whole Bible as `bible` prints it, one verse a line, without its "Ge1:1 " labels."""
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True,
                         check=True).stdout
    return "\n".join(re.sub(r"^\S+?\d+:\d+ ", "", line) for line in out.splitlines()) + "\n"


def fortunes() -> str:
    parts = []
    for name in TOPICS:
        path = FORTUNES / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(text.replace("\n%\n", "\n\n").strip("%\n"))
    return "\n\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("books", type=Path, help="the folder holding pg84.txt and pg11.txt")
    ap.add_argument("out", type=Path, help="the text to write (must not exist)")
    a = ap.parse_args()
    if a.out.exists():
        print(f"error: {a.out} exists; not replaced", file=sys.stderr)
        return 2
    books = [(a.books / f).read_text(encoding="utf-8").strip() for f in ("pg84.txt", "pg11.txt")]
    text = "\n\n".join([fortunes(), *books, kjv()])[-SIZE:]
    text = text[text.index("\n\n") + 2:]             # start at a paragraph
    a.out.write_text(text, encoding="utf-8")
    print(f"{a.out}: {len(text):,} characters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
