"""What a run shows while it trains: rates, time left, plain lines off a terminal."""
import io
import re

import pytest

from charwise.progress import Cadence, Progress, Rate, clock_text, done_fraction, eta, one_line, rate_text


def test_rate_is_chars_per_second_over_recent_steps():
    r = Rate(chars_per_step=1024, span=10.0)
    for i in range(21):
        r.mark(i * 0.5, i)                              # 2 steps/s
    assert abs(r.steps_per_s() - 2.0) < 1e-9 and abs(r.chars_per_s() - 2048) < 1e-6
    for i in range(21, 41):
        r.mark(10 + (i - 20) * 1.0, i)                  # slowed to 1 step/s: the window follows
    assert abs(r.steps_per_s() - 1.0) < 0.1


def test_eta_takes_the_budget_that_ends_first():
    assert eta(100, 50.0, 2.0, 400, None) == 150.0
    assert eta(100, 50.0, 2.0, None, 180.0) == 130.0
    assert eta(100, 50.0, 2.0, 400, 100.0) == 50.0
    assert eta(100, 50.0, None, 400, None) is None


def test_formatting():
    assert clock_text(75) == "1:15" and clock_text(3725) == "1:02:05"
    assert rate_text(19_700) == "19.7k chars/s" and rate_text(512) == "512 chars/s"


def test_plain_lines_every_interval_off_a_terminal():
    t = [0.0]
    out = io.StringIO()
    p = Progress("lines", chars_per_step=1000, max_steps=None, max_time=100.0,
                 say=lambda text: print(text, file=out), every=15.0, clock=lambda: t[0])
    for step in range(1, 61):
        t[0] = step * 0.5                               # 2 steps/s for 30 s
        p.step(step, 2.5 - step / 100, elapsed=t[0], fraction=t[0] / 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2                              # at 15 s and 30 s
    assert lines[0].startswith("step 30, loss 2.2000, 2.0k chars/s, 0:15 elapsed, 1:25 left")
    p.eval_start(111_000, final=True)
    t[0] = 50.0
    p.eval_progress(55_500, 111_000)
    p.eval_end()
    p.close()
    tail = out.getvalue().splitlines()[2:]
    assert tail == ["final evaluation: scoring 111,000 characters",
                    "final evaluation: 55,500 / 111,000 characters (50%)"]


def test_off_prints_nothing():
    out = io.StringIO()
    p = Progress("off", 10, 5, None, say=lambda text: print(text, file=out))
    p.step(1, 1.0, 1.0, 0.2)
    p.write("x")
    p.eval_start(10, True)
    p.close()
    assert out.getvalue() == ""


def test_choose():
    assert Progress.choose(False) == "off" and Progress.choose(True) == "bar"


# ----------------------------------------------------------------------------- issue 28: output a person can read

def bar_frames(progress_bar_output: str) -> list[str]:
    """The frames a tqdm bar drew (each redraw starts with a carriage return)."""
    return [f.strip() for f in progress_bar_output.split("\r") if f.strip()]


def test_the_bar_text_is_the_status_with_no_stray_punctuation():
    out = io.StringIO()
    t = [0.0]
    p = Progress("bar", chars_per_step=1000, max_steps=100, max_time=None, clock=lambda: t[0], file=out)
    for step in range(1, 21):
        t[0] = step * 0.5
        p.step(step, 2.0, elapsed=t[0], fraction=step / 100)
    frame = bar_frames(out.getvalue())[-1]
    assert re.fullmatch(r"\s*\d+%\|[^|]*\| step 20, loss 2\.0000, 2\.0k chars/s, 0:10 elapsed, 0:40 left",
                        frame), frame
    assert "| ," not in out.getvalue() and ", ," not in out.getvalue()
    p.close()


def test_time_left_and_the_bar_include_the_final_evaluation():
    # a step budget: 80 steps left at 2 steps/s, then a final evaluation predicted at 20 s
    assert eta(20, 10.0, 2.0, 100, None, final_eval=20.0) == 60.0
    assert eta(20, 10.0, 2.0, 100, 50.0, final_eval=20.0) == 40.0     # the time budget holds it
    assert done_fraction(10.0, 60.0, 0.2) == 10.0 / 70.0
    assert done_fraction(10.0, None, 1.0) < 1 and done_fraction(10.0, None, 0.5) == 0.5
    out = io.StringIO()
    t = [0.0]
    p = Progress("bar", 1000, None, 100.0, clock=lambda: t[0], file=out)
    for step in range(1, 181):                   # training ends at 90 s of a 100 s budget
        t[0] = step * 0.5
        p.step(step, 1.0, elapsed=t[0], fraction=t[0] / 90, final_eval=9.0)
    assert p.bar.n == 900                        # 90 %, not 100 %: the final evaluation is left
    p.eval_start(1000, final=True)
    assert p.eval_bar is None                    # the final evaluation is the bar's last stretch
    p.eval_progress(500, 1000, elapsed=94.5)
    frame = bar_frames(out.getvalue())[-1]
    assert "final evaluation 50%" in frame and "0:04 left" in frame and frame.startswith("95%")
    p.close()


def test_eval_lines_come_about_once_a_tenth_of_the_run_and_the_final_always():
    c = Cadence(share=0.1, every=15.0)
    shown = []
    for i in range(1, 201):                      # 200 evaluations over the run
        f = i / 200
        if c.eval_due(f, final=i == 200):
            c.printed(f, 0.0)
            shown.append(i)
    assert 9 <= len(shown) <= 11 and shown[-1] == 200


def test_one_line_shows_newlines_as_a_symbol():
    assert one_line("ab\ncd\te\r\x07") == "ab\u21b5cd\u21e5e"


def train_output(capsys, tmp_path, *flags) -> list[str]:
    from charwise.cli import main
    assert main(["train", "--preset", "spec", "--max-steps", "120", "--threads", "1", "--device", "cpu",
                 "--out", str(tmp_path / "r"), *flags]) == 0
    got = capsys.readouterr()
    return got.out.splitlines() + got.err.splitlines()


def test_a_short_run_prints_a_line_per_evaluation_with_a_sample(capsys, tmp_path):
    lines = train_output(capsys, tmp_path, "--eval-every", "10")
    evals = [line for line in lines if line.startswith("step ")]
    # 12 evaluations, one every 1/12 of the run: lines at least a tenth apart, so every other
    # one and the last, each with an 80-character sample
    assert 6 <= len(evals) <= 7 and len(lines) <= 9, lines
    assert evals[-1].startswith("step 120 ")
    sample = evals[-1].split('"')[1]
    assert len(sample) == 80 and "\n" not in sample
    assert lines[-1].startswith("done: 120 steps")


def test_quiet_prints_only_the_summary(capsys, tmp_path):
    lines = train_output(capsys, tmp_path, "--quiet", "--eval-every", "10")
    assert len(lines) == 1 and lines[0].startswith("done: 120 steps"), lines


def test_the_api_takes_quiet_the_name_the_cli_and_toml_use(capsys, tmp_path):
    import charwise
    from charwise.errors import CharwiseError
    run = dict(preset="spec", max_steps=20, eval_every=10, threads=1, device="cpu")
    res = charwise.train(None, out=tmp_path / "q", quiet=True, **run)
    assert res.steps == 20 and capsys.readouterr() == ("", "")
    said = []
    charwise.train(None, out=tmp_path / "p", progress=False, log=said.append, **run)
    assert said == []                           # progress=False: quiet's older name, the same
    with pytest.raises(CharwiseError, match="quiet must be true or false"):
        charwise.train(None, out=tmp_path / "x", quiet="yes", **run)
