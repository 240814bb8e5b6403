"""The playground's HTTP API with stop strings (the `stop` and `keep_stop` fields)."""
import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import charwise  # noqa: E402
from charwise.asgi import background_server  # noqa: E402
from charwise.server import Limits, create_app  # noqa: E402
from test_serve import events, request  # noqa: E402


@pytest.fixture(scope="module")
def server(trained_run):
    with background_server(create_app(trained_run, limits=Limits(max_chars=500))) as url:
        yield url


def text_of(evs):
    """The text the step events carry (the server trims a stop string itself)."""
    return "".join(e["c"] for e in evs if not e.get("done"))


@pytest.mark.parametrize("keep", [False, True])
def test_stop_ends_the_stream_like_generate(server, trained_run, keep):
    body = {"prime": "Mr Bennet", "n": 400, "temperature": 1.0, "seed": 4, "stop": ["e", ". "],
            "keep_stop": keep}
    conn, r = request(server, "POST", "/api/generate", body)
    evs = events(r)
    done = evs[-1]
    assert done["done"] and done["stop"] in ("e", ". ") and done["cut"] == 0
    want = charwise.load(trained_run).generate("Mr Bennet", 400, 1.0, seed=4, stop=["e", ". "],
                                               keep_stop=keep)
    assert "Mr Bennet" + text_of(evs) == want
    assert text_of(evs).endswith(done["stop"]) == keep
    steps = evs[:-1]
    assert [e["i"] for e in steps] == list(range(len(steps)))      # the page indexes by i
    assert len(steps) <= done["n"] and all("cut" not in e for e in steps)


def test_a_stop_string_is_trimmed_by_the_server_and_held_back_until_decided(server, trained_run):
    """As `charwise sample --stop`: the client gets the text without the stop string (nothing
    to cut), whether the stop is met or not; a partial match is sent once it is decided."""
    model = charwise.load(trained_run)
    full = model.generate("Mr", 200, 1.0, seed=7)[2:]
    stop = full[40:43]                          # three characters the text holds: met there
    want = model.generate("Mr", 200, 1.0, seed=7, stop=[stop])[2:]
    conn, r = request(server, "POST", "/api/generate",
                      {"prime": "Mr", "n": 200, "temperature": 1.0, "seed": 7, "stop": [stop]})
    evs = events(r)
    assert text_of(evs) == want and stop not in text_of(evs) and evs[-1]["stop"] == stop
    miss = full[:2] + "\x00"                   # starts like the text, never completed
    conn, r = request(server, "POST", "/api/generate",
                      {"prime": "Mr", "n": 200, "temperature": 1.0, "seed": 7, "stop": [miss]})
    evs = events(r)
    assert text_of(evs) == full and evs[-1]["stop"] is None and evs[-1]["n"] == 200


def test_http_errors_name_json_fields_not_flags(server):
    conn, r = request(server, "POST", "/api/generate", {"prime": "Zq@", "n": 5})
    msg = json.loads(r.read())["error"]
    assert r.status == 400 and '"oov": "skip"' in msg and "--" not in msg
    for body in ({"stop": [""]}, {"stop": 3}, {"stop": ["x" * 300]}):
        conn, r = request(server, "POST", "/api/generate", body)
        msg = json.loads(r.read())["error"]
        assert r.status == 400 and "stop" in msg and "--" not in msg, msg


def test_the_cli_error_names_the_flag(capsys):
    from charwise.cli import main
    assert main(["sample", "base", "--prime", "\u4e00"]) == 2
    err = capsys.readouterr().err
    assert "--oov skip" in err and len(err.strip().splitlines()) == 1


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
