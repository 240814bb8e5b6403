"""`charwise export --format web` in a real headless Chromium: the page, opened from disk
(file://) with the network switched off, generates what `charwise sample` generates.

The browser is conftest's `browser` fixture (skipped, saying why, without Chromium and its
driver), switched offline for this file. CHARWISE_SCREENSHOT=FILE saves a screenshot of the test
page there. The 1x640 speed benchmark prints chars/s (run with -s to see it); it asserts nothing about time.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import charwise
from charwise.cli import main
from charwise.exporting.web import quantized_net
from conftest import wait_for

SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="module", autouse=True)
def offline(browser):
    """No network at all: every test here opens its page with the browser offline (the shared
    browser goes back online afterwards, for the playground's local server)."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    browser.execute_cdp_cmd("Network.disable", {})


def export_page(run, tmp_path, quantize="none", name=None):
    out = tmp_path / (name or f"{Path(run).name}-{quantize}.html")
    assert main(["export", str(run), "--format", "web", "--quantize", quantize, "--out", str(out)]) == 0
    return out


def open_page(d, path, query=""):
    d.get(path.resolve().as_uri() + query)
    wait_for(lambda: d.execute_script("return window.charwiseReady === true"), what="the model to load")
    assert d.find_element("id", "fatal").get_attribute("hidden") is not None


def known(model, text):
    return "".join(c for c in text if c in model.vocab.chars)


def torch_probs(net, vocab, text):
    """softmax after each character of text, the whole text in one pass (float64 out)."""
    with torch.inference_mode():
        logits, _ = net(torch.as_tensor(vocab.encode(text))[None])
    return torch.softmax(logits[0].double(), -1).numpy()


@pytest.fixture(scope="module")
def other_cell_runs(tmp_path_factory):
    """A 2-layer GRU and a 2-layer RNN (a few steps: untrained is fine for exactness)."""
    runs = {}
    for cell in ("gru", "rnn"):
        out = tmp_path_factory.mktemp("web") / cell
        charwise.train(None, out=out, cell=cell, layers=2, hidden_size=24, embed_dim=12, max_steps=20,
                       progress=False, log=lambda *a: None)
        runs[cell] = out
    return runs


PRIME = "Mr Bennet was"


def test_greedy_200_equals_charwise_sample(small_run, browser, tmp_path, capsys):
    page = export_page(small_run, tmp_path)
    d = browser
    open_page(d, page)
    got = d.execute_script(f"return charwise.generate({PRIME!r}, 200, {{temperature: 0}}).text")
    capsys.readouterr()
    assert main(["sample", str(small_run), "--prime", PRIME, "-n", "200", "--temperature", "0"]) == 0
    sampled = capsys.readouterr().out
    assert sampled == got + "\n"
    assert got == charwise.load(small_run).generate(PRIME, 200, temperature=0)
    assert d.execute_script("return charwise.engine") == "WebAssembly SIMD"
    # The plain-JavaScript fallback (browsers without WebAssembly SIMD) gives the same text.
    open_page(d, page, "?engine=js")
    assert d.execute_script("return charwise.engine") == "JavaScript"
    assert d.execute_script(f"return charwise.generate({PRIME!r}, 200, {{temperature: 0}}).text") == got
    open_page(d, page)
    # the controls start at `charwise sample`'s defaults (SamplingParams, in the page's model)
    assert d.execute_script("return ['temperature', 'top-p', 'length', 'top-k'].map("
                            "(id) => document.getElementById(id).value)") == ["1", "1", "500", ""]
    assert d.find_element("id", "temperature-value").text == "1.00"

    # The same through the page's own controls: text streams into #out, shaded spans.
    d.execute_script("""
        const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                                 e.dispatchEvent(new Event('input')); };
        set('prime', arguments[0]); set('temperature', 0); set('length', 200);""", PRIME)
    d.find_element("id", "generate").click()
    wait_for(lambda: d.find_element("id", "status").text.startswith("done"), what="done")
    assert d.find_element("id", "out").get_attribute("textContent") == got
    assert len(d.find_elements("css selector", "#out .ch")) == 200
    # Nothing was fetched: no resource entries at all (and the browser is offline).
    assert d.execute_script("return performance.getEntriesByType('resource').length") == 0


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_match_torch(other_cell_runs, browser, tmp_path, cell):
    run = other_cell_runs[cell]
    model = charwise.load(run)
    page = export_page(run, tmp_path)
    open_page(browser, page)
    text = known(model, "It is a truth universally acknowledged, that a single man")
    page_p = np.array(browser.execute_script("return charwise.probs(arguments[0])", text))
    assert np.abs(page_p - torch_probs(model.net, model.vocab, text)).max() < 1e-5
    got = browser.execute_script("return charwise.generate('Mr', 100, {temperature: 0}).text")
    assert got == model.generate("Mr", 100, temperature=0)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_transformer_matches_torch_past_the_context(transformer_runs, browser, tmp_path, capsys, positions):
    """The page's Transformer step against CharTransformer.step over a text three times its
    context (so the window slides), in both engines; greedy text is `charwise sample`'s."""
    run = transformer_runs[positions]
    model = charwise.load(run)
    net = model.net
    page = export_page(run, tmp_path)
    text = known(model, "It is a truth universally acknowledged, that a single man in")
    ids = torch.as_tensor(model.vocab.encode(text))[None]
    assert ids.shape[1] > 3 * net.context
    with torch.inference_mode():
        logits, _ = net.step(ids, net.new_cache(1), 0)                  # (1, n, V), sliding
    want = torch.softmax(logits[0].double(), -1).numpy()
    capsys.readouterr()
    assert main(["sample", str(run), "--prime", "Mr", "-n", "60", "--temperature", "0"]) == 0
    sampled = capsys.readouterr().out
    for query, engine in (("", "WebAssembly SIMD"), ("?engine=js", "JavaScript")):
        open_page(browser, page, query)
        assert browser.execute_script("return charwise.engine") == engine
        got = np.array(browser.execute_script("return charwise.probs(arguments[0])", text))
        assert np.abs(got - want).max() < 1e-5, (engine, np.abs(got - want).max())
        print(f"\n{positions} {engine}: max |dp| {np.abs(got - want).max():.1e} over {len(text)} chars")
        assert browser.execute_script("return charwise.generate('Mr', 60, {temperature: 0}).text") + "\n" == sampled
    assert "TRANSFORMER 2 blocks × 16, 2 heads, context 12" in browser.find_element("id", "model-info").text
    # int8: the page computes what torch computes with the page's dequantized weights
    open_page(browser, export_page(run, tmp_path, "int8"))
    with torch.inference_mode():
        logits, _ = quantized_net(net, "int8").step(ids, net.new_cache(1), 0)
    got = np.array(browser.execute_script("return charwise.probs(arguments[0])", text))
    assert np.abs(got - torch.softmax(logits[0].double(), -1).numpy()).max() < 1e-5


def test_int8_probabilities_within_tolerance(small_run, browser, tmp_path):
    """Two bounds. (1) The page computes exactly what torch computes with the dequantized int8
    weights (quantized_net): float32-vs-float64 rounding only, < 1e-5. (2) Against the original
    float32 model the int8 rounding itself moves probabilities: each weight moves by at most
    max|row|/254, which for this model moves the largest probability by ~0.01 (measured here by
    torch, independently of the page); the page must stay inside that measured gap plus 1e-5,
    and, as an absolute sanity bound, within 0.05."""
    model = charwise.load(small_run)
    page = export_page(small_run, tmp_path, "int8")
    open_page(browser, page)
    text = known(model, "It is a truth universally acknowledged, that a single man in possession of a good")
    page_p = np.array(browser.execute_script("return charwise.probs(arguments[0])", text))
    sim = torch_probs(quantized_net(model.net, "int8"), model.vocab, text)
    orig = torch_probs(model.net, model.vocab, text)
    assert np.abs(page_p - sim).max() < 1e-5
    gap = np.abs(sim - orig).max()
    assert np.abs(page_p - orig).max() <= gap + 1e-5 and gap < 0.05
    print(f"\nint8 page vs fp32 torch: max |dp| {np.abs(page_p - orig).max():.4f}; "
          f"vs dequantized torch {np.abs(page_p - sim).max():.1e}")


def test_seeded_sample_repeats(small_run, browser, tmp_path):
    page = export_page(small_run, tmp_path, "fp16")
    d = browser
    open_page(d, page)
    js = "return charwise.generate('Mr', 300, {temperature: 1, topK: 20, topP: 0.9, seed: arguments[0]}).text"
    a, b, c = (d.execute_script(js, s) for s in (7, 7, 8))
    assert a == b and a != c and len(a) == 302
    # Through the controls: the seed box repeats the text; the stop string ends it.
    d.execute_script("""
        const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                                 e.dispatchEvent(new Event('input')); };
        set('prime', 'Mr'); set('temperature', 1); set('length', 300); set('seed', 3);""")
    texts = []
    for _ in range(2):
        d.find_element("id", "generate").click()
        wait_for(lambda: d.find_element("id", "status").text.startswith("done"), what="done")
        texts.append(d.find_element("id", "out").get_attribute("textContent"))
    assert texts[0] == texts[1] and len(texts[0]) == 302
    stop = texts[0][40:42]
    d.execute_script("document.getElementById('stop-at').value = arguments[0]", stop)
    d.find_element("id", "generate").click()
    wait_for(lambda: d.find_element("id", "status").text.startswith("done"), what="done")
    short = d.find_element("id", "out").get_attribute("textContent")
    assert short.endswith(stop) and texts[0].startswith(short) and len(short) <= 42

    # Hover: the top-5 panel for that character.
    from selenium.webdriver.common.action_chains import ActionChains
    span = d.find_elements("css selector", "#out .ch")[5]
    ActionChains(d).move_to_element(span).perform()
    wait_for(lambda: "Character 6:" in d.find_element("id", "panel-body").text, what="hover panel")
    rows = d.find_elements("css selector", "#panel-body .alt")
    assert 5 <= len(rows) <= 6

    # The docs' screenshot (docs/web-export.png): a 400-character sample, one character hovered.
    d.execute_script("""
        const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                                 e.dispatchEvent(new Event('input')); };
        set('stop-at', ''); set('prime', 'Mr Bennet'); set('temperature', 0.7); set('length', 400);
        set('seed', 5);""")
    d.find_element("id", "generate").click()
    wait_for(lambda: d.find_element("id", "status").text.startswith("done"), what="done")
    k = d.execute_script("""
        const a = [...document.querySelectorAll('#out .ch')].slice(0, 150)
            .map((el) => parseFloat(el.style.getPropertyValue('--a')));
        return a.indexOf(Math.max(...a));""")
    ActionChains(d).move_to_element(d.find_elements("css selector", "#out .ch")[k]).perform()
    wait_for(lambda: f"Character {k + 1}:" in d.find_element("id", "panel-body").text, what="hover")
    shot = Path(os.environ.get("CHARWISE_SCREENSHOT") or tmp_path / "web-export.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert d.save_screenshot(str(shot))


def test_damaged_page_and_missing_features_say_so(small_run, browser, tmp_path):
    page = export_page(small_run, tmp_path)
    html = page.read_text(encoding="utf-8")
    cut = tmp_path / "cut.html"
    start = html.index('id="charwise-weights">') + 40
    cut.write_text(html[:start] + "!!" + html[start + 2:], encoding="utf-8")
    d = browser
    d.get(cut.resolve().as_uri())
    wait_for(lambda: d.find_element("id", "fatal").is_displayed(), what="damage message")
    assert "could not be read" in d.find_element("id", "fatal").text
    old = tmp_path / "old.html"             # a browser without typed arrays
    old.write_text(html.replace("<script>// charwise web export",
                                "<script>window.Float64Array = undefined;</script><script>// charwise web export", 1),
                   encoding="utf-8")
    d.get(old.resolve().as_uri())
    wait_for(lambda: d.find_element("id", "fatal").is_displayed(), what="missing-feature message")
    assert "lacks what the page needs" in d.find_element("id", "fatal").text
    assert not d.find_element("id", "generate").is_enabled()


@pytest.mark.slow
def test_speed_1x640(browser, tmp_path_factory):
    """Benchmark, not a timed assertion: chars/s of the page's step for a 1x640 LSTM."""
    if not SHAKESPEARE.is_file():
        pytest.skip("data/tinyshakespeare.txt not found")
    tmp = tmp_path_factory.mktemp("speed")
    run = tmp / "h640"
    charwise.train(str(SHAKESPEARE), out=run, hidden_size=640, layers=1, max_steps=2,
                   val_fraction=0.001, progress=False, log=lambda *a: None)
    model = charwise.load(run)
    lines = []
    for q in ("none", "fp16", "int8"):
        page = export_page(run, tmp, q)
        for query in ("", "?engine=js"):
            open_page(browser, page, query)
            browser.execute_script("charwise.bench(200)")                # warm up the JIT
            rate = max(browser.execute_script("return charwise.bench(1000)") for _ in range(3))
            engine = browser.execute_script("return charwise.engine")
            lines.append(f"{q}: {page.stat().st_size / 1e6:.2f} MB, {rate:,.0f} chars/s ({engine})")
        if q == "none":
            got = browser.execute_script("return charwise.generate('ROMEO:', 100, {temperature: 0}).text")
            assert got == model.generate("ROMEO:", 100, temperature=0)
    # The page's own loop (steps + softmax + top-5 + DOM) through the Generate button.
    open_page(browser, page)
    browser.execute_script("""
        const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                                 e.dispatchEvent(new Event('input')); };
        set('prime', 'ROMEO:'); set('temperature', 0.8); set('length', 2000); set('seed', 1);""")
    browser.find_element("id", "generate").click()
    wait_for(lambda: browser.find_element("id", "status").text.startswith("done"), timeout=120, what="done")
    lines.append("int8 page, Generate button: " + browser.find_element("id", "status").text)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nweb export, LSTM 1x640 in headless Chromium ({os.cpu_count()} cores, load average "
          f"{load}: chars/s scale with the share of a core the page gets):\n  " + "\n  ".join(lines))
