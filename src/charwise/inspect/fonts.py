"""Fonts for the pictures: every character drawn with a font that has it.

matplotlib draws a text in the first font of its family list that has each glyph (3.6 and
later), so a label gets its own list: the font the picture is designed with (DejaVu Sans Mono,
DejaVu Sans), then, for each character that font lacks, the first installed font that has it --
Noto Sans CJK for Chinese and Japanese where fonts-noto-cjk is installed, and so on. Fonts are
found through matplotlib's font manager; a font installed after matplotlib built its font cache
is found among the system's font files and registered with it. A colour bitmap font (Noto
Color Emoji) cannot be drawn at a size by matplotlib and is passed over.

A character no installed font has would be a box: the pictures say so once, in one warning
naming the Debian package to install, instead of matplotlib's warning per glyph and drawing.
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Iterable, Iterator

from ..errors import CharwiseWarning

# Tried first, in this order; every other installed font comes after them.
PREFERRED = ("DejaVu Sans", "Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC",
             "Noto Sans CJK KR", "Noto Sans Mono CJK JP", "Noto Sans Symbols", "Noto Sans Symbols 2",
             "Symbola", "Noto Emoji")
# Fonts whose glyphs are placeholders (a box naming the block) for every code point: matplotlib
# 3.11 ships one as its own last fallback. They never count as having a character.
PLACEHOLDERS = ("Last Resort",)
# Where a font for a script comes from on Debian and Ubuntu (the first range that holds it)
CJK = ((0x1100, 0x11FF), (0x2E80, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
       (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))
EMOJI = ((0x2600, 0x27BF), (0x1F000, 0x1FAFF))


class MissingGlyphs(CharwiseWarning):
    """Characters that no installed font can draw (they show as boxes)."""


_warned: set[str] = set()          # the packages a warning has named in this process


def package_for(ch: str) -> str:
    """The Debian package whose fonts draw `ch`: fonts-noto-cjk, fonts-symbola (emoji in
    outline, which matplotlib can draw; not the colour fonts-noto-color-emoji) or
    fonts-noto-core (the other scripts)."""
    cp = ord(ch)
    if any(lo <= cp <= hi for lo, hi in CJK):
        return "fonts-noto-cjk"
    if any(lo <= cp <= hi for lo, hi in EMOJI):
        return "fonts-symbola"
    return "fonts-noto-core"


@functools.lru_cache(maxsize=None)
def charmap(path: str, index: int = 0) -> frozenset[int]:
    """The code points a font file's face has glyphs for (none where matplotlib cannot draw
    with it at a size: a colour bitmap font)."""
    from matplotlib.ft2font import FT2Font
    try:
        font = FT2Font(path, face_index=index) if index else FT2Font(path)
        font.set_size(12, 72)
        return frozenset(font.get_charmap())
    except (RuntimeError, OSError, ValueError, TypeError):
        return frozenset()


@functools.lru_cache(maxsize=None)
def installed_fonts() -> tuple[tuple[str, str, int], ...]:
    """(family, file, face) of each installed font family, its regular face, PREFERRED first,
    PLACEHOLDERS left out. Font files the system has but matplotlib's cache lacks are
    registered with it first."""
    from matplotlib import font_manager as fm
    known = {os.path.realpath(f.fname) for f in fm.fontManager.ttflist}
    for path in fm.findSystemFonts():
        if os.path.realpath(path) not in known:
            with contextlib.suppress(Exception):        # an unreadable font file: not ours to fix
                fm.fontManager.addfont(path)
    rank = {name: i for i, name in enumerate(PREFERRED)}
    entries = sorted(fm.fontManager.ttflist,
                     key=lambda f: (rank.get(f.name, len(rank)), f.name, f.style != "normal",
                                    abs(_weight(f.weight) - 400)))
    seen: dict[str, tuple[str, str, int]] = {}
    for f in entries:
        if not f.name.startswith(PLACEHOLDERS):
            seen.setdefault(f.name, (f.name, f.fname, int(getattr(f, "index", 0) or 0)))
    return tuple(seen.values())


def _weight(w) -> int:
    return w if isinstance(w, int) else 400


def families(text: Iterable[str], primary: str) -> tuple[list[str], list[str]]:
    """(the font family list to draw `text` with: `primary`, then for each character it lacks
    the first installed font that has it; the characters no installed font has)."""
    need = {ord(c) for c in set("".join(text)) if c.isprintable() and not c.isspace()}
    fonts = installed_fonts()
    out = [primary]
    for name, path, index in fonts:
        if name == primary:
            need -= charmap(path, index)
    for name, path, index in fonts:
        if not need:
            break
        got = need & charmap(path, index) if name != primary else set()
        if got:
            out.append(name)
            need -= got
    return out, sorted(chr(c) for c in need)


def for_labels(text: Iterable[str], primary: str = "DejaVu Sans Mono") -> list[str]:
    """The family list for labels made of `text`, warning once (per package named) about
    characters no installed font has."""
    fams, missing = families(text, primary)
    warn_missing(missing)
    return fams


def warn_missing(chars: list[str]) -> None:
    """One warning naming the packages to install, unless each was named already."""
    if not chars:
        return
    packages = sorted({package_for(c) for c in chars})
    if set(packages) <= _warned:
        return
    _warned.update(packages)
    shown = " ".join(chars[:12]) + (" ..." if len(chars) > 12 else "")
    warnings.warn(MissingGlyphs(
        f"no installed font has {len(chars)} character(s) drawn in the pictures ({shown}); they "
        f"show as boxes. Install the fonts and run again: sudo apt-get install {' '.join(packages)} "
        "(Debian/Ubuntu)"), stacklevel=3)


@contextlib.contextmanager
def quiet_glyphs() -> Iterator[None]:
    """matplotlib's own warning per missing glyph, silenced: warn_missing has said it once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        yield
