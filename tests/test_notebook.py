"""notebook/: the Run object a notebook shows (card, figures, samples, neurons)."""
import base64
import io
import re
from types import SimpleNamespace

import pytest
from matplotlib.figure import Figure

import charwise
from charwise import CharwiseError
from charwise.notebook import HTML, Neurons, Run, Samples, compare_curves, compare_samples, open_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(trained_run):
    return open_run(trained_run)


def renders(fig) -> bytes:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:8] == PNG
    return buf.getvalue()


def test_open_run_is_exported_and_leaves_train_a_function(trained_run):
    r = charwise.open_run(trained_run)
    assert isinstance(r, Run) and callable(charwise.train) and callable(charwise.load)
    assert "open_run" in charwise.__all__


def test_from_result_takes_what_train_returns(trained_run):
    r = Run.from_result(SimpleNamespace(run_dir=trained_run))
    assert r.path == trained_run and r.best_loss == r.info["best"]["val_loss"]


def test_card_shows_settings_best_loss_and_a_thumbnail(run):
    page = run._repr_html_()
    assert f"{run.best_loss:.4f}" in page
    assert "LSTM 1 x 128, embedding 32" in page and f"{run.info['parameters']:,}" in page
    srcs = re.findall(r'<img[^>]* src="data:image/png;base64,([^"]+)"', page)
    assert len(srcs) == 1 and base64.b64decode(srcs[0])[:8] == PNG
    text = repr(run)
    assert f"{run.best_loss:.4f}" in text and "<" not in text


def test_parameters_add_up(run):
    p = run.parameters()
    assert p["total"] == run.info["parameters"] == sum(v for k, v in p.items() if k != "total")


