"""`charwise serve RUN_DIR`: a local playground page for a trained run.

Starlette app served by uvicorn (pip install charwise[serve]). The page (static/) posts a JSON
request to /api/generate and reads the answer as server-sent events, one per character, then a
"done" event (docs/http-api.md documents the HTTP API):

    data: {"i": 0, "c": "e", "p": 0.41, "q": 0.52, "top": [["e", 0.41, 0.52], ...]}
    data: {"done": true, "n": 300, "stop": null, "end": false, "cut": 0, "seconds": 1.93,
           "prime": "ROMEO:", "note": ""}

p is the model's probability of the character, q the probability it was drawn with, top the
five likeliest as [char, p, q]; "c" the text the step completed ("" while a byte model's
character is incomplete). The request's sampling fields make a SamplingParams, with the
defaults and checks of `charwise sample`, and the draws are its: a seed gives the same text.
Stop strings are trimmed here, so the events' text never holds one (unless keep_stop), and text
that could still start one is sent once that is decided; "cut" is always 0.

Bad requests get a 4xx JSON {"error": "..."}; at most `max_concurrent` generations run at once
(429 beyond); bodies over 16 KiB get 413; and the page only answers to loopback Host names
unless served on another address, which keeps other web sites (DNS rebinding) out.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .asgi import is_loopback, listen_socket, loopback_only, uvicorn_config
from .data.vocab import UnknownChars
from .errors import CharwiseError
from .generation.charmodel import load
from .generation.loop import SampleText
from .generation.params import FIELDS as PARAMS
from .generation.params import SamplingParams, page_defaults
from .generation.sampler import Sampler
from .guards import json_depth_ok
from .runs.runinfo import describe
from .settings.commands import ServeOptions
from .settings.options import shown_value
from .threads import check_threads

MAX_BODY = 16 << 10
MAX_DEPTH = 8                  # a request is a flat object; deeper nesting is refused unparsed
TOP = 5
FIELDS = ("prime", "n", "temperature", "top_p", "top_k", "seed", "delay_ms", "oov", "stop", "keep_stop")
# the fields that make a SamplingParams, checked there as `charwise sample`'s flags (n, too,
# once it is within the server's max_chars)
SAMPLING = tuple(f for f in FIELDS if f in PARAMS and f != "n")


@dataclass(frozen=True)
class Limits:
    max_chars: int = ServeOptions.max_chars              # characters per request (--max-chars)
    max_prime: int = 2000                                # characters of prime
    max_concurrent: int = ServeOptions.max_concurrent    # generations running at once
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
    """One of the server's own numeric fields (n within max_chars, delay_ms), in lo..hi."""
    v = body.get(key, default)
    if v is None:
        raise BadRequest(400, f"{key} must not be null")
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRequest(400, f"{key} must be {kind}, got {shown_value(v)}")
    # compared before any conversion: int vs float comparisons are exact in Python, so a
    # 4000-digit integer is out of range here instead of an OverflowError in float()
    if (isinstance(v, float) and not math.isfinite(v)) or not lo <= v <= hi:
        shown = f"{lo} and {hi}" if integer else f"{lo:g} and {hi:g}"
        raise BadRequest(400, f"{key} must be between {shown}, got {shown_value(v)}")
    if integer and isinstance(v, float) and not v.is_integer():
        raise BadRequest(400, f"{key} must be {kind}, got {shown_value(v)}")
    return int(v) if integer else float(v)


def parse_request(body, limits: Limits) -> dict:
    """Validate a /api/generate body; raise BadRequest naming the field. The sampling fields
    make a SamplingParams (its defaults and checks, as `charwise sample`'s); the others are the
    server's own (prime and n within its limits, delay_ms, oov). The result holds them, the
    SamplingParams as "params" and its fields as the JSON names them."""
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
    n = _number(body, "n", page_defaults(limits.max_chars)["n"], 1, limits.max_chars, integer=True)
    delay_ms = _number(body, "delay_ms", 0, 0, limits.max_delay_ms)
    oov = body.get("oov", "error")                   # checked with the prime (fit_prime)
    try:
        params = SamplingParams(n=n, **{k: body[k] for k in SAMPLING if k in body})
    except CharwiseError as e:
        raise BadRequest(400, http_message(e)) from None
    return {"prime": prime, "delay_ms": delay_ms, "oov": oov, "params": params,
            **{f: getattr(params, f) for f in ("n",) + SAMPLING}}


