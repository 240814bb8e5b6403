"""The playground's HTTP API with stop strings (the `stop` and `keep_stop` fields)."""
import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import charwise  # noqa: E402
from charwise.serve import Limits, background_server, create_app  # noqa: E402
from test_serve import events, request  # noqa: E402


@pytest.fixture(scope="module")
def server(trained_run):
    with background_server(create_app(trained_run, limits=Limits(max_chars=500))) as url:
        yield url


def shown(evs):
    """The text the page shows: each event's characters, minus `cut` characters."""
    text = ""
    for e in evs:
        if e.get("done"):
            continue
        text += e["c"]
        if e.get("cut"):
            text = text[:len(text) - e["cut"]]
    return text


@pytest.mark.parametrize("keep", [False, True])
def test_stop_ends_the_stream_like_generate(server, trained_run, keep):
    body = {"prime": "Mr Bennet", "n": 400, "temperature": 1.0, "seed": 4, "stop": ["e", ". "],
            "keep_stop": keep}
    conn, r = request(server, "POST", "/api/generate", body)
    evs = events(r)
    done = evs[-1]
    assert done["done"] and done["stop"] in ("e", ". ") and done["n"] == len(evs) - 1
    want = charwise.load(trained_run).generate("Mr Bennet", 400, 1.0, seed=4, stop=["e", ". "],
                                               keep_stop=keep)
    assert "Mr Bennet" + shown(evs) == want


def test_no_stop_met_runs_to_n(server):
    conn, r = request(server, "POST", "/api/generate",
                      {"prime": "Mr", "n": 20, "temperature": 0, "stop": ["@@@"]})
    evs = events(r)
    assert evs[-1]["n"] == 20 and evs[-1].get("stop") is None
    assert len(evs) == 21


@pytest.mark.parametrize("body, match", [
    ({"stop": [""]}, "stop string cannot be empty"),
    ({"stop": [3]}, "must be text"),
    ({"stop": ["x" * 300]}, "at most 256"),
    ({"keep_stop": "yes"}, "keep_stop must be true or false"),
])
def test_bad_stop_fields(server, body, match):
    conn, r = request(server, "POST", "/api/generate", body)
    assert r.status == 400 and match in json.loads(r.read())["error"]


def test_page_has_a_stop_input(server):
    conn, r = request(server, "GET", "/")
    assert 'id="stop-at"' in r.read().decode()
