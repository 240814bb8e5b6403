"""Issue 13: runs are never lost, mixed or clobbered; sizes are bounded; damaged files are
refused with one line (exit 2) naming the file and the problem."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import one_line_error, run_cli

QUIET = dict(progress=False, log=lambda *a: None)
FAST = ["--precision", "fp32", "--threads", "1", "--quiet"]


def cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "charwise", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)




def wait_until(cond, proc, timeout=90):
    t = time.time()
    while not cond():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t < timeout
        time.sleep(0.02)


# ----------------------------------------------------------------------------- 1. run lock

def test_second_writer_exits_2_naming_holder_and_kill_releases_lock(tmp_path):
    run = tmp_path / "run"
    a = cli("train", "--out", run, "--max-steps", "100000", "--eval-every", "10", *FAST)
    try:
        wait_until(lambda: (run / "last.safetensors").exists(), a)
        t = time.perf_counter()
        v = subprocess.run([sys.executable, "-m", "charwise", "--version"], capture_output=True)
        startup = time.perf_counter() - t
        assert v.returncode == 0
        for args in (["--resume"], ["--force"]):                # a resume, and a fresh run
            t = time.perf_counter()
            b = cli("train", "--out", run, *args, "--max-steps", "5", *FAST)
            _, err = b.communicate(timeout=60)
            took = time.perf_counter() - t
            assert b.returncode == 2, err
            assert f"in use by process {a.pid}" in err and "Traceback" not in err
            assert took < startup + 1.0, (took, startup)
        assert a.poll() is None                                   # the holder trains on
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(30)
    # SIGKILL: the OS dropped the lock; the run resumes at once
    c = cli("train", "--out", run, "--resume", "--max-steps", "30", "--quiet")
    _, err = c.communicate(timeout=180)
    assert c.returncode == 0, err


def test_lock_is_taken_once_and_exclusive_in_this_process_and_across(tmp_path):
    """train() takes the lock once (the CLI no longer takes it first): a second take is refused
    in the holding process too, naming it; released, the lock is free for another process."""
    from charwise.errors import CharwiseError
    from charwise.runs.runlock import lock_run
    run = tmp_path / "r"
    outer = lock_run(run)
    with pytest.raises(CharwiseError, match=f"in use by process {os.getpid()}"):
        lock_run(run)
    code = ("import sys; from charwise.runs.runlock import lock_run\n"
            "from charwise.settings.train import CharwiseError\n"
            "try:\n    lock_run(sys.argv[1])\nexcept CharwiseError as e:\n    print(e); sys.exit(2)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    r = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and f"process {os.getpid()}" in r.stdout
    outer.release()
    r = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout


def test_refuse_if_held_reports_a_holder_and_changes_nothing(tmp_path):
    """The CLI's early check (before torch loads): the holder's error, or nothing at all."""
    from charwise.errors import CharwiseError
    from charwise.runs.runlock import LOCK, lock_run, refuse_if_held
    run = tmp_path / "r"
    refuse_if_held(run)                                     # no directory: nothing made
    assert not run.exists()
    run.mkdir()
    (run / LOCK).write_text("12345\n")                      # a last holder, gone
    refuse_if_held(run)
    assert (run / LOCK).read_text() == "12345\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from charwise.runs.runlock import lock_run; "
         "lock_run(sys.argv[1]); print('locked', flush=True); sys.stdin.read()", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CharwiseError, match=f"in use by process {holder.pid}"):
            refuse_if_held(run)
    finally:
        holder.stdin.close()
        holder.wait(30)
    refuse_if_held(run)
    lock_run(run).release()                                 # the probe left the lock free


# ----------------------------------------------------------------------------- helpers

TINY = ["--hidden-size", "8", "--embed-dim", "4", "--seq-len", "8", "--batch-size", "2",
        "--eval-every", "0", "--precision", "fp32", "--quiet"]
TEXT_A = "the quick brown fox jumps over the lazy dog. " * 40
TEXT_B = "the lazy dog jumps over the quick brown fox. " * 40        # same characters


@pytest.fixture
def tiny_run(tmp_path, capsys):
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT_A)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", corpus, "--out", run, "--max-steps", "3", *TINY)
    assert code == 0, err
    return run, corpus


def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", "cache"))
    return dst


# ----------------------------------------------------------------------------- 2. corpus on resume

def test_resume_with_another_corpus_is_refused(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    other = tmp_path / "b.txt"
    other.write_text(TEXT_B)
    code, _, err = run_cli(capsys, "train", other, "--out", run, "--resume", "--max-steps", "6")
    one_line_error(code, err, str(other), "not the text this run was trained on")
    assert json.loads((run / "run.json").read_text())["step"] == 3        # nothing trained


def test_resume_uses_the_stored_absolute_path_from_anywhere(tiny_run, tmp_path, capsys, monkeypatch):
    run, corpus = tiny_run
    info = json.loads((run / "run.json").read_text())
    assert info["corpus"]["source"] == str(corpus.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.txt").write_text(TEXT_B)          # same name, other text, in the new cwd
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "5")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["corpus"]["sha256"] == info["corpus"]["sha256"]


def test_resume_stops_when_the_stored_corpus_changed_or_vanished(tiny_run, tmp_path, capsys):
    run, corpus = tiny_run
    corpus.write_text(TEXT_B)                         # same vocabulary, other text
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "6")
    one_line_error(code, err, str(corpus.resolve()), "changed since this run began")
    moved = tmp_path / "moved.txt"
    corpus.rename(moved)
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "6")
    one_line_error(code, err, "cannot be read", "--resume --out")
    moved.write_text(TEXT_A)                          # the original text, moved: fine
    code, _, err = run_cli(capsys, "train", moved, "--out", run, "--resume", "--max-steps", "6")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["corpus"]["source"] == str(moved.resolve())


# ----------------------------------------------------------------------------- 3. SIGINT hint

def test_interrupt_hint_is_a_command_that_resumes_that_run():
    from charwise.cli import build_parser
    from charwise.training import TrainingInterrupted
    msg = str(TrainingInterrupted(signal.SIGINT, Path("uc")))
    hint = msg.split("continue with: ")[1].rstrip(")")
    assert hint == "charwise train --resume --out uc"
    a = build_parser().parse_args(hint.split()[1:])
    assert a.out == "uc" and a.corpus is None and a.resume


# ----------------------------------------------------------------------------- 4. resume settings

def test_resume_accepts_equal_settings_and_names_a_different_one(tiny_run, capsys):
    run, corpus = tiny_run
    code, _, err = run_cli(capsys, "train", corpus, "--out", run, "--resume", "--max-steps", "5", *TINY)
    assert code == 0, err                                      # the same command, --resume added
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "6",
                           "--precision", "bf16", "--hidden-size", "8", "--seed", "7")
    one_line_error(code, err, "--precision is 'fp32' in the run, 'bf16' given",
                   "--seed is 1337 in the run, 7 given")
    assert "hidden-size" not in err


# ----------------------------------------------------------------------------- 5. --out protection

def test_plot_and_export_out_refuse_to_replace(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    existing = tmp_path / "mine.png"
    existing.write_bytes(b"precious")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(existing)
    for cmd in (["plot", run], ["export", run]):
        code, _, err = run_cli(capsys, *cmd, "--out", existing)
        one_line_error(code, err, f"{existing}: exists; use --force")
        for target in (fifo, link):
            code, _, err = run_cli(capsys, *cmd, "--out", target, "--force")
            one_line_error(code, err, str(target), "refusing to replace it")
        code, _, err = run_cli(capsys, *cmd, "--out", run / "run.json", "--force")
        one_line_error(code, err, "one of the run's own files")
    assert existing.read_bytes() == b"precious" and fifo.is_fifo() and link.is_symlink()
    assert json.loads((run / "run.json").read_text())["step"] == 3
    code, out, err = run_cli(capsys, "plot", run, "--out", existing, "--force")
    assert code == 0, err
    assert existing.read_bytes().startswith(b"\x89PNG")
    for _ in range(2):                                    # its own default output: replaced
        assert run_cli(capsys, "plot", run)[0] == 0
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- 6. size bounds

@pytest.mark.parametrize("flag,value", [("--layers", "1000000"), ("--hidden-size", "1000000000"),
                                        ("--embed-dim", "1000000000"), ("--batch-size", "100000000")])
def test_sizes_that_cannot_fit_are_refused_before_allocating(tmp_path, capsys, flag, value):
    run = tmp_path / "run"
    t = time.perf_counter()
    code, _, err = run_cli(capsys, "train", "--out", run, "--max-steps", "2", flag, value, "--quiet")
    one_line_error(code, err, "GB of memory; this machine has")
    assert time.perf_counter() - t < 5
    assert not run.exists()                       # nothing half-made


def test_threads_are_capped_at_the_cpu_count(tmp_path):
    p = cli("train", "--out", tmp_path / "run", "--threads", "1000000", "--max-steps", "2", "--quiet")
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err                 # was a segfault (rc 139)
    assert "Traceback" not in err


def test_memory_estimate_against_available(monkeypatch):
    from charwise import bounds
    from charwise.errors import CharwiseError
    from charwise.settings.train import ModelConfig
    cfg = ModelConfig(hidden_size=512, vocab_size=100)
    assert bounds.parameter_count(cfg) == sum(
        int(__import__("math").prod(s)) for s in bounds.expected_shapes(cfg).values())
    bounds.check_training(cfg, 16, 64, available=1 << 34)
    with pytest.raises(CharwiseError, match="needs ~.* GB of memory; this machine has 0.1 GB"):
        bounds.check_training(cfg, 16, 64, available=100_000_000)
    assert bounds.available_bytes() > 0


@pytest.mark.parametrize("key,value,needle", [("hidden_size", 10 ** 9, "GB of memory"),
                                              ("layers", 10 ** 6, "GB of memory"),
                                              ("hidden_size", 12000, "has shape")])
def test_run_json_sizes_checked_before_loading(trained_run, tmp_path, capsys, monkeypatch, key, value, needle):
    import charwise.model
    run = copy_run(trained_run, tmp_path / "r")
    info = json.loads((run / "run.json").read_text())
    info["model"][key] = value
    (run / "run.json").write_text(json.dumps(info))

    def no_model(*a, **k):
        raise AssertionError("a model was built")
    monkeypatch.setattr(charwise.model.CharRNN, "__init__", no_model)
    for cmd in (["sample", run, "-n", "5"], ["eval", run, run / "run.json"]):
        code, _, err = run_cli(capsys, *cmd)
        one_line_error(code, err, needle)


# ----------------------------------------------------------------------------- 7. non-finite weights

def test_non_finite_weights_are_refused_on_load(trained_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    run = copy_run(trained_run, tmp_path / "r")
    w = load_file(run / "model.safetensors")
    w["head.bias"][3] = float("nan")
    from safetensors import safe_open
    with safe_open(str(trained_run / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(w, run / "model.safetensors", metadata=meta)
    (tmp_path / "t.txt").write_text("It is a truth")
    for cmd in (["sample", run, "-n", "5"], ["eval", run, tmp_path / "t.txt"],
                ["analyze", run, "--out", tmp_path / "an"]):
        code, _, err = run_cli(capsys, *cmd)
        one_line_error(code, err, "model.safetensors", "head.bias", "non-finite")


# ----------------------------------------------------------------------------- 8. damaged files

def _tamper_last(run, change):
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(run / "last.safetensors"), "pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["charwise"])
    change(tensors, meta)
    header["charwise"] = json.dumps(meta)
    save_file(tensors, run / "last.safetensors", metadata=header)


def _nan_moment(t, m):
    t["optim/0/exp_avg_sq"][0] = float("nan")


@pytest.mark.parametrize("change,needle", [
    (lambda t, m: m.update(step=-4), "step must be an integer >= 0"),
    (lambda t, m: m.update(numpy_rng={"bit_generator": "PCG64", "state": 5}), "NumPy RNG state"),
    (lambda t, m: m.update(python_rng=[3, [1, 2], None]), "Python RNG state"),
    (lambda t, m: t.pop("optim/1/exp_avg"), "optim/1/exp_avg is missing"),
    (lambda t, m: t.update({"optim/0/exp_avg": t["optim/0/exp_avg"][:2].clone()}), "has shape"),
    (_nan_moment, "non-finite"),
    (lambda t, m: m.update(history=[5]), "damaged history entry 0"),
    (lambda t, m: t.update({"rng/torch": t["rng/torch"][:, :9].clone()}), "torch RNG state"),
    (lambda t, m: t.update({"rng/cuda": t["rng/torch"].repeat(3, 1)[:, :16].clone()}), "CUDA RNG state"),
])
def test_damaged_resume_state_is_one_line(tiny_run, capsys, change, needle):
    run, _ = tiny_run
    _tamper_last(run, change)
    tampered = (run / "last.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "6")
    one_line_error(code, err, "last.safetensors", needle)
    assert (run / "last.safetensors").read_bytes() == tampered        # left as it was found


def test_damaged_metrics_history_and_deep_json_are_one_line(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": "three", "loss": 1.0}\n')
    code, _, err = run_cli(capsys, "plot", run)
    one_line_error(code, err, "metrics.jsonl", "line 5")
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "6")
    one_line_error(code, err, "metrics.jsonl", "line 5")
    info = json.loads((run / "run.json").read_text())
    for bad in ({"history": [["x"]]}, {"history": "x"}, {"best": {"step": "x"}}, {"corpus": 3}):
        (run / "run.json").write_text(json.dumps({**info, **bad}))
        code, _, err = run_cli(capsys, "info", run)
        one_line_error(code, err, "run.json")
    (run / "run.json").write_text("[" * 5_000_000 + "]" * 5_000_000)
    code, _, err = run_cli(capsys, "info", run)
    one_line_error(code, err, "run.json", "nested more than")


# ----------------------------------------------------------------------------- 9. serve

def test_serve_deep_json_and_huge_integers_are_400(trained_run):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import http.client
    from urllib.parse import urlparse

    from charwise.asgi import background_server
    from charwise.server import create_app
    with background_server(create_app(trained_run)) as url:
        u = urlparse(url)
        for raw in ('{"prime": ' + "[" * 8000 + "]" * 8000 + "}",
                    '{"n": ' + "9" * 4000 + "}", '{"seed": -' + "9" * 4000 + "}",
                    '{"n": ' + "9" * 5000 + "}", '{"top_p": 1e999}'):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
            conn.request("POST", "/api/generate", body=raw.encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 400, (raw[:20], body)
            assert body["error"] and len(body["error"]) < 200
            conn.close()


# ----------------------------------------------------------------------------- 10. sample seed

def test_sample_negative_seed_is_one_line(trained_run, capsys):
    code, out, err = run_cli(capsys, "sample", trained_run, "--seed", "-1", "-n", "5")
    one_line_error(code, err, "--seed")
    assert out == ""


# ----------------------------------------------------------------------------- 12. smaller

def test_orphaned_temp_files_are_cleaned_when_a_run_opens(tiny_run, capsys):
    run, _ = tiny_run
    orphans = [run / ".last.safetensors.x1y2.tmp", run / ".run.json.abc.tmp", run / "cache" / ".k.tokens.q.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", "4")
    assert code == 0, err
    assert not any(p.exists() for p in orphans)


def test_run_json_never_names_unwritten_best_weights(tmp_path, monkeypatch):
    from safetensors import safe_open

    from charwise.errors import CharwiseError
    from charwise.runs import resume
    from charwise.training import train

    def disk_full(out, *a, **k):
        raise CharwiseError(f"{out / 'last.safetensors'}: disk full while writing; the previous file is intact")
    monkeypatch.setattr(resume, "save_last", disk_full)
    run = tmp_path / "run"
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT_A)
    with pytest.raises(CharwiseError, match="disk full"):
        train(corpus, out=run, hidden_size=8, embed_dim=4, seq_len=8, batch_size=2, max_steps=4,
              eval_every=2, precision="fp32", **QUIET)
    best = json.loads((run / "run.json").read_text())["best"]
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        stored = json.loads(f.metadata()["charwise"])
    assert best is not None and best["step"] == stored["step"]


def test_prepare_verify_checks_the_recorded_sha256(tmp_path, capsys):
    src = tmp_path / "a.txt"
    src.write_text(TEXT_A)
    prepared = tmp_path / "p"
    assert run_cli(capsys, "prepare", src, "--out", prepared)[0] == 0
    code, out, err = run_cli(capsys, "prepare", "--verify", prepared)
    assert code == 0 and "sha256 matches" in out, err
    tok = prepared / "tokens.bin"
    data = bytearray(tok.read_bytes())
    assert data[0] != data[1]
    data[0], data[1] = data[1], data[0]                  # same size, same ids: only the hash sees it
    tok.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "prepare", "--verify", prepared)
    one_line_error(code, err, "tokens.bin", "differs from")


# ----------------------------------------------------------------------------- 11. vocabulary

def test_large_vocabulary_logits_are_computed_in_bounded_pieces():
    import numpy as np

    from charwise.data.vocab import Vocab
    from charwise.generation.charmodel import CharModel
    from charwise.model import CharRNN
    from charwise.scoring import evaluate_tokens
    from charwise.settings.train import ModelConfig
    V, budget = 20000, 1 << 22
    net = CharRNN(ModelConfig(hidden_size=4, embed_dim=4, vocab_size=V))
    seen = []
    net.head.register_forward_hook(lambda m, i, o: seen.append(o.numel()))
    tokens = np.random.default_rng(0).integers(0, V, 3000)
    assert evaluate_tokens(net, tokens)["chars"] == 2999
    assert max(seen) <= budget                    # was 3000 x 20000 logits at once
    seen.clear()
    vocab = Vocab(tuple(chr(0x4E00 + i) for i in range(V)))
    logits, _ = CharModel(net.eval(), vocab, {}).prime("".join(vocab.chars[:3000]))
    assert logits.shape == (1, V) and max(seen) <= budget


# ---- round 3: nothing overwritten

AN = ["-n", "5", "--neuron-chars", "50", "--temperatures", "1", "--threads", "1", "--precision", "fp32"]


def snapshot(d):
    """Every file under `d` (hidden ones too) with its bytes."""
    return {p.relative_to(d): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def test_analyze_replaces_an_earlier_analysis_only_with_force(tiny_run, tmp_path, capsys, monkeypatch):
    import charwise
    run, _ = tiny_run
    out = tmp_path / "an"
    assert run_cli(capsys, "analyze", run, "--out", out, *AN)[0] == 0
    (out / "report.html").write_text("my notes")
    before = snapshot(out)
    code, _, err = run_cli(capsys, "analyze", run, "--out", out, *AN)
    one_line_error(code, err, "exists; use --force")
    with pytest.raises(charwise.CharwiseError) as e:       # the API: the same refusal
        charwise.analyze(run, out=out, n=5, log=lambda *a: None)
    assert err == f"charwise: error: {e.value}\n"
    assert snapshot(out) == before
    assert run_cli(capsys, "analyze", run, "--out", out, *AN, "--force")[0] == 0
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    # an earlier analysis's file this one does not write (a transformer's attention maps,
    # here beside an LSTM's heatmap) was left stale beside the new ones: now replaced too
    (out / "attention.png").write_bytes(b"an earlier analysis's")
    assert run_cli(capsys, "analyze", run, "--out", out, *AN, "--force")[0] == 0
    files = json.loads((out / "analysis.json").read_text())["files"]
    assert not (out / "attention.png").exists() and (out / "heatmap.png").is_file()
    assert {Path(f).name for f in files.values()} | {"analysis.json"} == {p.name for p in out.iterdir()}
    monkeypatch.chdir(tmp_path)                             # `analyze base` writes ./base-analysis
    (tmp_path / "base-analysis").mkdir()
    (tmp_path / "base-analysis" / "analysis.json").write_text("mine")
    code, _, err = run_cli(capsys, "analyze", "base", *AN)
    one_line_error(code, err, "base-analysis/analysis.json: exists; use --force")
    assert (tmp_path / "base-analysis" / "analysis.json").read_text() == "mine"


def test_onnx_export_to_an_existing_default_is_refused_like_web(tiny_run, tmp_path, capsys, monkeypatch):
    run, _ = tiny_run
    for fmt, default in (("onnx", run / "model.onnx"), ("web", run / "model.html")):
        default.write_bytes(b"an earlier export")
        code, _, err = run_cli(capsys, "export", run, "--format", fmt)
        one_line_error(code, err, f"{default}: exists; use --force")
        assert default.read_bytes() == b"an earlier export"
    monkeypatch.chdir(tmp_path)                             # `export base` writes ./base.onnx
    (tmp_path / "base.onnx").write_bytes(b"mine")
    code, _, err = run_cli(capsys, "export", "base", "--format", "onnx")
    one_line_error(code, err, "base.onnx: exists; use --force")
    assert (tmp_path / "base.onnx").read_bytes() == b"mine"


def test_demo_replaces_an_existing_run_only_with_force(tiny_run, capsys):
    from charwise.api import demo
    from charwise.errors import CharwiseError
    run, _ = tiny_run
    before = snapshot(run)
    code, _, err = run_cli(capsys, "demo", "--out", run)
    one_line_error(code, err, f"{run}: directory exists and is not empty", "--force")
    with pytest.raises(CharwiseError, match="not empty"):
        demo(run, log=lambda *a: None)
    assert snapshot(run) == before


def test_a_config_file_cannot_carry_force(tiny_run, tmp_path, capsys):
    run, corpus = tiny_run
    before = snapshot(run)
    evil = tmp_path / "evil.toml"
    evil.write_text(f'corpus = "{corpus.name}"\nout = "{run.name}"\nforce = true\nmax-steps = 2\n')
    code, _, err = run_cli(capsys, "train", "--config", evil, *TINY)
    one_line_error(code, err, str(evil), "'force' is not allowed in a config file")
    assert snapshot(run) == before


def test_no_output_lands_in_another_runs_directory_even_with_force(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    other = copy_run(run, tmp_path / "other")
    before = snapshot(other)
    for argv in (["export", run, "--format", "web", "--out", other / "model.safetensors"],
                 ["export", run, "--format", "onnx", "--out", other / "new.onnx"],
                 ["export", run, "--format", "web", "--out", other / "cache" / "x.html"],
                 ["plot", run, "--out", other / "curve.png"],
                 ["analyze", run, "--out", other, *AN],
                 ["analyze", run, "--out", other / "analysis", *AN]):
        code, _, err = run_cli(capsys, *argv, "--force")
        one_line_error(code, err, f"lies in the run directory {other.resolve()}", "--force or not")
    assert snapshot(other) == before
    assert run_cli(capsys, "plot", run, "--out", run / "mine.png")[0] == 0     # its own run: fine


def test_init_from_the_run_it_would_replace_is_refused(tiny_run, tmp_path, capsys):
    run, corpus = tiny_run
    link = tmp_path / "link"
    link.symlink_to(run)
    before = snapshot(run)
    for source, out in ((run, run), (link, run), (run, f"{run}/")):
        code, _, err = run_cli(capsys, "train", corpus, "--init-from", source, "--out", out,
                               "--force", "--max-steps", "2", *TINY)
        one_line_error(code, err, f"--init-from {source} is --out", "choose another --out")
    assert snapshot(run) == before


def test_prepare_waits_for_no_one_writing_the_run(tiny_run, tmp_path, capsys):
    _, corpus = tiny_run
    run = tmp_path / "starting"         # a run that has just begun: no run.json yet, only its lock
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from charwise.runs.runlock import lock_run; "
         "lock_run(sys.argv[1]); print('locked', flush=True); sys.stdin.read()", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        code, _, err = run_cli(capsys, "prepare", corpus, "--out", run, "--force")
        # the holder may be a prepare as well as a train (it said "another charwise train")
        one_line_error(code, err, f"in use by process {holder.pid}", "charwise train or prepare")
        assert snapshot(run) == before
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_a_refused_train_leaves_the_lock_file_alone(tiny_run, tmp_path, capsys):
    import charwise
    run, corpus = tiny_run
    (run / ".lock").write_text("12345\n")             # the last holder's PID
    code, _, err = run_cli(capsys, "train", corpus, "--out", run, "--max-steps", "2", *TINY)
    one_line_error(code, err, "not empty")
    with pytest.raises(charwise.CharwiseError, match="not empty"):
        charwise.train(corpus, out=run, max_steps=2, **QUIET)
    assert (run / ".lock").read_text() == "12345\n"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", corpus, "--out", mine, *TINY)
    one_line_error(code, err, "not empty")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]      # no .lock left in it


def test_paths_that_are_not_utf8_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = os.fsdecode(b"bad\xffname.txt")                  # what argv holds for those bytes
    Path(bad).write_text(TEXT_A)
    Path("good.txt").write_text(TEXT_A)
    for argv in (["train", bad, "--out", "r"], ["train", "good.txt", "--out", os.fsdecode(b"r\xff")]):
        code, _, err = run_cli(capsys, *argv, "--max-steps", "2", *TINY)
        one_line_error(code, err, "is not valid UTF-8", "bad\\xffname.txt" if bad in argv else "r\\xff")
    Path("docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(TEXT_A)
    os.rename(bad, os.path.join("docs", bad))
    code, _, err = run_cli(capsys, "prepare", "docs", "--out", "p")
    one_line_error(code, err, "is not valid UTF-8")
    assert sorted(os.listdir(tmp_path)) == ["docs", "good.txt"]         # nothing half made
    code, _, err = run_cli(capsys, "train", "good.txt", "--out", "r", "--max-steps", "2", *TINY)
    assert code == 0, err                                  # and the next attempt is not refused


def test_a_corpus_changed_while_it_is_read_is_refused_and_never_cached(tmp_path, capsys, monkeypatch):
    from charwise.data import corpus as data
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT_A)
    monkeypatch.setattr(data, "CHUNK_BYTES", 64)
    real, calls = data.iter_text_chunks, []

    def edited_during_the_vocabulary_pass(path, *a, **k):
        calls.append(path)
        for i, text in enumerate(real(path, *a, **k)):
            if len(calls) == 1 and i == 1:               # new characters where pass 1 has been
                corpus.write_text("ZQX! " * 12 + TEXT_A)
            yield text
    monkeypatch.setattr(data, "iter_text_chunks", edited_during_the_vocabulary_pass)
    code, _, err = run_cli(capsys, "train", corpus, "--out", tmp_path / "r", "--max-steps", "2", *TINY)
    one_line_error(code, err, str(corpus), "changed while it was read")
    assert not (tmp_path / "r").exists()                   # no cache, no half-made run to refuse
    calls.clear()
    corpus.write_text(TEXT_A)
    cache = tmp_path / "cache"
    with pytest.raises(data.CharwiseError, match="changed while it was read"):
        data.prepare_corpus(corpus, cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())   # no tokens with ids off the vocabulary


@pytest.mark.parametrize("failing_write", [1, 2])          # tokens.bin, then prepared.json
def test_prepare_on_a_full_disk_leaves_nothing_behind(tmp_path, capsys, monkeypatch, failing_write):
    import errno
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT_A)
    real, calls = os.fsync, []

    def full(fd):
        calls.append(fd)
        if len(calls) == failing_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)
    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run_cli(capsys, "prepare", corpus, "--out", tmp_path / "p")
    one_line_error(code, err, "disk full")
    assert not (tmp_path / "p").exists()
    (tmp_path / "q").mkdir()                               # a directory the user made stays, empty
    calls.clear()
    code, _, err = run_cli(capsys, "prepare", corpus, "--out", tmp_path / "q")
    one_line_error(code, err, "disk full")
    assert list((tmp_path / "q").iterdir()) == []
