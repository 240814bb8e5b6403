"""generation/params.py: one SamplingParams, checked once, for every way of asking for text (the
CLI, the API, CharModel, serve, the pages' defaults), and the path a temperature takes from
`charwise sample` down to the logits."""
import dataclasses
import sys

import numpy as np
import pytest

import charwise
from charwise.cli import main
from charwise.generation.params import DECLARED, FIELDS, SamplingParams, page_defaults
from charwise.generation.sampler import Sampler, draw, filter_probs
from charwise.settings.commands import SampleOptions
from charwise.settings.options import DEFAULT_TEMPERATURE, MAX_CHARS, MAX_SEED, CharwiseError


def test_fields_and_defaults_are_sample_options():
    """One declaration: SamplingParams's fields are SampleOptions's, with its defaults."""
    opts = {f.name: f for f in dataclasses.fields(SampleOptions)}
    for f in dataclasses.fields(SamplingParams):
        assert f.name in opts and f.default == opts[f.name].default, f.name
    assert DECLARED == opts and FIELDS == tuple(f.name for f in dataclasses.fields(SamplingParams))
    p = SamplingParams()
    assert p.effective_temperature == DEFAULT_TEMPERATURE and p.temperature is None and p.stops == ()
    assert SamplingParams(temperature=0.7).effective_temperature == 0.7
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 2.0                                     # type: ignore[misc]


@pytest.mark.parametrize("kw, message", [
    ({"temperature": -1}, "--temperature must be >= 0.0, got -1.0"),
    ({"temperature": float("inf")}, "--temperature must be a finite number, got inf"),
    ({"temperature": 10 ** 400}, "--temperature must be a finite number, got an integer of 401 digits"),
    ({"top_k": 0}, "--top-k must be >= 1, got 0"),
    ({"top_p": 0}, "--top-p must be > 0.0, got 0.0"),
    ({"top_p": 1.5}, "--top-p must be <= 1.0, got 1.5"),
    ({"seed": MAX_SEED + 1}, f"--seed must be in 0..{MAX_SEED}, got {MAX_SEED + 1}"),
    ({"seed": -10 ** 4000}, f"--seed must be in 0..{MAX_SEED}, got an integer of 4001 digits"),
    ({"n": -1}, "-n must be >= 0, got -1"),
    ({"n": MAX_CHARS + 1}, f"-n {MAX_CHARS + 1} is too large"),
    ({"num_samples": 0}, "--num-samples must be in 1..4096, got 0"),
    ({"stop": [""]}, "--stop: a stop string cannot be empty"),
    ({"stop": 3}, "--stop must be a string or a list of strings, got int"),
    ({"keep_stop": "yes"}, "--keep-stop must be true or false, got 'yes'"),
    ({"beam": 65}, "--beam must be in 1..64, got 65"),
    ({"beam": 2, "temperature": 1.0}, "drop --temperature"),
    ({"beam": 2, "top_k": 3, "top_p": 0.5}, "drop --top-k and --top-p"),
    ({"beam": 2, "num_samples": 2}, "does not combine with --stop, --new-only or --num-samples"),
])
def test_bad_values_are_the_clis_one_line_errors(kw, message):
    with pytest.raises(CharwiseError) as e:
        SamplingParams(**kw)
    assert message in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 200


