"""recipe.py: what --preset auto trains, from the text, the machine's measured speed and the
budget. The decisions are tested with made-up speeds (no timing in a test); two short runs
check that a run records and announces what auto chose."""
import json
from pathlib import Path

import pytest
import torch

from charwise import recipe
from charwise.settings.train import ModelConfig
from charwise.training import train

QUIET = dict(progress=False, log=lambda *a: None)
ENGLISH = "It is a truth universally acknowledged, that a single man in possession of a good fortune.\n"
GREEK = "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν, καὶ θεὸς ἦν ὁ λόγος.\n"


def test_the_text_decides_first(tmp_path):
    english, greek, big_greek = tmp_path / "en.txt", tmp_path / "el.txt", tmp_path / "big.txt"
    english.write_text(ENGLISH * 20)
    greek.write_text(GREEK * 20)
    big_greek.write_text(GREEK * 2000)                           # >= 100 kB
    assert recipe.plan(None, {}).kind == "chapter"
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes((ENGLISH * 20).replace("\n", "\r\n").encode())
    assert recipe.plan(crlf, {}).kind == "finetune"               # CR is a line end, not a script
    fine = recipe.plan(english, {})
    assert fine.kind == "finetune" and fine.coverage == 1.0 and "--preset scratch" in fine.why
    small = recipe.plan(greek, {})
    assert small.kind == "small-text" and small.coverage < recipe.BASE_COVERAGE
    assert recipe.plan(big_greek, {}).kind == "sized" and recipe.plan(tmp_path, {}).kind == "sized"
    # flags that fix another shape or vocabulary mean from scratch, and say why
    for flags, why in ((dict(hidden_size=256), "--hidden-size given"), (dict(line_mode=True), "line mode"),
                       (dict(vocab="bytes"), "--vocab bytes")):
        choice = recipe.plan(english, flags)
        assert choice.kind == "small-text" and choice.why.startswith(why) and choice.coverage is None
    scratch = recipe.plan(english, {}, from_base=False)
    assert scratch.kind == "small-text" and scratch.why.startswith("preset scratch")


