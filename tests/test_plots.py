"""plots.py and report.py: the pictures and pages open, and show the numbers they claim to."""
import base64
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest

from charwise.api import load
from charwise.cli import main
from charwise.data.vocab import Vocab
from charwise.inspect import analysis as A
from charwise.inspect import neurons as N
from charwise.inspect.plots import heatmap_chart, moving_average, per_char_chart, read_metrics, training_curve

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "input", "link"}


def png_size(path_or_bytes):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")   # IHDR


class Page(HTMLParser):
    """Parses a page, checks that tags nest, and collects what the tests look at."""

    def __init__(self, text):
        super().__init__()
        self.stack, self.imgs, self.spans, self.titles, self.links, self.text = [], [], 0, [], [], []
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "span":
            self.spans += 1
            self.titles.append(a.get("title"))
        if tag == "a":
            self.links.append(a["href"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def analyzed(trained_run, tmp_path_factory):
    from charwise.inspect.report import analyze
    out = tmp_path_factory.mktemp("analysis")
    return analyze(trained_run, out=out, n=60, neuron_chars=300, log=lambda *a: None), out


def test_every_output_opens(analyzed):
    res, out = analyzed
    for name in ("per_char.png", "curve.png", "heatmap.png"):
        w, h = png_size(out / name)
        assert w > 600 and h > 300
    report = Page((out / "report.html").read_text(encoding="utf-8"))
    assert len(report.imgs) == 3
    # self-contained: no link to another file; the neuron view is inside it, hover guesses too
    assert not [link for link in report.links if not link.startswith(("#", "http"))]
    shown = res["neurons"]["shown"]
    assert report.spans == 300 * len(shown)
    assert all(t.count("%") == 5 for t in report.titles[:300])
    assert "html" not in res["neurons"]
    for src in report.imgs:                                         # embedded, not linked
        assert src.startswith("data:image/png;base64,")
        png_size(base64.b64decode(src.split(",", 1)[1]))
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["overall"]["nats"] == pytest.approx(res["overall"]["nats"])
    assert (out / "per_char.csv").read_text().count("\n") == len(res["per_char"]) + 1


def test_report_states_the_numbers(analyzed, trained_run):
    res, out = analyzed
    text = "".join(Page((out / "report.html").read_text(encoding="utf-8")).text)
    o = res["overall"]
    assert f"{o['nats']:.4f} nats/char" in text and f"{o['predictions']:,} predictions" in text
    assert "no validation split" in text                            # the spec preset's fallback
    assert "89,062" in text                                         # parameter count
    for s in res["samples"]:
        assert s["text"] in text
        assert 0 <= s["novelty"]["ngram_overlap"][20] <= 1
    assert f"step {res['plateau']['best_step']}" in text
    assert res["heatmap"]["text"] == A.SPEC_SENTENCE


def test_neuron_view_colours_every_character(analyzed):
    res, out = analyzed
    page = Page((out / "neurons.html").read_text(encoding="utf-8"))
    shown = res["neurons"]["shown"]
    assert page.spans == 300 * len(shown) >= 300
    first = page.titles[:300]
    assert all(t.count("%") == 5 for t in first)                    # top-5 guesses on hover
    u = shown[0]
    assert first[0].startswith(f"h[{u}] = ")


def test_per_char_chart_and_labels(tmp_path):
    vocab = Vocab(tuple(sorted(set("ab \n"))))
    ids = vocab.encode("ab \nab ab\n")
    losses = np.linspace(0.1, 2.0, len(ids) - 1)
    tab = A.char_table(vocab, ids, losses, np.ones(len(losses), bool))
    assert [A.visible(c) for c in tab.chars] == ["\u21b5", "a", "b", "\u2423"]     # newline hardest
    assert A.visible("\t") == "\u21e5" and A.visible("\x07") == "\\x07" and A.visible("q") == "q"
    png_size(per_char_chart(tab, tmp_path / "c.png"))


def test_hardest_characters_need_enough_occurrences():
    # 'z' is seen twice with a huge loss: a mean over 2 is noise, so it is not "hardest"
    text = "ab " * 2000 + "zz"
    vocab = Vocab(tuple(sorted(set(text))))
    ids = vocab.encode(text)
    losses = np.where(ids[1:] == vocab.encode("z")[0], 9.0, np.where(ids[1:] == vocab.encode("b")[0], 2.0, 0.5))
    tab = A.char_table(vocab, ids, losses, np.ones(len(losses), bool))
    assert tab.chars[0] == "z"                                      # the full table: by mean
    top, min_count, rare = tab.hardest(15)
    assert min_count == 20 and rare == 1 and top.chars[0] == "b" and "z" not in top.chars
    short = A.char_table(vocab, ids[:100], losses[:99], np.ones(99, bool))
    assert short.min_count() == 1                                   # a short text ranks everything


def test_heatmap_chart_of_cell_states(trained_run, tmp_path):
    model = load(trained_run)
    hm = N.heatmap(model.net, model.vocab, "Mr Bennet", kind="c", max_units=20)
    assert hm.data.shape == (20, 9)
    w, h = png_size(heatmap_chart(hm, tmp_path / "h.png"))
    assert w > h                                                    # 20 rows: a wide picture


def test_training_curve_while_training(trained_run, tmp_path):
    """A run still writing: metrics.jsonl ends in a cut line, and the curve is drawn anyway."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:120]) + '\n{"step": 121, "lo')
    steps, evals = read_metrics(run)
    assert len(steps) + len(evals) == 120 and steps[-1]["step"] <= 120
    png_size(training_curve(run, tmp_path / "curve.png"))
    np.testing.assert_allclose(moving_average(np.arange(12.0), 10), [4.5, 5.5, 6.5])


def test_cli_analyze_and_plot(trained_run, tmp_path, capsys):
    held = tmp_path / "held.txt"
    held.write_text("Mr Bennet made no answer. Mr Bennet said his lady to him.")
    assert main(["analyze", str(trained_run), str(held), "--out", str(tmp_path / "a"), "-n", "30",
                 "--temperatures", "0.8", "--state", "c", "--neuron-chars", "50"]) == 0
    out = capsys.readouterr().out
    assert "56 predictions" in out and "T=0.8" in out and "report:" in out
    assert (tmp_path / "a" / "report.html").exists()
    assert main(["plot", str(trained_run), "--out", str(tmp_path / "p.png"), "--window", "25"]) == 0
    png_size(tmp_path / "p.png")


@pytest.mark.parametrize("args, match", [
    (["{run}", "{oov}"], "--oov skip"),
    (["{run}", "{empty}"], "empty"),
    (["{run}", "--text", "Zq@"], "not in the model's vocabulary"),
    (["{run}", "--layer", "3"], "--layer"),
    (["{run}", "--unit", "500"], "--unit"),
    (["{run}", "-n", "0"], "-n"),
    (["{dir}"], "not a charwise run"),
])
def test_cli_analyze_bad_input(trained_run, tmp_path, capsys, args, match):
    files = {"run": trained_run, "oov": tmp_path / "oov.txt", "empty": tmp_path / "empty.txt",
             "dir": tmp_path}
    files["oov"].write_text("Mr Bennet~")
    files["empty"].write_text("")
    argv = ["analyze", *[a.format(**files) for a in args], "--out", str(tmp_path / "o"), "-n", "5"]
    if "-n" in args:
        argv = argv[:-2]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("charwise: error:") and match in err[0], err


def test_cli_analyze_oov_skip_counts(trained_run, tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("Mr Bennet~ replied that he had not.")
    assert main(["analyze", str(trained_run), str(f), "--oov", "skip", "--out", str(tmp_path / "o"),
                 "-n", "5", "--temperatures", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 character(s) outside the vocabulary were skipped" in out
    assert f"{len('Mr Bennet replied that he had not.') - 1} predictions" in out


# ----------------------------------------------------------------------------- a transformer

def test_analyze_a_transformer_draws_attention_maps_in_place_of_units(transformer_run, tmp_path):
    from charwise.inspect.report import analyze
    out = tmp_path / "an"
    res = analyze(transformer_run, out=out, n=20, text="It is a truth universally acknowledged",
                  log=lambda *a: None)
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "attention.png", "curve.png",
                                                     "per_char.csv", "per_char.png", "report.html"]
    w, h = png_size(out / "attention.png")
    assert w > 600 and h > 300
    at = res["attention"]
    assert at["layers"] == [0, 1] and at["heads"] == 2 and at["chars"] == 24 == at["context"]
    assert at["text"] == "It is a truth universally acknowledged"[:24] and "cut to" in at["note"]
    assert "heatmap" not in res and "neurons" not in res and "neurons" not in res["files"]
    report = Page((out / "report.html").read_text(encoding="utf-8"))
    assert len(report.imgs) == 3 and report.spans == 0              # per-char, curve, attention
    text = "".join(report.text)
    assert "Attention over a sentence" in text and "Selective units" not in text
    assert "windows of at most 24 characters" in text and "TRANSFORMER 2 blocks" in text
    for s in res["samples"]:
        assert s["text"] in text and 0 <= s["novelty"]["ngram_overlap"][10] <= 1
    assert json.loads((out / "analysis.json").read_text())["attention"] == at


@pytest.mark.parametrize("args", [["--unit", "0"], ["--state", "c"], ["--neuron-chars", "50"],
                                  ["--sort", "none"], ["--max-units", "8"], ["--layer", "2"]])
def test_cli_analyze_a_transformer_refuses_the_options_about_units(transformer_run, tmp_path,
                                                                  capsys, args):
    out = tmp_path / "o"
    assert main(["analyze", str(transformer_run), "--out", str(out), "-n", "5", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"charwise: error: {args[0]}"), err
    assert ("transformer has no hidden units" in err[0]) != (args[0] == "--layer")
    assert not out.exists()                                         # refused before writing
