"""Budgets: the evaluation reserve follows the measured speed; resumes say what is left.

The stop logic is tested on made-up timings (a fake clock), never by timing this machine."""
from charwise.budget import DRIFT_GAP, TimeBudget, progress, resume_note, time_sample


def test_the_reserve_follows_the_measured_evaluation_speed():
    b = TimeBudget(max_time=100.0, eval_chars=100_000, margin=1.0)
    b.measured_eval(1.0, 4096, at=0.0)                 # ~24 s for the whole split
    assert abs(b.reserve - 100_000 * 1.0 / 4096) < 1e-9
    assert not b.time_up(70.0, 0.5) and b.time_up(76.0, 0.5)
    b.measured_eval(3.0, 4096, at=40.0)                # the machine got 3x slower: reserve more
    assert b.time_up(30.0, 0.5)
    b.measured_save(2.0)
    assert abs(b.reserve - (100_000 * 3.0 / 4096 + 2.0)) < 1e-9


def test_remeasuring_is_due_every_interval_with_a_time_budget_only():
    b = TimeBudget(max_time=100.0, eval_chars=10, remeasure_every=30.0)
    assert b.remeasure_due(0.0)
    b.measured_eval(1.0, 10, at=5.0)
    assert not b.remeasure_due(30.0) and b.remeasure_due(35.0)
    assert not TimeBudget(max_time=None, eval_chars=10).remeasure_due(1e9)


def test_progress_is_the_larger_of_steps_and_time():
    b = TimeBudget(max_time=110.0, eval_chars=1000, margin=1.0)
    b.measured_eval(10.0, 1000, at=0.0)                # reserve 10 s: 100 s of training
    assert progress(10, 100, b, 50.0) == 0.5
    assert progress(80, 100, b, 50.0) == 0.8
    assert progress(10, None, TimeBudget(None, 0), 50.0) == 0.0


def test_resume_notes():
    msg, done = resume_note(76, 117.4, None, 100.0)
    assert done and "after 117.4 s of training" in msg and "--max-time 100 is used up" in msg
    assert "totals over the whole run" in msg and "--resume" in msg and "--max-time 177" in msg
    msg, done = resume_note(76, 50.0, None, 180.0)
    assert not done and "130 of 180 s left" in msg
    msg, done = resume_note(400, 10.0, 400, None)
    assert done and "(400 steps, from --max-steps) is used up" in msg and "--max-steps 600" in msg
    msg, done = resume_note(100, 10.0, 400, None)
    assert not done and "300 of 400 steps left" in msg


def _run_until_stop(b: TimeBudget, start: float, step: float) -> tuple[int, float]:
    """A run on a fake clock: steps of `step` seconds from `start` while the budget allows
    one more; returns (steps, elapsed when training stopped)."""
    elapsed, steps = start, 0
    while not b.time_up(elapsed):
        elapsed += step
        b.measured_step(step)
        steps += 1
    return steps, elapsed


def test_the_run_stops_at_the_step_that_leaves_exactly_the_reserve():
    # 100,000 characters at 100 us each: a 10 s evaluation; 0.7 s steps; 60 s budget
    b = TimeBudget(max_time=60.0, eval_chars=100_000, margin=1.0)
    b.measured_eval(0.4096, 4096, at=1.0)
    b.measured_step(0.7)
    steps, ended = _run_until_stop(b, 1.0, 0.7)
    assert b.reserve == 10.0
    assert steps == 69 and ended + b.reserve <= 60.0 < ended + 0.7 + b.reserve
    # the margin and the slack come off the end, nothing else
    b2 = TimeBudget(max_time=60.0, eval_chars=100_000, margin=1.05, slack=0.1)
    b2.measured_eval(0.4096, 4096, at=1.0)
    b2.measured_step(0.7)
    steps2, ended2 = _run_until_stop(b2, 1.0, 0.7)
    assert ended2 + 10.0 <= 60.0 - 0.6 < ended2 + 0.7 + 10.0
    assert steps2 == 69 and ended2 + b2.reserve <= 60.0


def test_the_next_step_is_predicted_by_the_median_of_recent_steps():
    b = TimeBudget(max_time=100.0, eval_chars=0)
    assert b.step_seconds == 0.0
    for s in (0.5, 0.5, 9.0, 0.5, 0.6):                # one slow step (a page fault, a probe)
        b.measured_step(s)
    assert b.step_seconds == 0.5
    assert not b.time_up(99.4) and b.time_up(99.5)
    for s in (2.0, 2.0, 2.0):                          # the machine got slower: it follows
        b.measured_step(s)
    assert b.step_seconds == 2.0


