"""Round 3 of bad input: odd encodings, damaged run files, extreme numbers, serve messages.

Each refusal is one line on stderr, exit 2, never a traceback, with nothing written first;
the serve checks answer JSON 4xx naming the field (issue 26)."""
import contextlib
import json
import os
import shutil
import signal

import numpy as np
import pytest

from conftest import one_line_error, run_cli

QUIET = dict(progress=False, log=lambda *a: None)
TINY = dict(hidden_size=8, embed_dim=4, seq_len=8, batch_size=2, eval_every=0, max_steps=3,
            threads=1, precision="fp32", device="cpu")
TINY_FLAGS = ["--hidden-size", "8", "--embed-dim", "4", "--seq-len", "8", "--batch-size", "2",
              "--eval-every", "0", "--max-steps", "2", "--threads", "1", "--precision", "fp32",
              "--quiet"]
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40




@contextlib.contextmanager
def bounded(seconds, extra_bytes=2 << 30):
    """Fail, instead of hanging the suite or filling the machine's memory, when the block runs
    longer than `seconds` or allocates more than `extra_bytes` of address space."""
    import resource

    def timeout(*_):
        raise AssertionError(f"still running after {seconds} s (a hang)")
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limits = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, limits[1]))
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, limits)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text(TEXT)
    return p


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus):
    """A 1x8 LSTM trained 3 steps (code points): a run directory to copy and damage."""
    from charwise.training import train
    out = tmp_path_factory.mktemp("tiny") / "run"
    train(str(corpus), out=out, **TINY, **QUIET)
    return out


@pytest.fixture
def run(tiny, tmp_path):
    """A private copy of the tiny run (its corpus cache too: a resume finds it)."""
    return shutil.copytree(tiny, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))


def snapshot(path):
    """What is in a directory (names, sizes, times), its run lock and special files aside."""
    return sorted((p.relative_to(path), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in path.rglob("*") if p.name != ".lock" and p.is_file()
                  and not p.is_symlink())


# ----------------------------------------------------------------------------- run files

@pytest.mark.parametrize("damage", ["latin1", "fifo", "zero_link"])
def test_metrics_file_not_utf8_fifo_or_dev_zero_is_one_line(run, tmp_path, capsys, damage):
    metrics = run / "metrics.jsonl"
    metrics.unlink()
    if damage == "latin1":
        metrics.write_bytes(b'{"step": 1, "loss": 2.0}\n{"note": "caf\xe9"}\n')
    elif damage == "fifo":
        os.mkfifo(metrics)
    else:
        metrics.symlink_to("/dev/zero")
    before = snapshot(run)
    out = tmp_path / "analysis"
    for cmd in (["plot", run], ["analyze", run, "--out", out, "--threads", "1", "-n", "5"],
                ["train", "--resume", "--out", run, "--max-steps", "5", "--quiet"]):
        with bounded(60):
            code, _, err = run_cli(capsys, *cmd)
        one_line_error(code, err, "metrics.jsonl")
        assert snapshot(run) == before and not out.exists()


def test_config_file_that_is_a_fifo_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    os.mkfifo(cfg)
    with bounded(30):
        code, _, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "r")
    one_line_error(code, err, "c.toml", "not a regular file")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["fifo", "zero_link"])
def test_bundled_weights_replaced_by_fifo_or_dev_zero_are_one_line(tmp_path, capsys, monkeypatch,
                                                                   damage):
    from charwise.runs import bundled
    root = tmp_path / "models"
    shutil.copytree(bundled.models_root() / "base", root / "base")
    weights = root / "base" / "model.safetensors"
    weights.unlink()
    os.mkfifo(weights) if damage == "fifo" else weights.symlink_to("/dev/zero")
    monkeypatch.setattr(bundled, "models_root", lambda: root)
    monkeypatch.setattr(bundled, "_verified", {})
    with bounded(30):
        code, _, err = run_cli(capsys, "info", "base")
    one_line_error(code, err, "bundled model is damaged", "model.safetensors", "not a regular file")