_FLAG = re.compile(r"(?<![\w-])--?([a-z][a-z0-9-]*)")      # --top-p, -n


def http_message(e: CharwiseError) -> str:
    """An error for an HTTP client: it names the request's JSON fields, where the CLI's
    message names flags (characters outside the vocabulary: "oov": "skip", not --oov skip)."""
    if isinstance(e, UnknownChars):                 # only the prime is encoded from a request
        return "prime: " + e.message('send "oov": "skip" to drop them')
    return _FLAG.sub(lambda m: m[1].replace("-", "_") if m[1].replace("-", "_") in FIELDS
                     else m[0], str(e))


class Generator:
    """CharModel.sample_steps (the sampling loop of `charwise sample`), one step at a time, with
    each step's top-5; the step's symbol goes through loop.SampleText (decoder, stop strings,
    end symbol) as each sample of `charwise sample` does."""

    def __init__(self, model, threads: int | None = None):
        self.model = model
        self.chars = model.vocab.labels
        self.end_id = model.end_id              # line mode's end of an item (else never drawn)
        self.threads = threads

    @torch.inference_mode()
    def start(self, req: dict):
        """Prime the model (a bad prime fails here, before any event is sent)."""
        params: SamplingParams = req["params"]
        prime, note = self.model.fit_prime(req["prime"], req.get("oov", "error"))
        steps = self.model.sample_steps(prime, params, oov="error", threads=self.threads)
        text = SampleText(self.model.vocab.decoder(), params.stops, params.keep_stop, params.n)
        return {"steps": steps, "first": next(steps), "i": 0, "prime": prime, "note": note,
                "drawn": Sampler(params, self.model.banned_id), "text": text, "held": [], "free": 0,
                "ended": None}

    @torch.inference_mode()
    def next(self, run: dict, req: dict, last: bool) -> list[dict]:
        """One step: the events it lets out (none while its text may still turn out to be part
        of a stop string; several once that is decided). run["ended"] is set when a stop
        string or the end symbol ended the text."""
        logits, ids = run.pop("first", None) or next(run["steps"])
        z = logits[0].astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        q = run["drawn"].probs(logits)[0]                # what it was drawn with
        j = int(ids[0])
        top = np.argsort(-p, kind="stable")[:TOP]
        ev = {"i": run["i"], "c": "", "p": _r(p[j]), "q": _r(q[j]),
              "top": [[self.chars[k], _r(p[k]), _r(q[k])] for k in top]}
        run["i"] += 1
        text: SampleText = run["text"]
        final = text.feed(j, self.end_id)
        if last and not text.done:
            final += text.close("length")
        ev["c"] = text.decoded
        if text.end.reason == "end":
            ev["end"] = True
            run["ended"] = {"end": True}
        run["held"].append([ev, len(ev["c"])])
        out = self._release(run, final)
        if text.end.reason == "stop":            # a stop string: what follows it is dropped
            run["ended"] = {"stop": text.end.stop}
            return out + self._cut(run)
        return out

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
            "steps": facts["steps"], "defaults": page_defaults(limits.max_chars),
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
    return Starlette(routes=routes, middleware=loopback_only(host),
                     # starlette's stub types a handler's exception as Exception, not its subclass
                     exception_handlers={HTTPException: not_here})  # type: ignore[dict-item]


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
    if not is_loopback(host):
        log(f"warning: serving on {host}: anyone who can reach this address can use the model")
    shown = f"[{host}]" if ":" in host else host
    log(f"charwise playground for {run_dir}: http://{shown}:{port}/  (Ctrl-C to stop)")
    with sock:
        uvicorn.Server(uvicorn_config(app, host, port)).run(sockets=[sock])