def test_the_same_error_from_every_entry(trained_run, capsys):
    """CLI, charwise.sample, CharModel and serve's request parsing check with the same code."""
    model = charwise.load(trained_run)
    want = "--top-p must be <= 1.0, got 1.5"
    for call in (lambda: charwise.sample(trained_run, top_p=1.5), lambda: model.generate("Mr", 5, top_p=1.5),
                 lambda: list(model.steps("Mr", 5, top_p=1.5)), lambda: model.stream("Mr", 5, top_p=1.5),
                 lambda: SamplingParams(top_p=1.5)):
        with pytest.raises(CharwiseError) as e:
            call()
        assert str(e.value) == want
    assert main(["sample", str(trained_run), "--top-p", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == f"charwise: error: {want}"
    pytest.importorskip("starlette")
    from charwise.server import BadRequest, Limits, parse_request
    with pytest.raises(BadRequest) as e:
        parse_request({"top_p": 1.5}, Limits())
    assert str(e.value) == "top_p must be <= 1.0, got 1.5"         # the JSON field, not the flag


def test_from_options_reads_the_clis_escapes_and_numpy_integers_are_integers():
    p = SamplingParams.from_options(SampleOptions(stop=(r"\n\n", "x"), seed=3, temperature=0.5))
    assert p.stops == ("\n\n", "x") and (p.seed, p.temperature, p.n) == (3, 0.5, SampleOptions().n)
    assert SamplingParams(stop="a").stops == ("a",)              # the API's stop: real characters
    assert SamplingParams(stop=r"\n").stops == ("\\n",)
    q = SamplingParams(n=np.int64(7), seed=np.int32(5))
    assert (q.n, q.seed) == (7, 5) and type(q.n) is int


def test_serve_takes_the_clis_defaults_and_bounds():
    """serve's own defaults (temperature 0.8, n 300) and bounds (temperature <= 5, top_k <=
    2**20) are gone: a request gets `charwise sample`'s, as its page's controls do."""
    pytest.importorskip("starlette")
    from charwise.server import Limits, parse_request
    req = parse_request({}, Limits())
    assert req["params"] == SamplingParams(n=SampleOptions().n)
    assert req["temperature"] is None and req["params"].effective_temperature == DEFAULT_TEMPERATURE
    assert parse_request({}, Limits(max_chars=100))["n"] == 100
    hot = parse_request({"temperature": 7.5, "top_k": 2 ** 30, "seed": MAX_SEED}, Limits())["params"]
    assert (hot.temperature, hot.top_k, hot.seed) == (7.5, 2 ** 30, MAX_SEED)
    assert page_defaults() == {"n": SampleOptions().n, "temperature": DEFAULT_TEMPERATURE, "top_p": 1.0,
                               "top_k": None}


def test_the_pages_start_from_the_defaults(trained_run):
    from charwise.exporting.web import build_html
    html, _ = build_html(charwise.load(trained_run))
    assert '"defaults":{"n":%d,"temperature":%s,"top_p":1.0,"top_k":null}' % (
        SampleOptions().n, DEFAULT_TEMPERATURE) in html
    assert 'value="0.8"' not in html and "d.temperature" in html


def test_sampler_applies_the_params():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2))
    s = Sampler(SamplingParams(temperature=0.5, top_k=3, seed=4), banned=1)
    assert np.allclose(s.probs(logits.copy()), filter_probs(np.where([[0, 1, 0, 0]], -np.inf, logits), 0.5, 3))
    ids = s(logits)
    assert np.isneginf(logits[:, 1]).all() and 1 not in ids          # banned, in place
    assert (ids == draw(logits, np.random.default_rng(4), 0.5, 3)).all()


# ----------------------------------------------------------------------------- the path of a temperature

TEMPERATURE = 0.7310585          # a value no other argument of the run holds


def _carries(frame) -> bool:
    """The frame's arguments or locals hold the temperature: as a number, in an options, params
    or argparse object, or in a sampler's params."""
    for v in list(frame.f_locals.values()):
        for x in (v, getattr(v, "params", None)):
            t = x if isinstance(x, float) else getattr(x, "temperature", None) if x is not None else None
            if isinstance(t, float) and t == TEMPERATURE:
                return True
    return False


def _modules(frame) -> list[str]:
    """The charwise modules on the stack from `frame` up, outermost first, each run of frames
    in one module as one entry."""
    names = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("charwise") and (not names or names[-1] != name):
            names.append(name)
        frame = frame.f_back
    return names[::-1]


def _record_path(call):
    """Run `call` under a profiler; (the module path of every call that carries the
    temperature, the paths of those that apply it)."""
    paths, applied = [], []

    def profile(frame, event, arg):
        if event == "call" and frame.f_globals.get("__name__", "").startswith("charwise") and _carries(frame):
            path = _modules(frame)
            paths.append(path)
            if frame.f_code.co_name == "filter_probs":
                applied.append(path)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return paths, applied


def _cli_sample():
    assert main(["sample", "base", "--prime", "The", "-n", "5", "--seed", "1",
                 "--temperature", str(TEMPERATURE)]) == 0


def _api_sample():
    assert charwise.sample("base", prime="The", n=5, seed=1, temperature=TEMPERATURE).startswith("The")


@pytest.mark.parametrize("call, entry", [(_cli_sample, "charwise.cli"), (_api_sample, "charwise.api")],
                         ids=["cli", "api"])
def test_a_temperature_goes_down_and_never_climbs_back(call, entry, capsys):
    """`charwise sample --temperature T` (and `charwise.sample(..., temperature=T)`): along the
    path of every call that carries T, from the entry point to the sampler that divides the
    logits by it, no module is entered twice (no A -> B -> A), and T is applied in one place."""
    paths, applied = _record_path(call)
    assert applied and all(p == applied[0] for p in applied)
    assert applied[0][0] == entry and applied[0][-1] == "charwise.generation.sampler", applied[0]
    assert {p[-1] for p in paths} >= {"charwise.settings.options", "charwise.generation.params"}
    for path in paths:
        assert len(path) == len(set(path)), " -> ".join(path)
