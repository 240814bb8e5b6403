"""charwise serve: the playground's HTTP API on loopback (real uvicorn, real sockets)."""
import http.client
import json
import time
from urllib.parse import urlparse

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import charwise  # noqa: E402
from charwise.asgi import background_server  # noqa: E402
from charwise.server import Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(trained_run):
    app = create_app(trained_run, limits=Limits(max_chars=500, max_concurrent=1))
    with background_server(app) as url:
        yield url


def request(url, method, path, body=None, headers=None, raw=None, timeout=20):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    return conn, conn.getresponse()


def events(resp) -> list[dict]:
    out = []
    for block in resp.read().decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_page_and_info(server, trained_run):
    conn, r = request(server, "GET", "/")
    page = r.read().decode()
    assert r.status == 200 and "charwise playground" in page and "/static/app.js" in page
    conn, r = request(server, "GET", "/static/app.js")
    assert r.status == 200 and "api/generate" in r.read().decode()
    conn, r = request(server, "GET", "/api/info")
    info = json.loads(r.read())
    assert info["parameters"] == 89062 and info["model"]["cell"] == "lstm"
    assert info["vocab"] == list(charwise.load(trained_run).vocab.chars)
    assert info["limits"]["max_chars"] == 500


def test_stream_matches_charwise_sample(server, trained_run):
    body = {"prime": "Mr Bennet", "n": 80, "temperature": 0.7, "top_p": 0.9, "seed": 11}
    conn, r = request(server, "POST", "/api/generate", body)
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    evs = events(r)
    chars, done = evs[:-1], evs[-1]
    assert done["done"] is True and done["n"] == 80 and len(chars) == 80
    text = "".join(e["c"] for e in chars)
    want = charwise.load(trained_run).generate("Mr Bennet", 80, 0.7, top_p=0.9, seed=11)
    assert "Mr Bennet" + text == want                  # the same sampler as `charwise sample`
    for e in chars:
        assert len(e["top"]) == 5
        ps = [p for _, p, _ in e["top"]]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1.001
        assert 0 <= e["p"] <= 1 and 0 < e["q"] <= 1      # q: what it was drawn with
        if e["c"] in [c for c, _, _ in e["top"]]:
            assert dict((c, p) for c, p, _ in e["top"])[e["c"]] == e["p"]


def test_greedy_stream(server, trained_run):
    conn, r = request(server, "POST", "/api/generate", {"prime": "Mr", "n": 30, "temperature": 0})
    evs = events(r)[:-1]
    assert all(e["q"] == 1 and e["c"] == e["top"][0][0] for e in evs)
    assert "Mr" + "".join(e["c"] for e in evs) == charwise.load(trained_run).generate("Mr", 30, 0)


def test_oov_skip_is_accepted_and_the_prime_used_is_reported(server):
    # the error for an unknown character says to skip it: the API accepts that
    conn, r = request(server, "POST", "/api/generate", {"prime": "Mr Z@", "n": 3, "oov": "skip", "seed": 1})
    assert r.status == 200
    evs = events(r)
    assert len([e for e in evs if "c" in e]) == 3
    assert evs[-1]["done"] and evs[-1]["prime"] == "Mr " and "dropped" in evs[-1]["note"]


@pytest.mark.parametrize("body, status, match", [
    ({"n": 10 ** 9}, 400, "n must be between 1 and 500"),
    ({"n": 0}, 400, "n must be between 1 and 500"),
    ({"n": 2.5}, 400, "n must be an integer"),
    ({"temperature": -1}, 400, "temperature must be >= 0.0"),           # `charwise sample`'s rule
    ({"temperature": "hot"}, 400, "temperature must be a number"),
    ({"top_p": 0}, 400, "top_p must be > 0.0"),
    ({"top_p": 1.5}, 400, "top_p must be <= 1.0"),
    ({"prime": 5}, 400, "prime must be a string"),
    ({"prime": "x" * 3000}, 400, "prime is 3000 characters"),
    ({"prime": "Zq@"}, 400, "not in the model's vocabulary"),
    ({"prime": "Zq@"}, 400, 'send "oov": "skip" to drop them'),       # a field, not a flag
    ({"nn": 5}, 400, "unknown field(s) nn"),
    ({"oov": "drop"}, 400, "oov must be"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_bad_requests_get_4xx_with_a_message(server, body, status, match):
    conn, r = request(server, "POST", "/api/generate", body)
    assert r.status == status
    assert match in json.loads(r.read())["error"]


def test_non_json_oversize_and_wrong_type(server):
    conn, r = request(server, "POST", "/api/generate", raw=b"{not json", headers={})
    assert r.status == 400 and "not valid JSON" in json.loads(r.read())["error"]
    conn, r = request(server, "POST", "/api/generate", raw=b"n=5",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415 and "JSON" in json.loads(r.read())["error"]
    conn, r = request(server, "POST", "/api/generate", raw=b'{"prime": "' + b"a" * 40000 + b'"}')
    assert r.status == 413 and "too large" in json.loads(r.read())["error"]
    conn, r = request(server, "GET", "/api/generate")
    assert r.status == 405
    conn, r = request(server, "GET", "/", headers={"Host": "evil.example"})
    assert r.status == 400                            # DNS rebinding: foreign Host refused


def test_concurrency_limit_and_slot_freed_on_hangup(server):
    # The fixture allows one generation at a time. Start a slow one and read its first event.
    conn, r = request(server, "POST", "/api/generate", {"prime": "Mr", "n": 500, "delay_ms": 200})
    assert r.status == 200
    assert r.read(6) == b"data: "
    c2, r2 = request(server, "POST", "/api/generate", {"n": 5})
    assert r2.status == 429 and "busy" in json.loads(r2.read())["error"]
    conn.close()                                      # the user closes the tab
    deadline = time.monotonic() + 10
    while True:                                       # bounded: the slot must come back
        _, ri = request(server, "GET", "/api/info")
        if json.loads(ri.read())["active"] == 0:
            break
        assert time.monotonic() < deadline, "generation slot not released after hang-up"
        time.sleep(0.05)
    c3, r3 = request(server, "POST", "/api/generate", {"n": 5})
    assert r3.status == 200 and events(r3)[-1]["done"]


def test_serve_cli_errors(tmp_path, capsys):
    from charwise.cli import main
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
