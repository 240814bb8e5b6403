"""What a typed prime becomes before the model reads it.

A user types straight quotes (" and ') while many books use curly ones (\u201c \u201d \u2018 \u2019), and a
character-level model knows only the characters of its corpus. So a quote the vocabulary lacks
becomes the form it has: a straight quote becomes the opening curly form at the start of the
text or after a space or an opening bracket, and the closing form elsewhere (an apostrophe, as
in don\u2019t, is a closing single quote); a curly quote becomes straight when the corpus has only
straight ones. Every change is said in a note. With oov="skip", characters still unknown are
dropped (and counted); the text returned is exactly what the model reads, so what is printed
as the prime is what was used.
"""
from __future__ import annotations

from ..errors import CharwiseError

# straight -> (opening, closing) curly forms
CURLY = {'"': ("\u201c", "\u201d"), "'": ("\u2018", "\u2019")}
STRAIGHT = {c: s for s, pair in CURLY.items() for c in pair}
OPENERS = set(" \t\n\r([{\u2014-") | {"\u201c", "\u2018"}


def match_quotes(text: str, known) -> tuple[str, list[str]]:
    """(text with each quote the vocabulary lacks replaced by a form it has, the replacements
    made as 'X -> Y' strings, in order of first use)."""
    known = set(known)
    out: list[str] = []
    made: dict[str, None] = {}
    for i, ch in enumerate(text):
        new = ch
        if ch not in known:
            if ch in CURLY:
                opening = i == 0 or text[i - 1] in OPENERS
                first, second = CURLY[ch] if opening else CURLY[ch][::-1]
                new = first if first in known else second if second in known else ch
            elif ch in STRAIGHT and STRAIGHT[ch] in known:
                new = STRAIGHT[ch]
        if new != ch:
            made.setdefault(f"{ch} -> {new}", None)
        out.append(new)
    return "".join(out), list(made)


def fit_prime(prime: str, chars, oov: str = "error") -> tuple[str, str]:
    """(the prime as the model will read it, a note saying what changed or ""). oov="error"
    leaves unknown characters for the encoder to report; "skip" drops them."""
    if oov not in ("error", "skip"):
        raise CharwiseError(f"oov must be 'error' or 'skip', got {oov!r}")
    text, made = match_quotes(prime, chars)
    notes = []
    if made:
        notes.append("quotes matched to the corpus's: " + ", ".join(made))
    if oov == "skip":
        known = set(chars)
        kept = "".join(c for c in text if c in known)
        dropped = sorted(set(text) - known)
        if dropped:
            notes.append(f"{len(text) - len(kept)} character(s) outside the vocabulary dropped: "
                         + ", ".join(repr(c) for c in dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
        text = kept
    return text, "; ".join(notes)
