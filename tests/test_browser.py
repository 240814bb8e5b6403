"""The playground in a real headless Chromium: type a prime, generate, watch the text stream
in, hover a character and read the top-5 panel.

The browser is conftest's `browser` fixture (skipped, saying why, without Chromium and its
driver). Set CHARWISE_SCREENSHOT=docs/playground.png to refresh the docs' screenshot (`make screenshot`).
"""
import os
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import charwise  # noqa: E402
from charwise.asgi import background_server  # noqa: E402
from charwise.server import Limits, create_app  # noqa: E402
from conftest import wait_for  # noqa: E402


def test_playground_streams_and_shows_alternatives(trained_run, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = create_app(trained_run, limits=Limits(max_chars=600))
    with background_server(app) as url:
        d = browser
        d.get(url + "/")
        wait_for(lambda: "parameters" in d.find_element(By.ID, "model-info").text, what="model info")
        assert "89,062 parameters" in d.find_element(By.ID, "model-info").text
        # the controls start at `charwise sample`'s defaults (SamplingParams, from /api/info)
        assert d.execute_script("return ['temperature', 'top-p', 'length'].map("
                                "(id) => document.getElementById(id).value)") == ["1", "1", "500"]
        assert d.find_element(By.ID, "temperature-value").text == "1.00"

        prime = d.find_element(By.ID, "prime")
        prime.send_keys(Keys.CONTROL, "a")
        prime.send_keys(Keys.DELETE)
        prime.send_keys("Zebra")                       # 'Z' is not in this model's vocabulary
        wait_for(lambda: d.find_element(By.ID, "oov").is_displayed(), what="vocabulary warning")
        assert not d.find_element(By.ID, "generate").is_enabled()
        prime.send_keys(Keys.CONTROL, "a")
        prime.send_keys(Keys.DELETE)
        prime.send_keys("Mr Bennet was")
        wait_for(lambda: d.find_element(By.ID, "generate").is_enabled(), what="generate enabled")

        # Sliders and the seed box, set the way a user's drag would (input events).
        d.execute_script("""
            const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                                     e.dispatchEvent(new Event('input')); };
            set('length', 400); set('temperature', 0.6); set('top-p', 0.95); set('delay', 5);""")
        d.find_element(By.ID, "seed").send_keys("5")
        assert d.find_element(By.ID, "temperature-value").text == "0.60"
        d.find_element(By.ID, "generate").click()

        # Text streams in: some characters appear while the status still says "generating".
        wait_for(lambda: "generating" in d.find_element(By.ID, "status").text
                 and len(d.find_elements(By.CSS_SELECTOR, "#out .ch")) >= 5, what="streaming")
        partial = len(d.find_elements(By.CSS_SELECTOR, "#out .ch"))
        assert 0 < partial < 400
        wait_for(lambda: d.find_element(By.ID, "status").text.startswith("done"), what="done")
        spans = d.find_elements(By.CSS_SELECTOR, "#out .ch")
        assert len(spans) == 400
        shown = d.find_element(By.ID, "out").get_attribute("textContent")
        want = charwise.load(trained_run).generate("Mr Bennet was", 400, 0.6, top_p=0.95, seed=5)
        assert shown == want                           # the page shows what `sample` gives

        # Hover a character: the panel lists the five likeliest characters with probabilities.
        # (The character the model was least sure of among the first 150: a telling screenshot.)
        k = d.execute_script("""
            const a = [...document.querySelectorAll('#out .ch')].slice(0, 150)
                .map((el) => parseFloat(el.style.getPropertyValue('--a')));
            return a.indexOf(Math.max(...a));""")
        target = spans[k]
        ActionChains(d).move_to_element(target).perform()
        wait_for(lambda: f"Character {k + 1}:" in d.find_element(By.ID, "panel-body").text,
                 what="hover panel")
        rows = d.find_elements(By.CSS_SELECTOR, "#panel-body .alt")
        assert 5 <= len(rows) <= 6
        pcts = [float(r.find_element(By.CLASS_NAME, "pct").text.rstrip("%")) for r in rows[:5]]
        assert pcts == sorted(pcts, reverse=True) and 0 < sum(pcts) <= 100.5
        chosen = d.find_elements(By.CSS_SELECTOR, "#panel-body .alt.chosen")
        assert len(chosen) == 1
        glyph = chosen[0].find_element(By.CLASS_NAME, "glyph").text
        assert glyph == {" ": "␣", "\n": "⏎"}.get(target.text or " ", target.text)

        shot = os.environ.get("CHARWISE_SCREENSHOT")
        path = Path(shot) if shot else tmp_path / "playground.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Bad input shows the server's message on the page instead of failing silently.
        d.execute_script("document.getElementById('length').max = 5000;"
                         "const e = document.getElementById('length'); e.value = 5000;"
                         "e.dispatchEvent(new Event('input'));")
        d.find_element(By.ID, "generate").click()
        wait_for(lambda: "error 400" in d.find_element(By.ID, "status").text, what="error message")
        assert "n must be between 1 and 600" in d.find_element(By.ID, "status").text