def test_code_fine_tunes_base_though_base_lacks_its_quotes_and_brackets(tmp_path):
    """Python source has 96-98 % of its characters in base's vocabulary (its books have curly
    quotes, code straight ones and `=`, `{`, ...); fine-tuning base won on code at 100 kB and
    5 MB (benchmarks/README.md, section 6), so code is fine-tuned."""
    code = tmp_path / "code.py"
    code.write_text(Path(recipe.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    choice = recipe.plan(code, {})
    assert 0.95 <= choice.coverage < 0.99 and choice.kind == "finetune"


def test_a_small_text_from_scratch_keeps_a_validation_split():
    small = recipe.AutoChoice("small-text", "")
    assert recipe.settings(small, {}) == ("spec", {"val_fraction": 0.1})
    assert recipe.settings(small, {"val_fraction": 0.0}) == ("spec", {"val_fraction": 0.0})
    assert recipe.settings(recipe.AutoChoice("chapter", ""), {}) == ("spec", {})   # the chapter's way
    assert recipe.settings(recipe.AutoChoice("sized", ""), {"lr": 1e-3}) == ("small", {"lr": 1e-3})


def test_learning_rate_follows_the_searches_best():
    assert recipe.lr_for(640) == 0.007
    assert recipe.lr_for(448) == pytest.approx(9e-3, rel=0.03)
    assert recipe.lr_for(256) == pytest.approx(1.4e-2, rel=0.03)


def fake_speeds(monkeypatch, speeds):
    """train_speed returns made-up chars/s per width (and per thread count); records calls."""
    calls = []

    def speed(cfg, batch, seq, precision, device):
        calls.append((cfg.hidden_size, torch.get_num_threads()))
        s = speeds[cfg.hidden_size]
        return s(torch.get_num_threads()) if callable(s) else s
    monkeypatch.setattr(recipe, "train_speed", speed)
    return calls


def chars_for(steps, budget):
    """The speed at which a width takes `steps` in `budget`."""
    return steps * 16 * 64 / (budget * recipe.TRAIN_SHARE)


@pytest.mark.parametrize("budget", [60, 180, 600])
def test_the_widest_width_that_takes_enough_steps_wins(monkeypatch, budget):
    target = recipe.TARGET_STEPS
    # each width twice as slow as the one before it; 384 is the last fast enough
    speeds = {w: chars_for(target * 1.01 * 2 ** (4 - i), budget) for i, w in enumerate(sorted(recipe.WIDTHS))}
    calls = fake_speeds(monkeypatch, speeds)
    monkeypatch.setattr(recipe, "usable_cpus", lambda: 1)
    c = recipe.size_to_machine(recipe.AutoChoice("sized", ""), budget, ModelConfig(vocab_size=65), 16, 64,
                               lambda cfg: "fp32", torch.device("cpu"))
    assert (c.hidden_size, c.lr) == (384, recipe.lr_for(384))
    assert [w for w, _ in calls] == [128, 192, 256, 320, 384, 448]    # narrowest first, stops at 448
    assert c.expected_steps == pytest.approx(1.01 * target, rel=0.01)
    assert "1x384" in recipe.header(c, budget) and f"{budget} s" in recipe.header(c, budget)


def test_a_precision_change_does_not_end_the_search(monkeypatch):
    """On a bf16 CPU the widths from 256 train in bf16 and can be faster than an fp32 1x192
    (seen on an AMD EPYC Zen 4: 1x256 bf16 took 3,461 steps in 60 s, the probe found 1x192 fp32
    too slow, and auto chose 1x128)."""
    budget, enough, short = 60, recipe.TARGET_STEPS * 1.2, recipe.TARGET_STEPS * 0.8
    speeds = {w: chars_for(enough if w in (128, 256) else short, budget) for w in recipe.WIDTHS}
    calls = fake_speeds(monkeypatch, speeds)
    monkeypatch.setattr(recipe, "usable_cpus", lambda: 1)
    bf16_from_256 = lambda cfg: "bf16" if cfg.hidden_size >= 256 else "fp32"      # noqa: E731
    args = (ModelConfig(vocab_size=65), 16, 64)
    c = recipe.size_to_machine(recipe.AutoChoice("sized", ""), budget, *args, bf16_from_256,
                               torch.device("cpu"))
    assert c.hidden_size == 256 and [w for w, _ in calls] == [128, 192, 256, 320]
    # one precision throughout: the first shortfall ends the search, as before
    calls.clear()
    c = recipe.size_to_machine(recipe.AutoChoice("sized", ""), budget, *args, lambda cfg: "fp32",
                               torch.device("cpu"))
    assert c.hidden_size == 128 and [w for w, _ in calls] == [128, 192]


def test_a_slow_machine_gets_the_narrowest_and_a_fast_one_the_widest(monkeypatch):
    fake_speeds(monkeypatch, {w: 1.0 for w in recipe.WIDTHS})
    monkeypatch.setattr(recipe, "usable_cpus", lambda: 1)
    args = (ModelConfig(vocab_size=65), 16, 64, lambda cfg: "fp32", torch.device("cpu"))
    assert recipe.size_to_machine(recipe.AutoChoice("sized", ""), 180, *args).hidden_size == 128
    fake_speeds(monkeypatch, {w: 1e9 for w in recipe.WIDTHS})
    assert recipe.size_to_machine(recipe.AutoChoice("sized", ""), 180, *args).hidden_size == 640


def test_speed_is_the_better_of_one_and_all_threads(monkeypatch):
    """As the step's thread policy: on a busy machine all threads can be far slower than one."""
    before = torch.get_num_threads()
    fast_alone = {w: (lambda n: 1e9 if n == 1 else 1.0) for w in recipe.WIDTHS}
    calls = fake_speeds(monkeypatch, fast_alone)
    monkeypatch.setattr(recipe, "usable_cpus", lambda: 2)
    c = recipe.size_to_machine(recipe.AutoChoice("sized", ""), 180, ModelConfig(vocab_size=65), 16, 64,
                               lambda cfg: "fp32", torch.device("cpu"))
    assert c.hidden_size == 640 and {n for _, n in calls} == {1, 2}
    assert torch.get_num_threads() == before                       # given back


def test_a_sized_run_records_and_announces_the_choice(tmp_path, monkeypatch):
    corpus = tmp_path / "big.txt"
    corpus.write_text(GREEK * 1500)
    fake_speeds(monkeypatch, {w: chars_for(recipe.TARGET_STEPS, 3) * (2 if w <= 192 else 0.5)
                              for w in recipe.WIDTHS})
    lines = []
    res = train(corpus, out=tmp_path / "r", max_time=3, threads=1, log=lines.append)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["auto"]["kind"] == "sized" and info["auto"]["hidden_size"] == 192
    assert info["model"]["hidden_size"] == 192 and info["train"]["lr"] == recipe.lr_for(192)
    assert set(info["auto"]["chars_per_s"]) == {"128", "192", "256"}
    assert lines[0].startswith("auto: LSTM 1x192") and res.steps > 0


def test_auto_fine_tunes_base_on_a_text_it_can_read(tmp_path):
    corpus = tmp_path / "en.txt"
    corpus.write_text(ENGLISH * 50)
    lines = []
    train(corpus, out=tmp_path / "r", max_steps=2, threads=1, log=lines.append)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["auto"]["kind"] == "finetune" and info["init_from"]["name"] == "base"
    assert lines[0].startswith("auto: 100.0% of the text's characters are in base's vocabulary")
    assert "init-from = \"base\"" in (tmp_path / "r" / "config.toml").read_text()   # reruns the same
    scratch = tmp_path / "s"
    train(corpus, out=scratch, preset="small", hidden_size=32, max_steps=2, threads=1, **QUIET)
    assert "auto" not in json.loads((scratch / "run.json").read_text())


def test_preset_scratch_never_starts_from_base(tmp_path, capsys):
    from charwise.cli import main
    corpus = tmp_path / "en.txt"
    corpus.write_text(ENGLISH * 50)
    assert main(["train", str(corpus), "--out", str(tmp_path / "r"), "--preset", "scratch",
                 "--max-steps", "2", "--threads", "1", "--quiet"]) == 0
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["auto"]["kind"] == "small-text" and "init_from" not in info
    assert info["train"]["val_fraction"] == 0.1 and info["corpus"]["val_chars"] > 0
    capsys.readouterr()
    assert main(["train", str(corpus), "--out", str(tmp_path / "s"), "--preset", "scratch",
                 "--init-from", "base"]) == 2
    assert "--preset scratch trains from scratch" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_resume_keeps_what_auto_chose(tmp_path):
    corpus = tmp_path / "el.txt"
    corpus.write_text(GREEK * 20)
    train(corpus, out=tmp_path / "r", max_steps=2, threads=1, **QUIET)
    first = json.loads((tmp_path / "r" / "run.json").read_text())["auto"]
    train(corpus, out=tmp_path / "r", resume=True, max_steps=3, threads=1, **QUIET)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["auto"] == first


def test_line_mode_defaults_do_not_memorise_a_short_list(tmp_path):
    """A list of a few hundred items: auto holds out a tenth and keeps the best weights, so
    most sampled items are new (without a validation split the defaults memorised the list)."""
    import charwise
    names = (Path(__file__).parent / "data" / "first_names.txt").read_text().splitlines()[:212]
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(names) + "\n")
    train(corpus, out=tmp_path / "r", line_mode=True, threads=1, **QUIET)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["auto"]["kind"] == "small-text" and info["corpus"]["val_chars"] > 0
    items = [x for x in charwise.sample(tmp_path / "r", n=100, seed=1).split("\n") if x]
    new = sum(x not in set(names) for x in items) / len(items)
    assert len(items) >= 90 and new >= 0.5, new


def test_the_speed_probe_really_trains_and_leaves_the_runs_random_draws_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    speed = recipe.train_speed(ModelConfig(vocab_size=11, embed_dim=4, hidden_size=8), 2, 8, "fp32",
                               torch.device("cpu"))
    assert speed > 0 and torch.equal(torch.rand(3), expected)
