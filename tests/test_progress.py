"""What a run shows while it trains: rates, time left, plain lines off a terminal."""
import io

from charwise.progress import Progress, Rate, clock_text, eta, rate_text


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
