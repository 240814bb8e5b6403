"""`charwise serve RUN_DIR`: a local playground page for a trained run.

Starlette app served by uvicorn (pip install charwise[serve]). The page (static/) posts a JSON
request to /api/generate and reads the answer as server-sent events, one per character:

    data: {"i": 0, "c": "e", "p": 0.41, "q": 0.52, "top": [["e", 0.41, 0.52], ...]}
    ...
    data: {"done": true, "n": 300, "stop": null, "end": false, "cut": 0, "seconds": 1.93,
           "prime": "ROMEO:", "note": ""}

p is the model's probability of the character (softmax of the logits); q the probability it
was drawn with (after temperature and top-p/top-k); top the model's five likeliest characters
as [char, p, q]. The last event gives the prime as the model read it (quotes matched to the
corpus's forms; with "oov": "skip", unknown characters dropped) and a note saying what changed.
Sampling is the same as `charwise sample`: a seed gives the same text. docs/http-api.md documents the
HTTP API.
"c" is the text the step completed: one character, or for a byte model "" while a multi-byte
character is incomplete. `stop` (a list of strings, optional) ends the text at the first of
them, as `charwise sample --stop` does: the server trims it, so the events' text never holds
the stop string (with "keep_stop": true it ends with it), and characters that could still be
the start of a stop string are sent once that is decided. The done event says why the text
ended: "stop" (the string met, or null), "end" (a line-mode model's end symbol; that step's
event has "end": true too), "n" (the steps taken) and "cut", the characters a client must
remove, always 0 since the server trims (clients of the earlier protocol removed the stop
string themselves by it).

Bad requests get a 4xx JSON {"error": "..."}; at most `max_concurrent` generations run at once
(429 beyond); bodies over 16 KiB get 413; and the page only answers to loopback Host names
unless served on another address, which keeps other web sites (DNS rebinding) out.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .data.corpus import UnknownChars
from .errors import CharwiseError
from .generation.charmodel import filter_probs, load
from .generation.stops import StopMatcher, parse_stops
from .guards import json_depth_ok
from .runs.runinfo import describe
from .settings.options import MAX_SEED, ServeOptions
from .threads import check_threads

MAX_BODY = 16 << 10
MAX_DEPTH = 8                  # a request is a flat object; deeper nesting is refused unparsed
TOP = 5
FIELDS = ("prime", "n", "temperature", "top_p", "top_k", "seed", "delay_ms", "oov", "stop", "keep_stop")


@dataclass(frozen=True)
class Limits:
    max_chars: int = 2000          # characters per request
    max_prime: int = 2000          # characters of prime
    max_concurrent: int = 4        # generations running at once
    max_delay_ms: int = 1000


def _require() -> None:
    import importlib.util
    for mod in ("starlette", "uvicorn"):
        if importlib.util.find_spec(mod) is None:
            raise CharwiseError(f"charwise serve needs the {mod} package: pip install charwise[serve]")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _number(body: dict, key: str, default, lo: float, hi: float, integer: bool = False):
    v = body.get(key, default)
    if v is None:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRequest(400, f"{key} must be {kind}, got {_short(v)}")
    # compared before any conversion: int vs float comparisons are exact in Python, so a
    # 4000-digit integer is out of range here instead of an OverflowError in float()
    if (isinstance(v, float) and not math.isfinite(v)) or not lo <= v <= hi:
        shown = (f"{lo} and {hi}" if integer else f"{lo:g} and {hi:g}")     # 2**63-1 exactly
        raise BadRequest(400, f"{key} must be between {shown}, got {_short(v)}")
    if integer and isinstance(v, float) and not v.is_integer():
        raise BadRequest(400, f"{key} must be {kind}, got {_short(v)}")
    return int(v) if integer else float(v)


def _short(v) -> str:
    text = repr(v) if not isinstance(v, int) or abs(v) < 10 ** 30 else f"an integer of {len(str(abs(v)))} digits"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_request(body, limits: Limits) -> dict:
    """Validate a /api/generate body; raise BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(400, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    prime = body.get("prime", "")
    if not isinstance(prime, str):
        raise BadRequest(400, "prime must be a string")
    if len(prime) > limits.max_prime:
        raise BadRequest(400, f"prime is {len(prime)} characters; at most {limits.max_prime}")
    req = {"prime": prime,
           "n": _number(body, "n", 300, 1, limits.max_chars, integer=True),
           "temperature": _number(body, "temperature", 0.8, 0, 5),
           "top_p": _number(body, "top_p", 1.0, 1e-6, 1),
           "top_k": _number(body, "top_k", None, 1, 1 << 20, integer=True),
           "seed": _number(body, "seed", None, 0, MAX_SEED, integer=True),
           "delay_ms": _number(body, "delay_ms", 0, 0, limits.max_delay_ms)}
    req["oov"] = body.get("oov", "error")
    if req["oov"] not in ("error", "skip"):
        raise BadRequest(400, f"oov must be \"error\" or \"skip\", got {req['oov']!r}")
    if req["n"] is None or req["temperature"] is None:
        raise BadRequest(400, "n and temperature must not be null")
    try:
        req["stop"] = parse_stops(body.get("stop"), escapes=False)
    except CharwiseError as e:
        raise BadRequest(400, http_message(e)) from None
    req["keep_stop"] = body.get("keep_stop", False)
    if not isinstance(req["keep_stop"], bool):
        raise BadRequest(400, f"keep_stop must be true or false, got {req['keep_stop']!r}")
    if req["top_p"] is not None and req["top_p"] >= 1:
        req["top_p"] = None                     # 1 keeps everything: same as no filter
    return req


_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


def http_message(e: CharwiseError) -> str:
    """An error for an HTTP client: it names the request's JSON fields, where the CLI's
    message names flags (characters outside the vocabulary: "oov": "skip", not --oov skip)."""
    if isinstance(e, UnknownChars):                 # only the prime is encoded from a request
        return "prime: " + e.message('send "oov": "skip" to drop them')
    return _FLAG.sub(lambda m: m[1].replace("-", "_") if m[1].replace("-", "_") in FIELDS
                     else m[0], str(e))


class Generator:
    """CharModel.steps (the sampling loop of `charwise sample`), one step at a time, with each
    step's top-5."""

    def __init__(self, model, threads: int | None = None):
        self.model = model
        self.chars = model.vocab.labels
        self.end_id = model.end_id              # line mode's end of an item (else never drawn)
        self.threads = threads

    @torch.inference_mode()
    def start(self, req: dict):
        """Prime the model (a bad prime fails here, before any event is sent)."""
        prime, note = self.model.fit_prime(req["prime"], req.get("oov", "error"))
        steps = self.model.steps(prime, req["n"], req["temperature"], req["top_k"],
                                 req["top_p"], req["seed"], oov="error", threads=self.threads)
        return {"steps": steps, "first": next(steps), "i": 0, "prime": prime, "note": note,
                "decoder": self.model.vocab.decoder(), "held": [], "free": 0,
                "matcher": StopMatcher(req["stop"], req["keep_stop"]), "ended": None}

    @torch.inference_mode()
    def next(self, run: dict, req: dict, last: bool) -> list[dict]:
        """One step: the events it lets out (none while its text may still turn out to be part
        of a stop string; several once that is decided). run["ended"] is set when a stop
        string or the end symbol ended the text."""
        logits, ids = run.pop("first", None) or next(run["steps"])
        z = logits[0].astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        q = filter_probs(logits, req["temperature"], req["top_k"], req["top_p"])[0]   # as drawn
        j = int(ids[0])
        top = np.argsort(-p, kind="stable")[:TOP]
        ev = {"i": run["i"], "c": "", "p": _r(p[j]), "q": _r(q[j]),
              "top": [[self.chars[k], _r(p[k]), _r(q[k])] for k in top]}
        run["i"] += 1
        if j == self.end_id:
            run["ended"] = {"end": True}
            return self._release(run, run["matcher"].finish()) + [{**ev, "end": True}]
        ev["c"] = run["decoder"].feed(j) + (run["decoder"].flush() if last else "")
        run["held"].append([ev, len(ev["c"])])
        out = self._release(run, run["matcher"].feed(ev["c"]))
        if run["matcher"].done:                  # a stop string: what follows it is dropped
            run["ended"] = {"stop": run["matcher"].matched}
            return out + self._cut(run)
        return out + (self._release(run, run["matcher"].finish()) if last else [])

    @staticmethod
    def _release(run: dict, text: str) -> list[dict]:
        """The held events whose whole text `text` (what the stop matcher let out) completes."""
        run["free"] += len(text)
        out = []
        while run["held"] and run["held"][0][1] <= run["free"]:
            ev, n = run["held"].pop(0)
            run["free"] -= n
            out.append(ev)
        return out

    @staticmethod
    def _cut(run: dict) -> list[dict]:
        """After a stop string: the text let out but not yet sent (the part of an event's text
        before the stop, or through it with keep_stop); the rest is dropped."""
        out = []
        if run["held"] and run["free"] > 0:
            ev, _ = run["held"][0]
            out.append({**ev, "c": ev["c"][:run["free"]]})
        run["held"], run["free"] = [], 0
        return out


async def _events(gen: Generator, run: dict, req: dict):
    """The answer's server-sent events: one per step (text that may be the start of a stop
    string waits until that is decided; a stop string itself is never sent unless keep_stop),
    until n steps, a stop string or the end of an item, then the "done" event."""
    from anyio import to_thread  # lazy: anyio comes with starlette, an optional extra
    t0 = time.perf_counter()
    n, delay = req["n"], req["delay_ms"] / 1000
    done = {"done": True, "n": n, "stop": None, "end": False, "cut": 0}
    for i in range(n):
        evs = await to_thread.run_sync(gen.next, run, req, i + 1 == n)
        for ev in evs:
            yield _sse(ev)
        if run["ended"]:
            done.update(n=i + 1, **run["ended"])
            break
        if delay:
            await asyncio.sleep(delay)
    done.update(seconds=round(time.perf_counter() - t0, 3), prime=run["prime"], note=run["note"])
    yield _sse(done)


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(run_dir, which: str = "best", limits: Limits = Limits(), host: str = "127.0.0.1",
               threads: int | None = None, device: str = "cpu"):
    """The playground as an ASGI app (Starlette)."""
    _require()
    # lazy: starlette (and anyio with it) is the optional `serve` extra
    from anyio import to_thread
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    model = load(run_dir, which=which, device=device)
    gen = Generator(model, threads)
    facts = describe(run_dir)
    static = Path(str(resources.files("charwise") / "static"))
    active = {"n": 0}

    class Stream(StreamingResponse):
        """Gives the generation slot back however the response ends (done, error, hang-up)."""

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                release()

    def release() -> None:
        active["n"] -= 1

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request):
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-store"})

    async def info(request: Request):
        return JSONResponse({
            "run": Path(run_dir).resolve().name, "model": facts["model"],
            "parameters": facts["parameters"], "vocab": list(model.vocab.chars),
            "vocab_kind": model.vocab.kind, "line_mode": model.line_mode,
            "best_val_loss": facts["best_val_loss"], "eval_split": facts["eval_split"],
            "steps": facts["steps"],
            "limits": limits.__dict__, "active": active["n"]})

    async def generate(request: Request):
        try:
            req = parse_request(await _read_body(request), limits)
        except BadRequest as e:
            return error(e.status, str(e))
        if active["n"] >= limits.max_concurrent:
            return error(429, f"busy: {active['n']} generations are running (the limit is "
                              f"{limits.max_concurrent}); try again in a moment")
        active["n"] += 1                 # no await since the check: nothing can slip in between
        try:
            run = await to_thread.run_sync(gen.start, req)
        except CharwiseError as e:
            release()
            return error(400, http_message(e))
        except BaseException:
            release()
            raise

        return Stream(_events(gen, run, req), media_type="text/event-stream",
                      headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def not_here(request: Request, exc: HTTPException):     # 404, 405: JSON like the rest
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                            status_code=exc.status_code, headers=exc.headers)

    routes = [Route("/", index), Route("/api/info", info),
              Route("/api/generate", generate, methods=["POST"]),
              Mount("/static", StaticFiles(directory=static), name="static")]
    return Starlette(routes=routes, middleware=_middleware(host),
                     exception_handlers={HTTPException: not_here})