def test_unreadable_weights_are_called_unreadable(run, capsys, monkeypatch):
    """As root nothing is unreadable: opening the weights fails here as it does for a user
    without read permission (the OS says EACCES; safetensors calls every failure to open
    "No such file or directory")."""
    import errno

    import safetensors
    weights = str(run / "model.safetensors")
    real_open, real_safe_open = os.open, safetensors.safe_open

    def os_open(path, *a, **k):
        if os.fspath(path) == weights:
            raise PermissionError(errno.EACCES, "Permission denied", weights)
        return real_open(path, *a, **k)

    def safe_open(path, *a, **k):
        if os.fspath(path) == weights:
            raise FileNotFoundError(f"No such file or directory: {weights!r}")
        return real_safe_open(path, *a, **k)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(safetensors, "safe_open", safe_open)
    code, _, err = run_cli(capsys, "sample", run, "-n", "5")
    one_line_error(code, err, "model.safetensors", "unreadable")
    assert "No such file" not in err


# ----------------------------------------------------------------------------- odd encodings

@pytest.mark.parametrize("encoding", ["rot13", "base64", "hex", "zlib_codec"])
def test_non_text_encodings_are_refused_by_every_command(tiny, corpus, tmp_path, capsys, encoding):
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(f'encoding = "{encoding}"\n')
    for cmd in (["train", corpus, "--out", out, "--encoding", encoding, *TINY_FLAGS],
                ["train", "--config", config, corpus, "--out", out, *TINY_FLAGS],
                ["eval", tiny, corpus, "--encoding", encoding],
                ["prepare", corpus, "--out", out, "--encoding", encoding],
                ["analyze", tiny, corpus, "--out", out, "--encoding", encoding]):
        code, _, err = run_cli(capsys, *cmd)
        one_line_error(code, err, "encoding", encoding, "not a text encoding")
        assert not out.exists()


def test_non_text_encoding_is_refused_by_the_api_and_the_reader(tiny, corpus):
    import charwise
    from charwise.data.corpus import read_text
    from charwise.errors import CharwiseError
    with pytest.raises(CharwiseError, match="not a text encoding"):
        charwise.evaluate(tiny, corpus, encoding="rot13")
    with pytest.raises(CharwiseError, match="not a text encoding"):
        read_text(corpus, "base64")
    assert read_text(corpus, "latin-1") == TEXT


# ----------------------------------------------------------------------------- run.json char_counts

