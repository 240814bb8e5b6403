"""Stop strings: escapes, and the streaming matcher (independent of how text is chunked)."""
import random

import pytest

from charwise.errors import CharwiseError
from charwise.generation.stops import StopMatcher, parse_escapes, parse_stops


def test_escapes():
    assert parse_escapes(r"\n\n") == "\n\n"
    assert parse_escapes(r"a\tb\\c\"d\'") == "a\tb\\c\"d'"
    assert parse_escapes(r"\x41\u00e9\U0001F600") == "Aé😀"
    assert parse_escapes("THE END") == "THE END"
    assert parse_escapes("é\\n") == "é\n"               # non-ASCII survives (unlike unicode_escape)


@pytest.mark.parametrize("bad", [r"\q", "abc\\", r"\ud800"])
def test_bad_escapes(bad):
    with pytest.raises(CharwiseError, match="--stop"):
        parse_stops([bad])


def test_parse_stops_rules():
    assert parse_stops(None) == ()
    assert parse_stops(r"\n") == ("\n",)
    assert parse_stops(["a", "a", "b"]) == ("a", "b")
    assert parse_stops([r"\n"], escapes=False) == (r"\n",)
    with pytest.raises(CharwiseError, match="empty"):
        parse_stops([""])
    with pytest.raises(CharwiseError, match="at most"):
        parse_stops([str(i) for i in range(40)])
    with pytest.raises(CharwiseError, match="text"):
        parse_stops([3])


def run(text, stops, keep=False, chunks=1):
    m = StopMatcher(stops, keep)
    out = []
    i = 0
    while i < len(text) and not m.done:
        out.append(m.feed(text[i:i + chunks]))
        i += chunks
    out.append(m.finish())
    return "".join(out), m


def test_stop_excluded_and_kept():
    assert run("hello\n\nworld", ["\n\n"])[0] == "hello"
    assert run("hello\n\nworld", ["\n\n"], keep=True)[0] == "hello\n\n"
    assert run("no stop here", ["\n\n"])[0] == "no stop here"
    out, m = run("abc THE END more", ["\n\n", "THE END"])
    assert out == "abc " and m.matched == "THE END"


def test_partial_stop_is_held_back_then_released():
    m = StopMatcher(["\n\n"])
    assert m.feed("a") == "a"
    assert m.feed("\n") == ""                          # could be the start of "\n\n"
    assert m.feed("b") == "\nb"                        # it was not
    assert m.feed("\n") == ""
    assert m.feed("\n") == "" and m.done
    assert m.feed("more") == ""


def test_first_completed_stop_wins():
    # "bc" completes before "abcd" could
    assert run("xabcd", ["abcd", "bc"])[0] == "xa"
    # overlapping prefix: "aab" in "aaab"
    assert run("aaab", ["aab"])[0] == "a"


def test_chunking_does_not_matter():
    rnd = random.Random(0)
    for _ in range(300):
        text = "".join(rnd.choice("ab\n") for _ in range(30))
        stops = ["".join(rnd.choice("ab\n") for _ in range(rnd.randint(1, 3))) for _ in range(2)]
        want = run(text, stops, chunks=1)[0]
        for c in (2, 3, 7, 100):
            assert run(text, stops, chunks=c)[0] == want
        # and equals the plain definition: cut at the first completed match
        ends = [(text.find(s) + len(s), text.find(s)) for s in stops if s in text]
        assert want == (text[:min(ends)[1]] if ends else text)
