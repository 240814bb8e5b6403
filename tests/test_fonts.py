"""The pictures draw every script (inspect/fonts.py): a font per glyph from what the machine
has, and one clear warning naming the Debian package where no installed font has a glyph;
the per-character chart's caption fits its figure (issue 28 item 3)."""
import warnings

import pytest

import charwise
from charwise.inspect import fonts, plots
from charwise.settings.commands import AnalyzeOptions

JAPANESE = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
            "ニャーニャー泣いていた事だけは記憶している。\n") * 30
HAS_CJK_FONT = not fonts.families("猫輩", "DejaVu Sans")[1]


@pytest.fixture(scope="module")
def cjk_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cjk")
    text = root / "ja.txt"
    text.write_text(JAPANESE, encoding="utf-8")
    charwise.train(text, out=root / "run", preset="spec", hidden_size=16, embed_dim=8, max_steps=5,
                   eval_every=5, val_fraction=0.1, threads=1, device="cpu", quiet=True)
    return root / "run"


def analyze(run, out):
    opts = AnalyzeOptions(n=5, neuron_chars=40, temperatures=(1.0,), max_units=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        charwise.analyze(run, None, out, opts, log=lambda *a: None)
    return [str(w.message) for w in caught]


@pytest.mark.skipif(not HAS_CJK_FONT, reason="no CJK font installed (Debian: fonts-noto-cjk)")
def test_a_cjk_run_is_drawn_without_missing_glyphs(cjk_run, tmp_path):
    said = analyze(cjk_run, tmp_path / "a")
    assert not [m for m in said if "missing from font" in m or "no installed font" in m], said[:3]
    fams, missing = fonts.families("猫の名前 abc", "DejaVu Sans Mono")
    assert fams[0] == "DejaVu Sans Mono" and len(fams) == 2 and "CJK" in fams[1] and not missing


def test_one_clear_warning_when_no_installed_font_has_the_glyphs(cjk_run, tmp_path, monkeypatch):
    monkeypatch.setattr(fonts, "installed_fonts", lambda: ())
    monkeypatch.setattr(fonts, "_warned", set())
    said = analyze(cjk_run, tmp_path / "a")
    ours = [m for m in said if "no installed font" in m]
    assert len(ours) == 1 and "sudo apt-get install fonts-noto-cjk" in ours[0], said[:3]
    assert not [m for m in said if "missing from font" in m]      # matplotlib's, one per glyph


def test_the_cli_shows_the_warning_on_one_line(capsys):
    from charwise.cli import main
    main(["--version"])
    capsys.readouterr()
    text = warnings.formatwarning(fonts.MissingGlyphs("no installed font has 1 character(s)"),
                                  fonts.MissingGlyphs, "x.py", 1)
    assert text == "charwise: warning: no installed font has 1 character(s)\n"


def test_a_placeholder_font_does_not_count_as_having_a_character(monkeypatch):
    """matplotlib 3.11 ships "Last Resort High-Efficiency", whose every glyph is a placeholder
    box: counted as a font for CJK, the pictures would show boxes and say nothing (and this
    file's CJK tests would run, and fail, where fonts-noto-cjk is not installed)."""
    from matplotlib import font_manager as fm
    entry = lambda name: fm.FontEntry(fname=f"/x/{name}.ttf", name=name)       # noqa: E731
    monkeypatch.setattr(fm.fontManager, "ttflist", [entry("DejaVu Sans Mono"),
                                                    entry("Last Resort High-Efficiency")])
    monkeypatch.setattr(fm, "findSystemFonts", lambda: [])
    assert [name for name, _, _ in fonts.installed_fonts.__wrapped__()] == ["DejaVu Sans Mono"]


def test_packages_by_script():
    assert fonts.package_for("猫") == fonts.package_for("한") == "fonts-noto-cjk"
    assert fonts.package_for("\U0001F600") == "fonts-symbola"
    assert fonts.package_for("\u0915") == "fonts-noto-core"


def test_the_per_character_caption_lies_within_the_figure(cjk_run, monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from charwise.inspect import analysis as A
    model = charwise.load(cjk_run)
    text = A.analysis_text(cjk_run, model.info, model.vocab)
    table = A.char_table(model.vocab, text.ids, *A.position_losses(model.net, text.ids))
    monkeypatch.setattr(table, "min_count", lambda: 10)          # the longest caption: rare ones left out
    fig = plots.per_char_figure(table)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    label = fig.axes[0].xaxis.label
    box, whole = label.get_window_extent(canvas.get_renderer()), fig.bbox
    assert label.get_text().startswith("Character") and "left out" in label.get_text()
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0, (box, whole)
