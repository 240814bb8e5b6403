"""What a typed prime becomes: quotes matched to the corpus's forms, dropped characters gone."""
import pytest

from charwise.api import train
from charwise.cli import main
from charwise.errors import CharwiseError
from charwise.generation.prime import fit_prime, match_quotes

CURLY = set("abc \u201c\u201d\u2018\u2019")


def test_straight_quotes_become_the_curly_forms_the_corpus_has():
    text, made = match_quotes('"abc," she said, "don\'t"', CURLY | set(",shedaint"))
    assert text == "\u201cabc,\u201d she said, \u201cdon\u2019t\u201d"
    assert made == ['" -> \u201c', '" -> \u201d', "' -> \u2019"]


def test_curly_quotes_become_straight_when_the_corpus_has_only_straight():
    text, made = match_quotes("\u201cab\u2019c\u201d", set("abc\"'"))
    assert text == "\"ab'c\"" and made


def test_nothing_changes_when_the_vocabulary_has_the_character():
    assert match_quotes('"a"', set('a"\u201c\u201d')) == ('"a"', [])
    assert match_quotes("abc", set("abc")) == ("abc", [])


def test_fit_prime_skip_drops_and_says_so():
    text, note = fit_prime('"aZb', CURLY, "skip")
    assert text == "\u201cab"
    assert "quotes matched" in note and "1 character(s) outside the vocabulary dropped: 'Z'" in note
    assert fit_prime("aZ", CURLY, "error") == ("aZ", "")           # the encoder reports it
    with pytest.raises(CharwiseError, match="oov"):
        fit_prime("a", CURLY, "drop")


@pytest.fixture(scope="module")
def curly_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("curly")
    corpus = d / "c.txt"
    corpus.write_text("\u201cWell,\u201d said he, \u201cit\u2019s done.\u201d " * 40, encoding="utf-8")
    train(str(corpus), out=d / "run", preset="spec", max_steps=3, eval_every=0,
                   progress=False, log=lambda *a: None)
    return d / "run"


def test_sample_with_a_straight_quote_prime(curly_run, capsys):
    code = main(["sample", str(curly_run), "--prime", '"Well,"', "-n", "5", "--seed", "0"])
    o = capsys.readouterr()
    assert code == 0, o.err
    assert o.out.startswith("\u201cWell,\u201d") and len(o.out.rstrip("\n")) == 7 + 5
    assert "quotes matched" in o.err


def test_sample_oov_skip_prints_only_what_the_model_read(curly_run, capsys):
    code = main(["sample", str(curly_run), "--prime", "Wxyzell", "--oov", "skip", "-n", "4", "--seed", "0"])
    o = capsys.readouterr()
    assert code == 0, o.err
    assert o.out.startswith("Well") and "x" not in o.out[:4] and "dropped" in o.err


@pytest.mark.parametrize("cmd", [["sample", "{run}", "-n", "3"], ["eval", "{run}", "{text}"]])
def test_a_huge_thread_count_is_capped_not_a_crash(curly_run, tmp_path, capsys, cmd):
    text = tmp_path / "t.txt"
    text.write_text("Well, said he.", encoding="utf-8")
    argv = [a.format(run=curly_run, text=text) for a in cmd] + ["--threads", "1000000"]
    assert main(argv) == 0, capsys.readouterr().err


def test_train_with_a_huge_thread_count(tmp_path):
    r = train(None, out=tmp_path / "r", max_steps=2, eval_every=0, threads=1_000_000,
                       progress=False, log=lambda *a: None)
    assert r.steps == 2