def _set_counts(run, counts):
    info = json.loads((run / "run.json").read_text())
    info["char_counts"] = counts(info["char_counts"]) if callable(counts) else counts
    (run / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize("counts,needle", [
    (lambda c: c[:2], "2 counts for a vocabulary of"),                 # short: skewed the first char
    (lambda c: c + [1] * 50, "counts for a vocabulary of"),            # long
    ("many", "expected a list of counts"),
    (lambda c: ["x"] * len(c), "expected a list of counts"),
    (lambda c: [-1] + c[1:], "expected a list of counts"),
    (lambda c: [10 ** 400] + c[1:], "expected a list of counts")])
def test_damaged_char_counts_are_one_line_in_sample_analyze_and_serve(run, tmp_path, capsys,
                                                                      counts, needle):
    _set_counts(run, counts)
    out = tmp_path / "analysis"
    for cmd in (["sample", run, "-n", "5", "--seed", "1"], ["analyze", run, "--out", out, "-n", "5"],
                ["serve", run, "--port", "0"], ["info", run]):
        code, _, err = run_cli(capsys, *cmd)
        one_line_error(code, err, "run.json", "char_counts", needle)
    assert not out.exists()


def test_valid_or_absent_char_counts_still_sample(run, capsys):
    size = json.loads((run / "run.json").read_text())["model"]["vocab_size"]
    for counts in ([0] * size, None):
        _set_counts(run, counts)
        code, out, err = run_cli(capsys, "sample", run, "-n", "5", "--seed", "1")
        assert code == 0 and len(out.rstrip("\n")) == 5, err


# ----------------------------------------------------------------------------- extreme numbers

HUGE_SEED = 99999999999999999999999


def test_seed_beyond_int64_is_one_line_everywhere(tiny, corpus, tmp_path, capsys):
    from charwise.settings.options import MAX_SEED
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(f"seed = {2 ** 63}\n")
    for cmd, needle in ((["train", corpus, "--out", out, "--seed", HUGE_SEED, *TINY_FLAGS], "--seed"),
                        (["train", "--config", config, corpus, "--out", out, *TINY_FLAGS], "seed"),
                        (["sample", tiny, "-n", "5", "--seed", HUGE_SEED], "--seed"),
                        (["sample", tiny, "-n", "5", "--seed", MAX_SEED + 1], "--seed"),
                        (["analyze", tiny, "--out", out, "--seed", HUGE_SEED], "--seed")):
        code, stdout, err = run_cli(capsys, *cmd)
        one_line_error(code, err, needle, str(MAX_SEED))
        assert stdout == "" and not out.exists()
    code, stdout, err = run_cli(capsys, "sample", tiny, "-n", "5", "--seed", MAX_SEED)
    assert code == 0 and len(stdout.rstrip("\n")) == 5, err


def test_seed_bound_is_the_same_in_the_api_and_serve(tiny):
    import charwise
    from charwise.errors import CharwiseError
    from charwise.server import BadRequest, Limits, parse_request
    from charwise.settings.options import MAX_SEED
    with pytest.raises(CharwiseError, match=str(MAX_SEED)):
        charwise.sample(tiny, n=5, seed=MAX_SEED + 1)
    with pytest.raises(CharwiseError, match=str(MAX_SEED)):
        charwise.load(tiny).generate("", 5, seed=2 ** 64)
    assert parse_request({"seed": MAX_SEED}, Limits())["seed"] == MAX_SEED
    with pytest.raises(BadRequest, match="seed"):
        parse_request({"seed": MAX_SEED + 1}, Limits())


@pytest.mark.parametrize("flags,needle", [(["--hidden", "100000", "--vocab", "100000"], "GB of memory"),
                                          (["--hidden", "100000000"], "GB of memory"),
                                          (["--layers", "1000000"], "would run too long"),
                                          (["--layers", "1000", "--max-entries", "1"], "--max-entries")])
def test_gradcheck_sizes_are_checked_like_train(capsys, flags, needle):
    import time
    t = time.perf_counter()
    with bounded(30):
        code, out, err = run_cli(capsys, "gradcheck", *flags)
    one_line_error(code, err, "gradcheck of", needle)
    assert out == "" and time.perf_counter() - t < 5


def test_gradcheck_work_estimate_counts_the_entries_checked():
    from charwise.bounds import check_gradcheck, gradcheck_entries
    from charwise.reference import run_gradcheck
    from charwise.settings.train import ModelConfig
    for cell, layers, m in (("lstm", 1, None), ("gru", 3, 3), ("rnn", 2, None)):
        cfg = ModelConfig(cell=cell, embed_dim=5, hidden_size=6, layers=layers, vocab_size=7)
        rows = run_gradcheck(cell=cell, layers=layers, V=7, E=5, H=6, B=2, T=2, max_entries=m)
        assert gradcheck_entries(cfg, 2, m) == sum(r.n_checked for r in rows)
        check_gradcheck(cfg, 2, 2, m)                        # the defaults' sizes pass


# ----------------------------------------------------------------------------- the end symbol

@pytest.fixture(scope="module")
def byte_run(tmp_path_factory, corpus):
    """A byte-vocabulary run, not in line mode: its end symbol (id 256) is in no text."""
    from charwise.training import train
    out = tmp_path_factory.mktemp("bytes") / "run"
    train(str(corpus), out=out, vocab="bytes", **TINY, **QUIET)
    return out


def test_byte_model_outside_line_mode_never_draws_the_end_symbol(byte_run, capsys):
    for seed in (1, 2, 3):                  # printed 1,018 / 398 / 156 characters before
        code, out, err = run_cli(capsys, "sample", byte_run, "-n", 3000, "--temperature", 3,
                                 "--seed", seed)
        assert code == 0, err
        assert len(out) == 3001 and out.endswith("\n")
    import charwise
    model = charwise.load(byte_run)
    assert model.end_id is None
    for logits, ids in model.steps("", 2000, temperature=5, seed=4, num_samples=4):
        assert (ids != 256).all() and np.isneginf(logits[:, 256]).all()


def test_serve_never_sends_end_for_a_byte_model_outside_line_mode(byte_run):
    import charwise
    from charwise.server import Generator, Limits, parse_request
    gen = Generator(charwise.load(byte_run), threads=1)
    for seed in (1, 2, 3):
        req = parse_request({"n": 2000, "temperature": 5, "seed": seed}, Limits())
        run = gen.start(req)
        events = [ev for i in range(req["n"]) for ev in gen.next(run, req, i + 1 == req["n"])]
        assert len(events) == req["n"] and not any("end" in ev for ev in events)


def test_beam_never_chooses_a_banned_symbol_and_keeps_the_models_scores():
    from charwise.generation.beam import beam_search, log_softmax
    logits = np.array([[0.0, 1.0, 3.0]])                # symbol 2 (the "end") is the likeliest

    def step(ids, state):
        return np.repeat(logits, len(ids), axis=0), state
    state = (np.zeros((1, 1, 1)),)
    for width in (1, 3):
        beams = beam_search(step, logits, state, width, 4, end_id=None, banned=2)
        assert all(2 not in b.ids for b in beams)
        assert beams[0].ids.tolist() == [1, 1, 1, 1]
        assert beams[0].logprob == pytest.approx(4 * log_softmax(logits)[0, 1])


def test_a_temperature_below_the_floor_is_greedy_in_every_sampling_path(tiny, capsys):
    import warnings

    import charwise
    from charwise.generation.sampler import draw, filter_probs
    from charwise.server import Generator, Limits, parse_request
    from charwise.settings.options import GREEDY_BELOW
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no RuntimeWarning on the way
        code, greedy, err = run_cli(capsys, "sample", tiny, "-n", 40, "--temperature", 0)
        assert code == 0, err
        for t in ("5e-324", "1e-300", GREEDY_BELOW / 2):
            code, out, err = run_cli(capsys, "sample", tiny, "-n", 40, "--temperature", t, "--seed", 1)
            assert code == 0 and out == greedy and err == "", err
        logits = np.array([[1.0, 3.0, 2.0], [-5.0, -6.0, -4.0]], dtype=np.float32)
        p = filter_probs(logits, 5e-324, top_k=2, top_p=0.5)
        assert p.tolist() == [[0, 1, 0], [0, 0, 1]]
        assert draw(logits, np.random.default_rng(0), 5e-324).tolist() == [1, 2]
        gen = Generator(charwise.load(tiny), threads=1)
        req = parse_request({"n": 30, "temperature": 5e-324, "seed": 1}, Limits())
        run = gen.start(req)
        events = [ev for i in range(req["n"]) for ev in gen.next(run, req, i + 1 == req["n"])]
        assert len(events) == req["n"]
        for ev in events:
            json.dumps(ev, allow_nan=False)                  # "q": NaN is not JSON
            assert ev["q"] == 1.0


def test_the_web_page_gets_the_same_temperature_floor(tiny):
    import charwise
    from charwise.exporting.web import build_html
    from charwise.settings.options import GREEDY_BELOW
    html, _ = build_html(charwise.load(tiny))
    assert f'"greedy_below":{GREEDY_BELOW}' in html
    assert "opts.temperature < (model.desc.greedy_below || 0) ? 0" in html


# ----------------------------------------------------------------------------- serve, info, lock

def test_serve_on_a_port_in_use_or_a_bad_host_is_one_line_before_anything_is_printed(tiny, capsys):
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        for flags, needles in ((["--port", port], [f"port {port}", "in use"]),
                               (["--host", "no-such-host.invalid"], ["--host", "no-such-host.invalid"]),
                               (["--host", ""], ["--host", "not empty"]),
                               (["--host", "  "], ["--host", "not empty"])):
            with bounded(60):
                code, out, err = run_cli(capsys, "serve", tiny, *flags)
            one_line_error(code, err, *needles)
            assert out == ""
    finally:
        busy.close()


def test_serve_stop_must_be_a_string_or_a_list_of_strings():
    from charwise.server import BadRequest, Limits, parse_request
    for stop in ({"a": 1}, {}, 5, True):
        with pytest.raises(BadRequest, match="^stop must be a string or a list of strings") as e:
            parse_request({"stop": stop}, Limits())
        assert e.value.status == 400
    assert parse_request({"stop": ["\n", "."]}, Limits())["stop"] == ("\n", ".")
    assert parse_request({"stop": "."}, Limits())["stop"] == (".",)


def test_info_json_and_serve_info_give_null_for_nan_and_infinity(run, capsys):
    import urllib.request

    from charwise.asgi import background_server
    from charwise.server import create_app
    text = (run / "run.json").read_text()
    info = json.loads(text)
    info["best"] = {"step": 3, "val_loss": float("nan")}
    info["history"] = [{"step": 3, "val_loss": float("inf"), "train_loss": float("-inf")}]
    info["train_seconds"] = float("nan")
    (run / "run.json").write_text(json.dumps(info))           # NaN, Infinity, -Infinity

    def strict(s):
        return json.loads(s, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    code, out, err = run_cli(capsys, "info", run, "--json")
    assert code == 0, err
    d = strict(out)
    assert d["best_val_loss"] is None and d["train_seconds"] is None and d["last_train_loss"] is None
    code, out, err = run_cli(capsys, "info", run)
    assert code == 0 and "none yet" in out, err
    with background_server(create_app(run, threads=1)) as url:
        with urllib.request.urlopen(url + "/api/info", timeout=30) as r:
            assert r.status == 200 and strict(r.read())["best_val_loss"] is None


def test_a_fifo_lock_file_is_named(run, capsys):
    (run / ".lock").unlink(missing_ok=True)
    os.mkfifo(run / ".lock")
    before = snapshot(run)
    with bounded(60):
        code, out, err = run_cli(capsys, "train", "--resume", "--out", run, "--max-steps", "5",
                                 "--quiet")
    one_line_error(code, err, str(run / ".lock"), "not a regular file")
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- round 4 (red team)

def test_preset_auto_on_a_fifo_is_refused_not_a_hang(tmp_path, capsys):
    """preset auto measured base's coverage of the text before the corpus check, opening a FIFO
    (blocking for a writer forever) where every other preset refuses it at once."""
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for preset in ("auto", "scratch"):
        with bounded(60):
            code, out, err = run_cli(capsys, "train", fifo, "--preset", preset,
                                     "--out", tmp_path / "out", "--max-steps", "2", "--quiet")
        one_line_error(code, err, "fifo.txt", "not a regular file")
        assert not (tmp_path / "out").exists()


def test_a_new_run_refused_after_its_corpus_is_read_leaves_nothing(tmp_path, capsys):
    """"text too short" is found after the corpus is cached in RUN/cache: the cache and the
    run's lock (and so the directory) stayed behind."""
    short = tmp_path / "short.txt"
    short.write_text("\ufeffhello world\r\nfoo bar\r\n")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "train", short, "--out", out, "--preset", "spec",
                           "--max-steps", "2", "--threads", "1", "--quiet")
    one_line_error(code, err, "text too short")
    assert not out.exists(), sorted(os.listdir(out))


@pytest.mark.parametrize("content, needles", [
    ("a = " + "[" * 100000 + "]" * 100000 + "\n", ["nested too deeply"]),      # RecursionError
    ("a = " + "{b = " * 100000 + "1" + "}" * 100000 + "\n", ["nested too deeply"]),
])
def test_a_deeply_nested_config_file_is_one_line(tmp_path, capsys, content, needles):
    cfg = tmp_path / "deep.toml"
    cfg.write_text(content)
    code, _, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "out")
    one_line_error(code, err, "deep.toml", *needles)
    assert not (tmp_path / "out").exists()


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors save UTF-8 with a BOM; tomllib said "Invalid statement (at line 1,
    column 1)", naming nothing."""
    from charwise.settings.toml import read_config
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbfhidden-size = 16\n")
    assert read_config(cfg)["hidden_size"] == 16