def test_start_up_of_the_first_scoring_call_is_not_timed():
    # a scorer whose first call pays 5 s of start-up, then 1 ms a character (issue 20, item 4)
    clock = [0.0]
    calls = []

    def score(n):
        clock[0] += (5.0 if not calls else 0.0) + n * 1e-3
        calls.append(n)
        return n

    seconds, chars = time_sample(score, lambda: clock[0], sample=4096, warmup=512)
    assert calls == [512, 4096] and chars == 4096 and abs(seconds - 4.096) < 1e-9
    b = TimeBudget(max_time=600.0, eval_chars=100_000, margin=1.0)
    b.measured_eval(seconds, chars, at=0.0)
    assert abs(b.reserve - 100.0) < 1e-6               # not (5 + 4.096) / 4096 * 100,000 = 222 s


def test_the_sample_waits_for_the_thread_policy_to_settle():
    clock, calls = [0.0], []
    deciding = [3]                                     # warming up / probing for 3 more calls

    def score(n):
        clock[0] += n * 1e-3 * (4.0 if deciding[0] else 1.0)      # probes are slow
        deciding[0] = max(0, deciding[0] - 1)
        calls.append(n)
        return n

    seconds, _ = time_sample(score, lambda: clock[0], sample=1000, warmup=100,
                             phase=lambda: deciding[0] > 0, settled=lambda: deciding[0] == 0)
    assert calls == [100, 100, 100, 1000] and abs(seconds - 1.0) < 1e-9

    # a re-probe that starts during the timed sample: warmed up and timed again
    clock, calls, phases = [0.0], [], iter([0, 1, 1, 1])
    now = [0]

    def score2(n):
        clock[0] += n * 1e-3
        calls.append(n)
        return n

    def phase():
        now[0] = next(phases, now[0])
        return now[0]

    time_sample(score2, lambda: clock[0], sample=1000, warmup=100, phase=phase)
    assert calls == [100, 1000, 100, 1000]


def test_a_budget_too_short_for_the_final_evaluation_is_refused_in_one_line():
    b = TimeBudget(max_time=30.0, eval_chars=111_539, margin=1.0)
    b.measured_eval(1.2, 4096, at=0.0)                 # ~33 s of evaluation
    msg = b.too_short(spent=0.0)
    assert msg is not None and "\n" not in msg
    assert msg.startswith("--max-time 30 is too short here") and "111,539 characters" in msg
    assert "~33 s" in msg and "--max-time 70 or more" in msg and "--val-fraction" in msg
    msg = b.too_short(spent=10.0)                      # a resume: budgets are totals
    assert msg is not None and "20 s of the budget are left" in msg and "total" in msg
    assert b.too_short(spent=30.0) is None             # used up: resume_note's to say
    b.measured_eval(0.4, 4096, at=0.0)
    assert b.too_short(spent=0.0) is None              # 11 s: it fits
    assert TimeBudget(max_time=None, eval_chars=10).too_short(0.0) is None


def test_an_early_checkpoint_times_the_save_with_a_time_budget():
    b = TimeBudget(max_time=100.0, eval_chars=10)
    assert not b.save_due(9.0, 0.0, every=60.0) and b.save_due(10.0, 0.0, every=60.0)
    b.measured_save(0.3)
    assert not b.save_due(20.0, 10.0, every=60.0) and b.save_due(70.0, 10.0, every=60.0)
    assert not b.save_due(50.0, 0.0, every=0.0)        # no saves between evaluations: none early
    assert not TimeBudget(None, 10).save_due(50.0, 0.0, every=60.0)


def test_a_last_measurement_comes_shortly_before_the_planned_stop():
    b = TimeBudget(max_time=100.0, eval_chars=1000, margin=1.0, remeasure_every=30.0)
    b.measured_eval(10.0, 1000, at=0.0)                # reserve 10 s: training stops near 90 s
    assert not b.remeasure_due(29.0) and b.remeasure_due(30.0)
    b.measured_eval(10.0, 1000, at=60.0)
    assert not b.remeasure_due(79.0) and b.remeasure_due(80.0)      # the last 10 % before 90
    b.measured_eval(10.0, 1000, at=80.0)
    assert not b.remeasure_due(89.0)


