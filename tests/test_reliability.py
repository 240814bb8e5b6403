"""Runs survive kills, signals, numerical faults and bad files; resuming is bit-exact."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from charwise.errors import CharwiseError
from charwise.generation.params import SamplingParams
from charwise.generation.sampler import draw
from charwise.training import train

QUIET = dict(progress=False, log=lambda *a: None)
ARGS = ["--max-steps", "240", "--eval-every", "20", "--precision", "fp32", "--threads", "1",
        "--device", "cpu", "--quiet"]          # bit-identical resumes: a CPU property


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "charwise", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def steps_logged(run):
    try:
        return sum(1 for _ in open(run / "metrics.jsonl"))
    except FileNotFoundError:
        return 0


def wait_for_steps(run, n, proc, timeout=60):
    t = time.time()
    while steps_logged(run) < n and proc.poll() is None and time.time() - t < timeout:
        time.sleep(0.01)


def final_weights(run):
    return load_file(run / "last.safetensors")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = cli("train", "--out", out, *ARGS)
    assert p.wait(120) == 0, p.stderr.read()
    return out


def assert_same(a, b):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("kill_after", [15, 70, 150])
def test_sigkill_then_resume_is_bit_identical(tmp_path, reference_run, kill_after):
    out = tmp_path / "run"
    p = cli("train", "--out", out, *ARGS)
    wait_for_steps(out, kill_after, p)
    p.kill()
    p.wait(30)
    code = subprocess.run([sys.executable, "-m", "charwise", "train", "--resume", "--out", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=120)
    if not (out / "last.safetensors").exists():        # killed before the first checkpoint
        assert code.returncode == 2 and "no last.safetensors" in code.stderr
        return
    assert code.returncode == 0, code.stderr
    assert_same(reference_run, out)
    info = json.loads((out / "run.json").read_text())
    ref = json.loads((reference_run / "run.json").read_text())
    assert [h["val_loss"] for h in info["history"]] == [h["val_loss"] for h in ref["history"]]


KILL_IN_WRITE = r"""
import os, signal, sys
import charwise.runs.rundir as ck
real = ck.atomic_write_bytes
calls = {"n": 0}
def dying_write(path, data):
    if str(path).endswith("last.safetensors"):
        calls["n"] += 1
        if calls["n"] == 3:                       # the third checkpoint dies half written
            with ck.atomic_writer(path) as f:
                f.write(data[: len(data) // 2]); f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
ck.atomic_write_bytes = dying_write
from charwise.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, reference_run):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, "train", "--out", str(out), *ARGS],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL
    # the previous checkpoint (step 40) is intact; a half-written temp file may be left over
    from charwise.runs.rundir import load_tensors
    _, meta = load_tensors(out / "last.safetensors")
    assert meta["step"] == 40
    r = subprocess.run([sys.executable, "-m", "charwise", "train", "--resume", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_same(reference_run, out)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_checkpoint_and_resume_matches(tmp_path, reference_run, sig, code):
    out = tmp_path / "run"
    p = cli("train", "--out", out, *ARGS)
    wait_for_steps(out, 50, p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "charwise train --resume" in err and "Traceback" not in err
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "interrupted" and 50 <= info["step"] < 240
    r = subprocess.run([sys.executable, "-m", "charwise", "train", "--resume", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_same(reference_run, out)


def test_nan_steps_are_skipped_and_repeated_faults_stop(tmp_path, monkeypatch):
    T = sys.modules["charwise.training.step"]           # where the training step calls F
    real_ce = T.F.cross_entropy
    calls = {"n": 0}

    def flaky(*a, **kw):
        if kw.get("reduction") == "none":                # an evaluation's per-position losses
            return real_ce(*a, **kw)
        calls["n"] += 1                                  # training steps only
        out = real_ce(*a, **kw)
        return out * float("nan") if calls["n"] in (5, 6, 30) else out
    monkeypatch.setattr(T.F, "cross_entropy", flaky)
    res = train(None, out=tmp_path / "r", max_steps=60, eval_every=20, **QUIET)
    faults = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
              if '"fault"' in l]
    assert [f["step"] for f in faults] == [4, 5, 29]
    w = load_file(tmp_path / "r" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())
    assert np.isfinite(res.best_val_loss)

    monkeypatch.setattr(T.F, "cross_entropy", lambda *a, **kw: real_ce(*a, **kw) * float("nan"))
    with pytest.raises(CharwiseError, match="diverged"):
        train(None, out=tmp_path / "bad", max_steps=60, **QUIET)


def test_step_values_are_read_every_n_steps_and_a_fault_is_caught_before_a_save(tmp_path,
                                                                              monkeypatch):
    # On a GPU each read of a step's loss and grad norm is a host sync: the GPU's queue drains
    # and the GPU idles while the host catches up. The loop keeps them on the device and reads
    # them every READ_EVERY steps (forced here on the CPU), and always before an evaluation or
    # save acts on them: a NaN step must be reported (and was never applied) by then.
    T, S = sys.modules["charwise.training.trainer"], sys.modules["charwise.training.step"]
    real_ce, real_read, real_save = S.F.cross_entropy, T.read_host, T.Trainer.save
    calls, reads, saves = {"n": 0}, [], []

    def flaky(*a, **kw):
        if kw.get("reduction") == "none":
            return real_ce(*a, **kw)
        calls["n"] += 1
        out = real_ce(*a, **kw)
        return out * float("nan") if calls["n"] == 13 else out      # step 12 (0-based)

    def counted(values):
        reads.append(len(values))
        return real_read(values)

    def save(self, status):
        saves.append((self.state.step, self.state.faults, len(self.state.pending)))
        return real_save(self, status)
    monkeypatch.setattr(S.F, "cross_entropy", flaky)
    monkeypatch.setattr(T, "read_host", counted)
    monkeypatch.setattr(T.Trainer, "save", save)
    kw = dict(max_steps=40, eval_every=20, precision="fp32", threads=1, device="cpu", **QUIET)
    train(None, out=tmp_path / "every", **kw)                   # the CPU's default: every step
    assert reads == [1] * 40
    reads.clear(), saves.clear()
    calls["n"] = 0
    monkeypatch.setattr(T, "read_interval", lambda device, distributed_run: 8)
    train(None, out=tmp_path / "n8", **kw)
    assert sum(reads) == 40 and len(reads) <= 40 // 8 + 2          # 8, 16, 20 (eval), 28, 36, 40
    assert reads == [8, 8, 4, 8, 8, 4]
    # every save comes after its steps were read, the fault (step 12) counted by the first
    assert saves and all(pending == 0 for _, _, pending in saves) and saves[0][:2] == (20, 1)

    def lines(run):
        rows = [json.loads(l, parse_constant=str)                  # NaN as a string: comparable
                for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("t", "time")} for r in rows]
    assert lines("n8") == lines("every")                 # the same records (timings aside)
    assert [r["step"] for r in lines("n8") if r.get("event") == "fault"] == [12]
    a, b = (load_file(tmp_path / run / "last.safetensors") for run in ("every", "n8"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_older_checkpoints(tmp_path):
    train(None, out=tmp_path / "k", max_steps=100, eval_every=20, keep=2, **QUIET)
    kept = sorted(p.name for p in (tmp_path / "k").glob("ckpt-*.safetensors"))
    assert kept == ["ckpt-000000080.safetensors", "ckpt-000000100.safetensors"]


@settings(max_examples=300, deadline=None)
@given(n=st.integers(-5, 50), t=st.floats(allow_nan=True, allow_infinity=True, width=32),
       k=st.one_of(st.none(), st.integers(-2, 12)), p=st.one_of(st.none(), st.floats(-1, 2)))
def test_sampler_arguments_property(n, t, k, p):
    """Valid arguments always give valid ids; invalid ones always a CharwiseError."""
    valid = n >= 0 and np.isfinite(t) and t >= 0 and (k is None or k >= 1) and (p is None or 0 < p <= 1)
    if not valid:
        with pytest.raises(CharwiseError):
            SamplingParams(n=n, temperature=t, top_k=k, top_p=p)
        return
    SamplingParams(n=n, temperature=t, top_k=k, top_p=p)
    logits = np.random.default_rng(0).normal(size=(3, 10)) * 3
    ids = draw(logits, np.random.default_rng(1), t, k, p)
    assert ids.shape == (3,) and ((0 <= ids) & (ids < 10)).all()
    if t == 0:
        assert (ids == logits.argmax(1)).all()


def test_clock_checkpoints_between_evaluations_are_resume_points(tmp_path):
    """With no evaluation until the end, a run still saves on a clock (--checkpoint-every);
    each of those saves resumes to the same weights as the uninterrupted run."""
    kw = dict(max_steps=30, eval_every=0, precision="fp32", threads=1, device="cpu", **QUIET)
    run = tmp_path / "c"
    train(None, out=run, checkpoint_every=1e-6, keep=100, **kw)      # a save after every step
    kept = sorted(run.glob("ckpt-*.safetensors"))
    assert len(kept) >= 29
    final = load_file(run / "last.safetensors")
    mid = run / "ckpt-000000015.safetensors"
    (run / "last.safetensors").unlink()
    mid.rename(run / "last.safetensors")                             # as if killed after step 15
    train(None, out=run, resume=True, **{k: v for k, v in kw.items() if k != "precision"})
    again = load_file(run / "last.safetensors")
    for k in final:
        if k.startswith("model/"):
            assert torch.equal(final[k], again[k]), k