@pytest.mark.parametrize("damage", [
    {"parameters": "lots"}, {"step": "x"}, {"train_seconds": "x"}, {"train_seconds": [1]},
    {"model": {"cell": 5}}, {"corpus": {"source": "c.txt", "chars": "x", "train_chars": None}},
])
def test_info_prints_odd_run_json_values_as_they_are(run, capsys, damage):
    """info formatted run.json's numbers with `:,` and the cell with .upper(): a string or a
    number in the wrong place was a traceback (ValueError, TypeError, AttributeError)."""
    info = json.loads((run / "run.json").read_text())
    for k, v in damage.items():
        info[k] = {**info[k], **v} if isinstance(v, dict) else v
    (run / "run.json").write_text(json.dumps(info))
    code, out, err = run_cli(capsys, "info", run)
    assert code == 0 and err == "" and out.startswith("run "), err


def test_a_run_directory_whose_name_is_not_utf8_is_named_so(run, tmp_path, capsys):
    """sample read run.json, then blamed the weights: "not a valid safetensors file (Path
    run\\ufffd/model.safetensors is not valid UTF-8)"."""
    odd = os.fsencode(tmp_path) + b"/run\xff"
    os.rename(run, odd)
    code, _, err = run_cli(capsys, "sample", os.fsdecode(odd), "-n", "3", "--threads", "1")
    one_line_error(code, err, "run\\xff", "not valid UTF-8", "rename it")
    assert "not a valid safetensors file" not in err


