"""Stop strings: end a sample at the first occurrence of any of them.

`parse_stop` turns what a user typed (`--stop "\\n\\n"`, with the backslash escapes of a
Python string literal) into the text to look for. `StopMatcher` watches one sample's text as it
streams in and releases only what can no longer turn out to be the start of a stop string, so a
stop string that is excluded from the output never shows up half-printed. Each sample of a batch
has its own matcher, so each ends on its own.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..errors import CharwiseError

MAX_STOPS = 16
MAX_STOP_CHARS = 256

_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"',
           "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.|$)", re.DOTALL)


def parse_escapes(text: str, flag: str = "--stop") -> str:
    """Backslash escapes as in a Python string literal: \\n \\t \\r \\0 \\\\ \\" \\' \\a \\b
    \\f \\v \\xHH \\uHHHH \\UHHHHHHHH. Any other backslash sequence is an error naming `flag`
    (so a typo does not silently become a different stop string or separator)."""
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code in _SIMPLE:
            return _SIMPLE[code]
        if len(code) > 1:                                   # \xHH, \uHHHH, \UHHHHHHHH
            cp = int(code[1:], 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise CharwiseError(f"{flag}: \\{code} is not a Unicode character")
            return chr(cp)
        shown = "\\" + code if code else "a trailing \\"
        raise CharwiseError(f"{flag}: unknown escape {shown!r} (write \\\\ for a backslash)")
    return _ESCAPE.sub(one, text)


def parse_stops(stops: str | Iterable[str] | None, escapes: bool = True) -> tuple[str, ...]:
    """Validated stop strings. `escapes` parses backslash escapes (the CLI's text); the Python
    API passes real strings and sets it False."""
    if stops is None:
        return ()
    if isinstance(stops, str):
        stops = [stops]
    if isinstance(stops, (Mapping, bytes, bytearray)) or not isinstance(stops, Iterable):
        # a JSON object (its keys are not stop strings), a number, bytes
        raise CharwiseError(f"--stop must be a string or a list of strings, got "
                            f"{type(stops).__name__}")
    out: list[str] = []
    for raw in stops:
        if not isinstance(raw, str):
            raise CharwiseError(f"--stop: a stop string must be text, got {raw!r}")
        s = parse_escapes(raw) if escapes else raw
        if s == "":
            raise CharwiseError("--stop: a stop string cannot be empty")
        if any("\ud800" <= c <= "\udfff" for c in s):      # never in text a model makes
            raise CharwiseError("--stop: a stop string holds a lone surrogate (not valid "
                                "Unicode text; a byte that is not UTF-8, in a command line)")
        if len(s) > MAX_STOP_CHARS:
            raise CharwiseError(f"--stop: a stop string is at most {MAX_STOP_CHARS} characters, "
                                f"got {len(s)}")
        if s not in out:
            out.append(s)
    if len(out) > MAX_STOPS:
        raise CharwiseError(f"--stop: at most {MAX_STOPS} stop strings, got {len(out)}")
    return tuple(out)


class StopMatcher:
    """One sample's stop-string watcher.

    `feed(text)` returns the part of the text that is safe to show now; once a stop string has
    appeared, `done` is True, the text up to it (or through it, with keep=True) has been
    returned, and everything after is dropped. `finish()` returns what was held back when the
    sample ends without a stop. The result does not depend on how the text is cut into pieces.
    """

    def __init__(self, stops: Sequence[str], keep: bool = False):
        self.stops = tuple(stops)
        self.keep = keep
        self.done = False
        self.matched: str | None = None
        self._held = ""
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, text: str) -> str:
        if self.done or not text:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        hit = self._first_match(buf)
        if hit is not None:
            start, stop = hit
            self.done, self.matched, self._held = True, stop, ""
            return buf[:start + len(stop)] if self.keep else buf[:start]
        keep_from = len(buf) - self._pending_suffix(buf)
        self._held = buf[keep_from:]
        return buf[:keep_from]

    def finish(self) -> str:
        """The held-back tail of a sample that ended without meeting a stop string."""
        out, self._held = ("" if self.done else self._held), ""
        self.done = True
        return out

    def _first_match(self, buf: str) -> tuple[int, str] | None:
        # the match that is complete first (earliest end); at equal ends the longer one
        best: tuple[int, int, str] | None = None
        for s in self.stops:
            i = buf.find(s)
            if i >= 0 and (best is None or (i + len(s), i) < (best[0], best[1])):
                best = (i + len(s), i, s)
        return None if best is None else (best[1], best[2])

    def _pending_suffix(self, buf: str) -> int:
        """Length of the longest tail of buf that a stop string starts with (it may still grow
        into a match, so it is held back)."""
        for n in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