# ----------------------------------------------------------------------------- in a real run

import json  # noqa: E402
import os  # noqa: E402

from charwise.api import train  # noqa: E402

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "data", "tinyshakespeare.txt")


def test_a_time_budget_run_ends_at_its_budget_with_the_evaluation_inside(tmp_path):
    lines = []
    res = train(SHAKESPEARE, out=tmp_path / "t", preset="spec", max_time=8.0, max_steps=10**6,
                val_fraction=0.02, eval_every=0, progress=None, log=lines.append)
    assert res.stopped_because == "time"
    # the reserve is measured, so the run neither overruns nor stops far short (the benchmark
    # holds it to 5 %; a loaded test machine gets some slack)
    assert 0.75 * 8.0 <= res.train_seconds <= 1.1 * 8.0
    # off a terminal: the final evaluation is announced as its own phase
    assert any(line.startswith("final evaluation: scoring") for line in lines)


def test_warmup_is_a_fraction_of_a_time_budget():
    from charwise.settings.train import resolve
    from charwise.training.trainer import learning_rate
    _, t = resolve("spec", lr=1.0, warmup_steps=100, max_time=100.0, warmup_fraction=0.04)
    assert learning_rate(t, 0, 0.02) == 0.5                  # time passes faster than steps
    assert learning_rate(t, 0, 0.05) > 0.99                  # warm after 4 % of the budget
    assert abs(learning_rate(t, 49, 0.0) - 0.5) < 1e-9       # or after 100 steps, if sooner
    _, s = resolve("spec", lr=1.0, warmup_steps=100, max_steps=1000)
    assert abs(learning_rate(s, 49, 0.5) - 0.5) < 1e-9       # a step budget: steps only


def test_resume_says_what_budget_is_left_and_how_to_extend_it(tmp_path):
    quiet = dict(eval_every=0, threads=1)             # not progress=False: that silences the notes
    train(None, out=tmp_path / "r", max_steps=20, log=lambda *a: None, **quiet)
    said = []
    res = train(None, out=tmp_path / "r", resume=True, max_steps=20, log=said.append, **quiet)
    assert res.steps == 20
    note = next(s for s in said if s.startswith("resuming"))
    assert "is used up" in note and "totals over the whole run" in note
    assert f"charwise train --resume --out {tmp_path / 'r'} --max-steps 120" in note
    said = []
    res = train(None, out=tmp_path / "r", resume=True, max_steps=30, log=said.append, **quiet)
    assert res.steps == 30 and any("10 of 30 steps left" in s for s in said)


# ----------------------------------------------------------------------------- the loop, on a fake clock

import types  # noqa: E402

import pytest  # noqa: E402

from charwise.errors import CharwiseError  # noqa: E402
from charwise.training import trainer as loop  # noqa: E402
from charwise.training.state import END_SLACK  # noqa: E402