def _post(url, body):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url + "/api/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read().decode()


def test_serve_names_the_field_and_its_own_words_in_every_400(tiny):
    """A prime outside the vocabulary said "(use --oov skip ...)", a flag the HTTP API has not,
    without naming prime; a stop list holding a number did not name stop; integer bounds were
    shown as 9.22337e+18."""
    from charwise.asgi import background_server
    from charwise.server import create_app
    with background_server(create_app(tiny, threads=1)) as url:
        for body, needles in (
                ({"prime": "\u2603", "n": 3}, ["prime", '"oov": "skip"']),
                ({"stop": [None], "n": 3}, ["stop"]),
                ({"stop": [5], "n": 3}, ["stop"]),
                ({"seed": 2**63, "n": 3}, ["seed", "9223372036854775807"]),
                ({"top_k": 0, "n": 3}, ["top_k", ">= 1"])):      # `charwise sample`'s bound
            code, ctype, text = _post(url, body)
            assert code == 400 and ctype == "application/json", (body, code, text)
            msg = json.loads(text)["error"]
            assert "--" not in msg and "e+" not in msg, msg
            for n in needles:
                assert n in msg, (n, msg)


def test_a_stop_string_with_a_lone_surrogate_is_refused(tiny, capsys):
    """It can never match text the model makes (the prime's is refused): accepted silently in
    the CLI (a byte \\xff in argv) and in serve (a JSON "\\udc00")."""
    from charwise.server import BadRequest, Limits, parse_request
    with pytest.raises(BadRequest, match="^stop: .*lone surrogate"):
        parse_request({"stop": ["a\udc00"]}, Limits())
    code, _, err = run_cli(capsys, "sample", tiny, "-n", "3", "--stop", "x\udcff")
    one_line_error(code, err, "--stop", "lone surrogate")


