"""Shared fixtures. The test files mirror src/charwise, one per module or subpackage:

    settings/ -> test_options.py (options, commands), test_config.py (train, toml)
    commands.py, cli.py -> test_commands.py, test_cli.py, test_info.py   api.py -> test_api.py
    cells.py -> test_cells.py (each registered cell has every engine)   model.py -> test_model.py
    transformer.py, reference/transformer.py -> test_transformer.py
    data/ -> test_data.py, test_bytevocab.py, test_lines.py, test_prepare.py
    runs/ -> test_rundir.py, test_base_model.py (bundled + models/base), test_transfer.py,
    test_info.py (runinfo); runlock, bounds, guards, files -> test_safety.py, test_robustness.py
    scoring.py -> test_evaluate.py   threads.py -> test_threads.py   hardware.py -> test_hardware.py
    budget.py, progress.py, recipe.py -> test_<module>.py
    generation/ -> test_params.py (SamplingParams, checked once; a temperature's path),
    test_cli_generation.py (command.py),
    test_sample.py, test_sample_int8.py, test_generate.py, test_beam.py, test_stops.py,
    test_prime.py, test_generation.py (generation control end to end)
    training/ -> test_training.py, test_distributed.py, test_tensorboard.py, test_reliability.py,
    test_budget.py
    inspect/ -> test_analysis.py (analysis, neurons, attention), test_plots.py (plots, report), test_fonts.py
    exporting/ -> test_export.py (ONNX), test_webexport.py, test_webexport_browser.py (in Chromium)
    server.py, asgi.py -> test_serve.py, test_serve_stop.py, test_browser.py (the page in Chromium)
    packing.py -> test_pack.py   notebook/ -> test_notebook.py, test_notebooks.py (they run)
    reference/ -> test_reference.py   torch floor (pyproject) -> test_torch_floor.py
    the GPU decisions (scoring, model, generation, training, runs) -> test_gpu_paths.py
    README.md, docs/, mkdocs.yml -> test_docs.py (README's commands run, the site builds)
    test_structure.py: the import graph (importlib followed), function, class and module sizes
"""
import os
import shutil
import time

# This suite means the CPU: bit-identical resumes, thread policies, gloo, numbers measured on a
# CPU. On a machine with a GPU (where the Makefile installs CUDA torch), device "auto" would
# train on it, so GPUs are hidden from the tests and from every process they start (set before
# torch touches CUDA); the tests whose meaning depends on it also pass device="cpu" themselves.
# The GPU paths are checked by benchmarks/gpu.sh.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores on CI: keep torch from oversubscribing when pytest runs tests in one process. An
# explicit OMP_NUM_THREADS wins (on a machine other processes keep busy, two threads per
# process run many times slower than one).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))

from charwise import hardware  # noqa: E402

# A test never runs a kernel this CPU lacks (an AVX2 laptop cannot build oneDNN's bf16 LSTM, and
# its int8 sums saturate): the arithmetic of bf16 and int8 is tested where the CPU has it, and
# what charwise decides elsewhere is tested with the capability faked (test_hardware.py).
needs_bf16 = pytest.mark.skipif(not hardware.cpu_has_fast_bf16(),
                                reason="bf16 arithmetic needs AVX512-BF16 or AMX (not on this CPU or capped)")
needs_vnni = pytest.mark.skipif(not hardware.cpu_has_exact_int8(),
                                reason="int8 arithmetic needs AVX-512 VNNI (not on this CPU or capped)")

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "data", "tinyshakespeare.txt")
QUIET = dict(progress=False, log=lambda *a: None)

# The shared trained run: the spec model (1x128 LSTM, T=40, no validation split) on the bundled
# corpus, trained only as far as its users need. Some need a *learned* model (a cold sample is
# the corpus's own words: test_sample.py; stop strings and beams meet real text), the rest only a
# finished run directory. A higher peak rate decaying to half reaches in 200 steps the loss the
# preset's 400 reach; one fixed thread makes the weights the same whatever the load, so the
# sample assertions cannot turn on a thread-count choice.
TRAINED_RUN = dict(preset="spec", max_steps=200, lr=2e-2, min_lr_ratio=0.5, threads=1, device="cpu")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The shared spec-model run (TRAINED_RUN), for read-only tests."""
    from charwise.training import train
    out = tmp_path_factory.mktemp("run") / "spec"
    train(None, out=out, **TRAINED_RUN, **QUIET)
    return out


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A small LSTM (1x64) on the bundled corpus, trained briefly: for the export tests, whose
    exactness checks need no good model (and whose pages stay small)."""
    from charwise.training import train
    out = tmp_path_factory.mktemp("small") / "lstm"
    train(None, out=out, hidden_size=64, embed_dim=16, max_steps=80, eval_every=80, threads=1,
          device="cpu", **QUIET)
    return out


@pytest.fixture(scope="session")
def transformer_run(tmp_path_factory):
    """A tiny transformer (2 blocks x 16 wide, 2 heads, context 24) on the bundled corpus, a few
    steps: for the tests of what analyze and the notebook's Run show of a transformer."""
    from charwise.training import train
    out = tmp_path_factory.mktemp("transformer") / "gpt"
    train(None, out=out, cell="transformer", layers=2, embed_dim=16, heads=2, seq_len=24,
          batch_size=8, max_steps=30, val_fraction=0.2, threads=1, device="cpu", **QUIET)
    return out


@pytest.fixture
def text_file(tmp_path):
    def make(content: str | bytes, name: str = "corpus.txt"):
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return p
    return make


@pytest.fixture(scope="session")
def transformer_runs(tmp_path_factory):
    """Tiny transformers (2 blocks x 16 wide, 2 heads, context 12), one per kind of positions
    (the rotary one with a tied head: --tie-weights), trained a few steps on the bundled corpus:
    for the export tests, whose exactness checks need no good model, and whose texts run past
    the context (the window slides)."""
    from charwise.training import train
    runs = {}
    for positions in ("learned", "rotary"):
        out = tmp_path_factory.mktemp("transformer") / positions
        train(None, out=out, cell="transformer", layers=2, embed_dim=16, heads=2, seq_len=12,
              positions=positions, tie_weights=positions == "rotary", max_steps=20, lr=1e-2,
              threads=1, device="cpu", **QUIET)
        runs[positions] = out
    return runs


# ----------------------------------------------------------------------------- a real browser

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for the browser tests (the playground, the exported page).

    Needs the system's Chromium and its driver (Debian: apt-get install chromium
    chromium-driver; .ci/run installs them); the tests that use it are skipped, saying why, where
    they are absent. Nothing is downloaded: Selenium is pointed at the driver and the browser
    binary explicitly."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("browser test skipped: Chromium and chromedriver not found (Debian: apt-get "
                    "install chromium chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="browser test skipped: selenium not installed")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1360,900", "--force-device-scale-factor=1",
                "--allow-file-access-from-files",          # the exported page is opened from disk
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll until predicate() is truthy; bounded in time (for pages that update themselves)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def run_cli(capsys, *args):
    """(exit code, stdout, stderr) of `charwise ARGS` in this process."""
    from charwise.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    """A refusal as charwise makes it: exit 2, one line on stderr, no traceback, naming needles."""
    assert code == 2, err
    assert err.startswith("charwise: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