def test_plot_methods_return_figures_not_files(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from matplotlib import _pylab_helpers
    before = _pylab_helpers.Gcf.get_num_fig_managers()
    figs = [run.plot_curve(), run.per_char(), run.per_char("Mr Bennet replied that he had not."),
            run.heatmap(), run.heatmap("Mr Bennet", state="c"), run.thumbnail(),
            compare_curves([run, run.path], labels=["a", "b"])]
    for f in figs:
        renders(f)
    assert list(tmp_path.iterdir()) == []                       # nothing written
    assert _pylab_helpers.Gcf.get_num_fig_managers() == before  # nothing kept open by pyplot


def test_per_char_table_adds_up(run):
    tab = run.per_char_table()
    assert tab.total == run.info["corpus"]["chars"] - 1
    assert abs(tab.overall_nats - run.best_loss) < 0.02        # the same pass as the evaluation


def test_samples_side_by_side(run):
    s = run.samples(temperatures=(0.5, 1.0, 1.5), n=40)
    assert isinstance(s, Samples) and [x["temperature"] for x in s] == [0.5, 1.0, 1.5]
    assert all(t.startswith("Mr Bennet") and len(t) == len("Mr Bennet") + 40 for t in s.texts.values())
    page = s._repr_html_()
    assert page.count("<pre") == 3 and "temperature 1.5" in page
    assert s == run.samples(temperatures=(0.5, 1.0, 1.5), n=40)  # seeded


def test_neurons_and_the_coloured_text(run):
    n = run.neurons(chars=1000)
    assert isinstance(n, Neurons) and n and {"feature", "unit", "r"} <= set(n[0])
    assert "<table>" in n._repr_html_()
    best = n.best("just read a space")
    assert all(abs(best["r"]) >= abs(r["r"]) for r in n if r["feature"] == best["feature"])
    with pytest.raises(CharwiseError, match="no feature"):
        n.best("nothing like this")
    view = run.show_unit(best["unit"], chars=120, label=best["feature"])
    assert isinstance(view, HTML)
    assert view._repr_html_().count("<span style=\"background") == 120
    assert "next:" in view.data and "Unit" in view.data
    own = run.show_unit(0, "Mr Bennet")
    assert own.data.count("<span style=\"background") == len("Mr Bennet")
    with pytest.raises(CharwiseError, match="unit must be in"):
        run.show_unit(10_000)


def test_figures_display_in_ipython_without_pyplot(run):
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from charwise.notebook import views
    shell = InteractiveShell.instance()
    views.show_figures_inline()
    data, _ = shell.display_formatter.format(run.plot_curve())
    assert base64.b64decode(data["image/png"])[:8] == PNG if isinstance(data["image/png"], str) \
        else data["image/png"][:8] == PNG
    data, _ = shell.display_formatter.format(run)
    assert "<img" in data["text/html"]


def test_losses_in_one_pass_and_in_cold_windows(run):
    whole = run.losses()
    cold = run.losses(window=40)
    assert whole.shape == cold.shape == (run.info["corpus"]["chars"] - 1,)
    assert abs(whole.mean() - run.per_char_table().overall_nats) < 1e-9
    assert abs(cold[:40] - whole[:40]).max() < 1e-4     # the first window starts cold either way
    with pytest.raises(CharwiseError, match="window"):
        run.losses(window=0)


def test_importing_notebook_first_keeps_charwise_train_a_function():
    import subprocess
    import sys
    code = ("import charwise.notebook, charwise; assert callable(charwise.train), charwise.train; "
            "assert callable(charwise.open_run)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- a transformer

@pytest.fixture(scope="module")
def gpt(transformer_run):
    return open_run(transformer_run)


def test_a_transformer_run_has_a_card_parameters_curves_and_per_char_loss(gpt, tmp_path, monkeypatch):
    page = gpt._repr_html_()
    assert "TRANSFORMER 2 blocks x 16 wide, 2 heads" in page and f"{gpt.best_loss:.4f}" in page
    p = gpt.parameters()
    assert list(p) == ["embedding", "TRANSFORMER", "output head", "total"]
    assert p["total"] == gpt.info["parameters"] == gpt.net.num_parameters
    positions = 0 if gpt.net.pos is None else gpt.net.pos.weight.numel()     # rotary: none
    assert p["embedding"] == gpt.net.embed.weight.numel() + positions
    tab = gpt.per_char_table()
    assert tab.total == gpt.info["corpus"]["val_chars"] - 1
    assert abs(tab.overall_nats - gpt.best_loss) < 1e-4           # the evaluation's windows
    monkeypatch.chdir(tmp_path)
    for f in (gpt.plot_curve(), gpt.per_char(), gpt.thumbnail(), compare_curves([gpt])):
        renders(f)
    assert list(tmp_path.iterdir()) == []


def test_a_transformer_shows_attention_where_an_lstm_shows_units(gpt, run):
    fig = gpt.attention("Mr Bennet replied")
    renders(fig)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4 and panels[0].images[0].get_array().shape == (17, 17)
    one = gpt.attention("Mr Bennet replied", layer=1)
    assert len([ax for ax in one.axes if ax.images]) == 2
    long = gpt.attention("It is a truth universally acknowledged")    # past the context of 24
    assert any("cut to its first 24 of 38" in t.get_text() for t in long.texts)
    renders(gpt.attention())                                          # the default sentence
    with pytest.raises(CharwiseError, match="run.attention"):
        gpt.heatmap("Mr Bennet")
    with pytest.raises(CharwiseError, match="run.attention"):
        gpt.neurons()
    with pytest.raises(CharwiseError, match=r"has no attention.*run.heatmap"):
        run.attention("Mr Bennet")


def test_runs_compared_on_the_seconds_of_training_and_by_their_samples(gpt, run):
    fig = compare_curves([run, gpt], labels=["lstm", "gpt"], x="time")
    renders(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Seconds of training"
    gpt_line = next(line for line in ax.lines if line.get_label().startswith("gpt: training"))
    assert gpt_line.get_xdata()[-1] <= gpt.info["train_seconds"] + 1e-6     # seconds, not steps
    with pytest.raises(CharwiseError, match="x must be"):
        compare_curves([run], x="tokens")
    s = compare_samples([run, gpt], labels=["lstm", "gpt"], prime="Mr", temperature=0.8, n=30)
    assert isinstance(s, Samples) and [x["label"] for x in s] == ["lstm (temperature 0.8)",
                                                                   "gpt (temperature 0.8)"]
    assert s[1]["text"] == gpt.samples("Mr", (0.8,), 30)[0]["text"]        # the same seed
    page = s._repr_html_()
    assert page.count("<pre") == 2 and "gpt (temperature 0.8)" in page and "lstm (temperature" in repr(s)