def _middleware(host: str) -> list:
    """On a loopback address, answer only loopback Host names (no DNS rebinding)."""
    from starlette.middleware import Middleware  # lazy: starlette is an optional extra
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    if not _is_loopback(host):
        return []
    return [Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])]


async def _read_body(request) -> object:
    """The JSON body of a POST, within MAX_BODY bytes, or a BadRequest."""
    # Requiring application/json makes a cross-site page's plain form post impossible
    # (browsers preflight JSON, and we answer no CORS), so other sites cannot use the model.
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest(415, "send the request as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadRequest(413, f"request body too large (at most {MAX_BODY} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(413, f"request body too large (at most {MAX_BODY} bytes)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"the request body is not valid JSON ({e})") from None
    if not json_depth_ok(text, MAX_DEPTH):
        raise BadRequest(400, f"the request body is nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        # ValueError: an integer longer than Python's int_max_str_digits
        raise BadRequest(400, f"the request body is not valid JSON ({str(e)[:120]})") from None


def _config(app, host: str, port: int):
    import uvicorn
    # limit_concurrency bounds open connections; request sizes are bounded in read_body.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                          limit_concurrency=64, timeout_keep_alive=5,
                          timeout_graceful_shutdown=2)   # Ctrl-C does not wait out open streams


def serve(run_dir, options: ServeOptions | None = None, *, log=print, **kw) -> None:
    """Run the playground until Ctrl-C (what `charwise serve` does). Options: ServeOptions
    (host, port, which, max_chars, max_concurrent, threads, device), or its fields as keyword
    arguments."""
    o = ServeOptions.make(options, **kw)
    _require()
    import uvicorn
    host = o.host
    limits = Limits(max_chars=o.max_chars, max_concurrent=o.max_concurrent)
    app = create_app(run_dir, o.which, limits, host, check_threads(o.threads), o.device)
    sock = listen_socket(host, o.port)          # a port in use or a bad host: refused here
    port = sock.getsockname()[1]
    if not _is_loopback(host):
        log(f"warning: serving on {host}: anyone who can reach this address can use the model")
    shown = f"[{host}]" if ":" in host else host
    log(f"charwise playground for {run_dir}: http://{shown}:{port}/  (Ctrl-C to stop)")
    with sock:
        uvicorn.Server(_config(app, host, port)).run(sockets=[sock])


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), or a one-line error naming them.
    Bound here, before anything is printed, and handed to uvicorn: its own bind reports a port
    in use or an unknown host in its log and exits with its own code."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as e:
        raise CharwiseError(f"--host {host!r}: not an address this machine can listen on "
                            f"({getattr(e, 'strerror', None) or e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise CharwiseError(f"cannot listen on {host} port {port} ({e.strerror or e})") from None
    return sock


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", timeout: float = 20.0):
    """Serve `app` on a free loopback port in a thread; yields its base URL. For tests and
    notebooks. The server stops when the block ends."""
    import uvicorn
    sock = listen_socket(host, 0)
    server = uvicorn.Server(_config(app, host, 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the playground server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = server.force_exit = True
        thread.join(timeout)
        sock.close()