def test_serve_answers_unknown_paths_and_methods_in_json(tiny):
    import urllib.error
    import urllib.request

    from charwise.asgi import background_server
    from charwise.server import create_app
    with background_server(create_app(tiny, threads=1)) as url:
        for path, method, status in (("/nope", "GET", 404), ("/api/generate", "GET", 405),
                                     ("/api/info", "POST", 405)):
            req = urllib.request.Request(url + path, method=method,
                                         data=b"{}" if method == "POST" else None)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == status
            assert e.value.headers.get("content-type") == "application/json"
            assert path in json.loads(e.value.read())["error"]


@pytest.mark.parametrize("damage, needles", [
    ({"model": {"vocab_size": "38"}}, ["vocab_size", "'38'"]),   # was "38 ... but expects 38"
    ({"line_mode": "yes"}, ["line_mode", "'yes'"]),                # was read as line mode
    ({"vocab_kind": "words"}, ["vocab_kind", "'words'"]),          # was read as chars
])
def test_odd_vocabulary_fields_in_run_json_are_named(run, capsys, damage, needles):
    info = json.loads((run / "run.json").read_text())
    for k, v in damage.items():
        info[k] = {**info[k], **v} if isinstance(v, dict) else v
    (run / "run.json").write_text(json.dumps(info))
    code, _, err = run_cli(capsys, "sample", run, "-n", "3", "--threads", "1")
    one_line_error(code, err, "run.json", *needles)