class FakeClock:
    """The loop's clock, advanced only by the made-up costs below: the run's timing is exact."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t


def fake_timings(monkeypatch, step: float, per_char, start_up: float = 5.0):
    """Each training step takes `step` s; scoring takes per_char(now) s a character, and the
    first scoring call pays `start_up` s once (a GPU's cuDNN handles, say)."""
    clock = FakeClock()
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    orig_step, orig_sample, orig_score = (loop.Trainer.train_step, loop.Trainer._score_sample,
                                          loop.Trainer.score)
    first = [True]

    def scoring(chars):
        clock.t += (start_up if first[0] else 0.0) + chars * per_char(clock.t)
        first[0] = False

    def train_step(self, *a):
        r = orig_step(self, *a)
        clock.t += step
        return r

    def score_sample(self, n):
        chars = orig_sample(self, n)
        scoring(chars)
        return chars

    def score(self):
        r = orig_score(self)
        scoring(self.run.evaluation.chars)
        return r

    monkeypatch.setattr(loop.Trainer, "train_step", train_step)
    monkeypatch.setattr(loop.Trainer, "_score_sample", score_sample)
    monkeypatch.setattr(loop.Trainer, "score", score)
    return clock


RUN = dict(preset="spec", max_steps=10**6, eval_every=0, threads=1, progress=False)


def test_the_loop_ends_at_the_budget_on_a_fake_clock(tmp_path, monkeypatch):
    # 1,152 characters to score at 2 ms each (2.3 s), 0.5 s steps, 20 s: training stops when one
    # more step would not leave the reserve (2.3 s x 1.05 + the slack), and the start-up of the
    # first scoring call (5 s, spent at the start) is not scaled up into the reserve
    fake_timings(monkeypatch, step=0.5, per_char=lambda now: 2e-3)
    res = loop.train(None, out=tmp_path / "r", max_time=20.0, log=lambda *a: None, **RUN)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    tb = info["time_budget"]
    evaluation = 1152 * 2e-3
    assert res.stopped_because == "time" and res.steps > 10
    assert tb["predicted_evaluation"] == tb["final_evaluation"] == round(evaluation, 3)
    assert tb["reserved"] == round(1.05 * evaluation + END_SLACK, 3)
    assert res.train_seconds <= 20.0
    assert 20.0 - res.train_seconds < 0.5 + 0.05 * evaluation + END_SLACK + 1e-6


def test_a_machine_that_slows_down_before_the_end_is_measured_again(tmp_path, monkeypatch):
    # scoring gets 2x slower at 14 s (1 ms a character, then 2 ms; 0.2 s steps): the last
    # measurement, 2 s before the planned stop, sees it and stops earlier; without it the final
    # evaluation would take 2.3 s where 1.3 s were kept and overrun the budget by ~0.8 s
    fake_timings(monkeypatch, step=0.2, per_char=lambda now: 1e-3 if now < 14.0 else 2e-3)
    res = loop.train(None, out=tmp_path / "r", max_time=20.0, log=lambda *a: None, **RUN)
    tb = json.loads((tmp_path / "r" / "run.json").read_text())["time_budget"]
    evaluation = 1152 * 2e-3
    assert tb["final_evaluation"] == round(evaluation, 3) == tb["predicted_evaluation"]
    assert 20.0 - 0.2 - 0.05 * evaluation - END_SLACK - 1e-6 < res.train_seconds <= 20.0


def test_a_budget_too_short_for_the_evaluation_stops_before_writing_a_run(tmp_path, monkeypatch):
    fake_timings(monkeypatch, step=0.5, per_char=lambda now: 20e-3)          # a 23 s evaluation
    with pytest.raises(CharwiseError, match=r"--max-time 20 is too short here: the final "
                                            r"evaluation of 1,152 characters alone takes ~24 s"):
        loop.train(None, out=tmp_path / "r", max_time=20.0, log=lambda *a: None, **RUN)
    assert not (tmp_path / "r").exists()               # nothing of the refused run is left


def test_the_cli_refuses_a_too_short_budget_in_one_line_and_a_resumed_run_stays_as_it_was(
        tmp_path, monkeypatch, capsys):
    from charwise.cli import main
    run = tmp_path / "r"
    loop.train(None, out=run, preset="spec", max_steps=5, eval_every=0, threads=1,
               progress=False, log=lambda *a: None)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    fake_timings(monkeypatch, step=0.5, per_char=lambda now: 20e-3)          # a 23 s evaluation
    code = main(["train", "--resume", "--out", str(run), "--max-time", "20", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--max-time 20 is too short here" in err
    assert "(a total over the whole run)" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_step_speed_that_drifts_far_from_the_timed_one_is_timed_again():
    """A busy machine: the evaluation was timed when steps took 0.1 s; they now take 0.3 s, so
    the reserve (timed at the old speed) is remeasured before the next regular measurement."""
    b = TimeBudget(max_time=120.0, eval_chars=1000, remeasure_every=30.0)
    for _ in range(5):
        b.measured_step(0.1)
    b.measured_eval(1.0, 1000, at=10.0)
    assert b.step_at_measure == 0.1
    for _ in range(5):
        b.measured_step(0.14)                       # within STEP_DRIFT: not yet
    assert not b.remeasure_due(20.0)
    for _ in range(5):
        b.measured_step(0.3)
    assert not b.remeasure_due(10.0 + DRIFT_GAP - 0.1)      # not more often than DRIFT_GAP
    assert b.remeasure_due(10.0 + DRIFT_GAP + 0.1)
    b.measured_eval(3.0, 1000, at=16.0)             # timed again: the drift is the new normal
    assert not b.remeasure_due(25.0)
    for _ in range(5):
        b.measured_step(0.1)                        # the other process left: faster again
    assert b.remeasure_due(25.0)