@pytest.mark.parametrize("args", [
    ["train", "{corpus}", "--out", "", *TINY_FLAGS],          # was runs/latest, the default
    ["analyze", "{run}", "--out", "", "--threads", "1"],      # wrote its files into the cwd
    ["plot", "{run}", "--out", ""],                           # wrote curve.png into the cwd
    ["eval", "{run}", ""],
    ["sample", "", "-n", "3"],
])
def test_an_empty_path_is_refused_not_read_as_the_default_or_the_cwd(run, corpus, tmp_path,
                                                                     monkeypatch, capsys, args):
    """`--out "$OUT"` with OUT unset: an empty path was the default directory or ".", the
    current directory, where analyze and plot wrote their files."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, _, err = run_cli(capsys, *[a.format(run=run, corpus=corpus) for a in args])
    one_line_error(code, err, "empty path")
    assert os.listdir(cwd) == []


@pytest.mark.parametrize("command", ["export", "plot"])
def test_an_output_path_ending_in_a_slash_is_not_written_as_a_file(run, tmp_path, capsys, command):
    """export --out new/ wrote a file named new: the user meant a directory."""
    code, _, err = run_cli(capsys, command, run, "--out", f"{tmp_path}/new/")
    one_line_error(code, err, "new/", "file name")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("odd", ["dir", "symlink", "fifo"])
def test_demo_force_refuses_a_picture_path_that_is_not_a_regular_file_before_training(
        tmp_path, capsys, odd):
    """demo --force trained first, then failed on a directory named heatmap.png with a message
    naming a temp file (".heatmap.png.x2kgbtvs.tmp: Is a directory"), or replaced a symbolic
    link named per_char.png."""
    out = tmp_path / "demo"
    out.mkdir()
    target = out / "heatmap.png"
    if odd == "dir":
        target.mkdir()
    elif odd == "symlink":
        (tmp_path / "mine.png").write_text("mine")
        target.symlink_to(tmp_path / "mine.png")
    else:
        os.mkfifo(target)
    with bounded(60):
        code, _, err = run_cli(capsys, "demo", "--out", out, "--force")
    one_line_error(code, err, "heatmap.png", "--force or not")
    assert os.listdir(out) == ["heatmap.png"]


@pytest.mark.parametrize("name", ["cache", "model.safetensors", "metrics.jsonl"])
def test_train_force_refuses_a_run_file_that_is_a_link_before_removing_anything(
        run, corpus, tmp_path, capsys, name):
    """--force removed run.json, the weights and metrics.jsonl, then failed on a cache/ that is
    a symbolic link ("Cannot call rmtree on a symbolic link", no path): the old run half gone,
    no new one. A link or a FIFO is not a file charwise wrote: refused before anything goes."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    target = run / name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.symlink_to(other if name == "cache" else other / "keep.txt")
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", corpus, "--out", run, "--force", *TINY_FLAGS)
    one_line_error(code, err, str(target), "symbolic link")
    assert snapshot(run) == before and target.is_symlink()
    assert (other / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("bad,message", [("missing.txt", "no such file"), ("empty.txt", "empty"),
                                         ("folder", "directory"), ("short.txt", "too short")])
def test_train_force_refused_by_its_corpus_leaves_the_old_run_whole(run, tmp_path, capsys, bad, message):
    """--force deleted the old run, then found the corpus missing (or empty, a directory, too
    short): the run gone, no new one. The old run's files now wait aside until the new run has
    started, and a refusal puts them back as they were."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "folder").mkdir()
    (tmp_path / "short.txt").write_text("ab")
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", tmp_path / bad, "--out", run, "--force", *TINY_FLAGS)
    one_line_error(code, err, message)
    assert snapshot(run) == before
    assert not list(run.glob(".replaced-*"))


def test_train_force_replaces_the_old_runs_exports_and_analysis_too(run, corpus, capsys):
    """The old model's model.onnx, model.html and analysis/ went stale beside the new model (a
    later export refused to replace "its" file); --force now replaces them with the run. A
    file of the user's in the directory stays."""
    for name in ("model.onnx", "model.html", "notes.txt"):
        (run / name).write_text("the old run's")
    (run / "analysis").mkdir()
    (run / "analysis" / "heatmap.png").write_text("the old run's")
    code, _, err = run_cli(capsys, "train", corpus, "--out", run, "--force", *TINY_FLAGS)
    assert code == 0, err
    assert not any((run / n).exists() for n in ("model.onnx", "model.html", "analysis"))
    assert (run / "notes.txt").read_text() == "the old run's" and (run / "model.safetensors").is_file()
    assert not list(run.glob(".replaced-*"))


def test_a_model_too_big_is_refused_before_its_vocabulary_is_known_without_inventing_one(corpus, tmp_path,
                                                                                        capsys):
    """The first memory check runs before the corpus is read; its message said "vocabulary 1"."""
    code, _, err = run_cli(capsys, "train", corpus, "--hidden-size", "100000", "--out", tmp_path / "r")
    one_line_error(code, err, "vocabulary ? (", "GB of memory")
    assert not (tmp_path / "r").exists()


def test_what_force_replaces_includes_every_default_export_and_the_analysis():
    from charwise.exporting.formats import FORMATS
    from charwise.runs.rundir import ANALYSIS_DIR, DERIVED
    assert set(DERIVED) == {f"model{f.suffix}" for f in FORMATS.values()} | {ANALYSIS_DIR}


def test_a_new_run_is_not_made_inside_another_run(run, corpus, capsys):
    """`train --out RUN/sub` made a run inside another run's directory (prepare refused it)."""
    before = snapshot(run)
    for args in (["train", corpus, "--out", run / "sub", *TINY_FLAGS],
                 ["train", corpus, "--out", run / "cache" / "x", "--force", *TINY_FLAGS]):
        code, _, err = run_cli(capsys, *args)
        one_line_error(code, err, f"lies in the run directory {run.resolve()}")
    assert snapshot(run) == before and not (run / "sub").exists()


def test_train_refuses_an_out_that_is_a_symbolic_link(run, corpus, tmp_path, capsys):
    """--out LINK --force replaced the run the link points to."""
    link = tmp_path / "link"
    link.symlink_to(run)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", corpus, "--out", link, "--force", *TINY_FLAGS)
    one_line_error(code, err, f"{link}: is a symbolic link", f"--out {run.resolve()}")
    assert snapshot(run) == before and link.is_symlink()


# ----------------------------------------------------------------------------- red team, round 4

def test_a_killed_force_tells_where_the_run_it_was_replacing_is(run, corpus, tmp_path, capsys):
    """A `train --force` SIGKILLed while it started leaves the old run in .replaced-PID (it is
    deleted only once the new run has started): info, --resume and a plain train said "no
    run.json" or "use --resume", which cannot work; they now say where the run is."""
    from charwise.runs.rundir import ASIDE, set_aside
    set_aside(run)                                     # what the killed process had done
    (kept,) = run.glob(f"{ASIDE}*")
    for args in (["info", run], ["train", "--resume", "--out", run], ["train", corpus, "--out", run]):
        code, _, err = run_cli(capsys, *args)
        one_line_error(code, err, f"left the run it was replacing in {kept}", "move its files back")
    assert (kept / "run.json").is_file()
    code, _, err = run_cli(capsys, "train", corpus, "--out", run, "--force", *TINY_FLAGS)
    assert code == 0, err
    assert not list(run.glob(f"{ASIDE}*"))            # a new run that started deletes it


@pytest.mark.parametrize("kw,message", [
    (dict(force="false"), "force must be true or false, got 'false'"),
    (dict(resume="no"), "resume must be true or false, got 'no'"),
    (dict(cell="LSTM", force=True), "--cell must be one of lstm, gru, rnn, transformer; got 'LSTM'"),
    (dict(engine="numpy", precision="bf16", force=True), "--engine numpy trains in fp32"),
])
def test_the_api_refuses_what_the_command_line_would(run, corpus, tmp_path, kw, message):
    """force="false" is truthy and replaced a run; cell="LSTM" raised a KeyError; the NumPy
    engine took --precision bf16 and trained in fp32."""
    import charwise
    before = snapshot(run)
    with pytest.raises(charwise.CharwiseError, match=message):
        charwise.train(corpus, out=run, **{**TINY, **kw}, **QUIET)
    assert snapshot(run) == before


def test_tensorboard_that_cannot_work_is_refused_before_anything_is_written(run, corpus, tmp_path,
                                                                            capsys, monkeypatch):
    """An installed tensorboard that fails to import ended in a traceback after run.json was
    written; a file where RUN/tensorboard belongs failed a --resume after run.json was reset."""
    import sys
    (run / "tensorboard").mkdir(exist_ok=True)
    shutil.rmtree(run / "tensorboard")
    (run / "tensorboard").write_text("not a directory")
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--tensorboard", "--max-steps", "5")
    one_line_error(code, err, f"{run / 'tensorboard'}: exists and is not a directory")
    assert snapshot(run) == before
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # import fails
    for args in (["train", corpus, "--out", tmp_path / "new", "--tensorboard", *TINY_FLAGS],):
        code, _, err = run_cli(capsys, *args)
        one_line_error(code, err, "tensorboard package is installed but does not import")
    assert not (tmp_path / "new").exists()


def test_eval_and_plot_refuse_what_they_cannot_do_in_one_line(tmp_path, capsys):
    """eval --precision bf16 of a line-mode run scored in fp32 without a word; plot of a packed
    or bundled model blamed the output path or an empty metrics.jsonl."""
    import charwise
    names = tmp_path / "names.txt"
    names.write_text("Anna\nBob\nCarla\nDavid\nEmma\nFrank\n" * 20)
    charwise.train(names, out=tmp_path / "lm", line_mode=True, **TINY, **QUIET)
    code, _, err = run_cli(capsys, "eval", tmp_path / "lm", names, "--precision", "bf16")
    one_line_error(code, err, "line-mode run's items are scored in fp32")
    assert run_cli(capsys, "pack", tmp_path / "lm", "--out", tmp_path / "lm.charwise")[0] == 0
    for model, what in ((tmp_path / "lm.charwise", "a packed model"), ("base", "a bundled model")):
        code, _, err = run_cli(capsys, "plot", model, "--out", tmp_path / "c.png")
        one_line_error(code, err, what, "no training curve to plot")
    assert not (tmp_path / "c.png").exists()
