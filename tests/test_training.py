import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from charwise.errors import CharwiseError
from charwise.settings.train import resolve
from charwise.training import learning_rate, train
from conftest import needs_bf16

QUIET = dict(progress=False, log=lambda *a: None)


def test_training_lowers_loss_and_writes_run(tmp_path):
    res = train(None, out=tmp_path / "r", max_steps=200, eval_every=100, **QUIET)
    h = res.history
    assert h[0]["val_loss"] < math.log(38)               # better than uniform guessing
    assert h[-1]["val_loss"] < 0.6 * h[0]["val_loss"]
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["format_version"] == 1 and info["status"] == "done" and info["step"] == 200
    assert len(info["vocab"]) == 38 and info["model"]["vocab_size"] == 38
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert sum(1 for l in lines if '"event"' not in l) == 200
    w = load_file(tmp_path / "r" / "model.safetensors")
    assert w["embed.weight"].shape == (38, 32)


def test_seeded_cpu_fp32_run_is_repeatable(tmp_path):
    kw = dict(max_steps=30, eval_every=0, precision="fp32", device="cpu", **QUIET)
    train(None, out=tmp_path / "a", **kw)
    train(None, out=tmp_path / "b", **kw)
    wa, wb = load_file(tmp_path / "a" / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa if k.startswith("model/"))
    train(None, out=tmp_path / "c", seed=7, **kw)
    wc = load_file(tmp_path / "c" / "last.safetensors")
    assert not torch.equal(wa["model/head.weight"], wc["model/head.weight"])


def test_resume_is_bit_identical(tmp_path):
    kw = dict(max_steps=40, eval_every=20, precision="fp32", device="cpu", **QUIET)
    train(None, out=tmp_path / "full", **kw)
    train(None, out=tmp_path / "part", **{**kw, "max_steps": 20})
    train(None, out=tmp_path / "part", resume=True, max_steps=40, progress=False, log=lambda *a: None)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "part" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = [l for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    hb = [l for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(l).get("loss") for l in ha] == [json.loads(l).get("loss") for l in hb]


@needs_bf16
def test_bf16_training_still_learns(tmp_path):
    res = train(None, out=tmp_path / "bf", precision="bf16", max_steps=150, eval_every=150, **QUIET)
    assert res.history[-1]["val_loss"] < 1.5
    assert res.history[-1]["precision"] == "bf16"       # scored in the arithmetic it trained in


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_train(tmp_path, cell):
    res = train(None, out=tmp_path / cell, cell=cell, max_steps=120, eval_every=120, **QUIET)
    assert res.history[-1]["val_loss"] < 2.6


def test_learning_rate_schedule():
    _, t = resolve("spec", lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(t, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(t, 9, 0.0) == pytest.approx(1.0)
    assert learning_rate(t, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(t, 99, 1.0) == pytest.approx(0.1)
    _, lin = resolve("spec", lr=1.0, warmup_steps=10, min_lr_ratio=0.0, decay="linear")
    assert [learning_rate(lin, 50, p) for p in (0.0, 0.25, 1.0)] == pytest.approx([1.0, 0.75, 0.0])


def test_time_budget_is_respected(tmp_path):
    res = train(None, out=tmp_path / "t", max_time=3.0, max_steps=10**6, eval_every=100, **QUIET)
    assert res.stopped_because == "time"
    # the final evaluation is inside the budget; allow one slow step on a loaded machine
    assert res.train_seconds < 3.0 * 1.5
    assert res.steps > 5


def test_patience_stops_early(tmp_path):
    res = train(None, out=tmp_path / "p", max_steps=5000, eval_every=5, patience=2, lr=0.05,
                **QUIET)
    assert res.stopped_because in ("patience", "budget")
    if res.stopped_because == "patience":
        assert res.steps < 5000 and res.steps - res.best_step == 2 * 5


def test_short_text_reduces_streams(tmp_path, text_file):
    p = text_file("abcdefghij" * 12)                        # 120 chars: one stream of 40 fits 2x
    res = train(p, out=tmp_path / "s", preset="spec", max_steps=5, val_fraction=0.0, **QUIET)
    info = json.loads((tmp_path / "s" / "run.json").read_text())
    assert info["train"]["batch_size"] == 2 and res.steps == 5


def test_existing_out_needs_force(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(CharwiseError, match="not empty"):
        train(None, out=out, max_steps=2, **QUIET)
    assert (out / "precious.txt").read_text() == "keep me"
    train(None, out=out, max_steps=2, force=True, **QUIET)
    assert (out / "precious.txt").read_text() == "keep me"   # --force replaces only our files


def test_resume_refuses_changed_settings(tmp_path):
    train(None, out=tmp_path / "r", max_steps=3, **QUIET)
    with pytest.raises(CharwiseError, match="--hidden-size is 128 in the run, 64 given"):
        train(None, out=tmp_path / "r", resume=True, hidden_size=64, **QUIET)


def test_resume_accepts_the_batch_size_a_short_text_cut(tmp_path):
    """A text too short for --batch-size streams trains fewer (a note says so); re-running the
    first command with --resume added was refused ("--batch-size is 3 in the run, 4 given")."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)      # 900 chars
    kw = dict(hidden_size=8, embed_dim=4, seq_len=200, batch_size=16, eval_every=0, threads=1,
              device="cpu", **QUIET)
    train(text, out=tmp_path / "r", max_steps=2, **kw)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["train"]["batch_size"] == 4 and info["asked"] == {"batch_size": 16}
    train(text, out=tmp_path / "r", resume=True, max_steps=3, **kw)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["step"] == 3 and info["asked"] == {"batch_size": 16}
    with pytest.raises(CharwiseError, match="--batch-size is 4 in the run, 8 given"):
        train(text, out=tmp_path / "r", resume=True, max_steps=4, **{**kw, "batch_size": 8})


def test_numpy_engine_trains_like_the_torch_engine(tmp_path):
    """Same data, same initial weights, same AdamW: the two engines' loss curves coincide
    (up to float32 rounding), and the NumPy run's checkpoint samples like any other."""
    kw = dict(max_steps=60, eval_every=60, precision="fp32", device="cpu", **QUIET)
    train(None, out=tmp_path / "t", **kw)
    train(None, out=tmp_path / "n", engine="numpy", **kw)

    def losses(run):
        return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()
                if '"event"' not in l]
    lt, ln = losses(tmp_path / "t"), losses(tmp_path / "n")
    assert len(lt) == len(ln) == 60
    assert np.allclose(lt, ln, atol=2e-3)
    assert ln[-1] < 0.75 * ln[0]
    import charwise
    assert charwise.load(tmp_path / "n").generate("Mr", 20, seed=0).startswith("Mr")


def test_numpy_engine_refuses_dropout(tmp_path):
    with pytest.raises(CharwiseError, match="dropout"):
        train(None, out=tmp_path / "d", engine="numpy", dropout=0.1, max_steps=2, **QUIET)


def test_a_given_budget_replaces_the_presets_budget():
    _, t = resolve("spec")
    assert t.max_steps == 400
    _, t = resolve("spec", max_time=5.0)
    assert t.max_steps is None and t.max_time == 5.0


def test_stream_restarts_are_staggered_and_periodic():
    from charwise.training import stream_keep_mask
    rows = np.arange(8)
    masks = np.array([stream_keep_mask(s, rows, 4) for s in range(8)])   # (steps, streams)
    assert (~masks).sum(axis=1).tolist() == [2] * 8          # 8 streams / 4: two restart each step
    assert (~masks).sum(axis=0).tolist() == [2] * 8          # each stream restarts every 4 steps


def test_cold_start_is_learned(tmp_path):
    """Evaluation and sampling start from a zero state. 150 steps of the small preset on
    tiny-shakespeare (a sixth of an epoch) scored 8.7 nats/char from there without staggered
    restarts (worse than uniform guessing, ln 65 = 4.17) and 2.2 with them."""
    from conftest import SHAKESPEARE
    res = train(SHAKESPEARE, out=tmp_path / "c", preset="small", max_steps=150, eval_every=150,
                val_fraction=0.01, **QUIET)
    assert res.history[-1]["val_loss"] < 3.0


# ----------------------------------------------------------------------------- the Trainer's shape (issue 27)

def _trainer_class():
    import ast
    import inspect

    from charwise.training import trainer
    tree = ast.parse(inspect.getsource(trainer))
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")


def _assigned(node):
    """The targets an assignment statement binds, tuples unpacked."""
    import ast
    targets = (node.targets if isinstance(node, ast.Assign)
               else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
    out = []
    while targets:
        t = targets.pop()
        if isinstance(t, (ast.Tuple, ast.List)):
            targets += t.elts
        else:
            out.append(t)
    return out


def test_the_trainer_is_short_and_sets_its_attributes_in_init_only():
    """The Trainer reads as the loop: at most 300 lines, its attributes made in __init__ (the
    run set up, setup.Run; its state, state.RunState, built by start_state), none later, so no
    method depends on another having run first."""
    import ast
    cls = _trainer_class()
    assert cls.end_lineno - cls.lineno + 1 <= 300
    late = sorted(f"{f.name}: self.{t.attr}" for f in cls.body
                  if isinstance(f, ast.FunctionDef) and f.name != "__init__"
                  for node in ast.walk(f) for t in _assigned(node)
                  if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self")
    assert not late, late


def test_the_loop_changes_only_the_fields_of_its_state():
    """What the loop assigns on its state (`st.x = ...`, `self.state.x = ...`, in trainer.py and
    saving.py) is a declared field of RunState: no state is made up on the way."""
    import ast
    import dataclasses
    import inspect

    from charwise.training import saving, trainer
    from charwise.training.state import RunState
    fields = {f.name for f in dataclasses.fields(RunState)}
    seen = set()
    for module in (trainer, saving):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            for t in _assigned(node):
                if not isinstance(t, ast.Attribute):
                    continue
                owner = t.value
                if (isinstance(owner, ast.Name) and owner.id == "st") or (
                        isinstance(owner, ast.Attribute) and owner.attr == "state"
                        and isinstance(owner.value, ast.Name) and owner.value.id == "self"):
                    seen.add(t.attr)
    assert seen and seen <= fields, seen - fields


def test_batches_say_which_rows_keep_their_state():
    from charwise.training.batches import ItemBatches, StreamBatches, stream_keep_mask
    tokens = (np.arange(2000) % 50).astype(np.uint8)
    plain = StreamBatches(tokens, 4, 10, seed=1)
    assert not plain.keep(0).any() and plain.keep(1).all()                   # cold at each epoch
    assert not plain.keep(plain.windows_per_epoch).any()
    staggered = StreamBatches(tokens, 4, 10, seed=1, reset_every=3)
    for step in range(1, 6):
        assert np.array_equal(staggered.keep(step), stream_keep_mask(step, np.arange(4), 3))
    mine = StreamBatches(tokens, 4, 10, seed=1, streams=slice(2, 4), reset_every=3)   # rank 1 of 2
    assert np.array_equal(mine.keep(5), staggered.keep(5)[2:])
    x, y = plain.batch(plain.windows_per_epoch + 2)
    assert np.array_equal(x, plain.window(2, 1)[0]) and np.array_equal(y, plain.window(2, 1)[1])
    items = ItemBatches([np.array([1, 2]), np.array([3])], 2, end_id=9)
    assert items.keep(0) is None and items.keep(7) is None                   # no row carries any


def test_the_two_engines_take_the_same_steps_behind_one_interface():
    """TorchStep and NumpyStep from the same weights: the same losses step after step, the
    same carried state, and restart zeroes the rows it is told to."""
    from charwise.model import CharRNN
    from charwise.settings.train import ModelConfig
    from charwise.threads import policy_for
    from charwise.training.step import NumpyStep, TorchStep, optimizer
    _, tcfg = resolve("spec", lr=1e-2, grad_clip=1.0)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, embed_dim=4, hidden_size=8))
    numpy_step = NumpyStep(model, tcfg)
    torch_step = TorchStep(model, model, optimizer(model, tcfg), tcfg, torch.device("cpu"), "fp32",
                           policy_for(1), 3 * 5)
    rng = np.random.default_rng(0)
    for k in range(4):
        x, y = rng.integers(0, 7, (3, 5)), rng.integers(0, 7, (3, 5))
        keep = np.array([True, k != 2, True]) if k else np.zeros(3, bool)
        values = []
        for engine in (torch_step, numpy_step):
            engine.restart(keep)
            if k == 2:                                 # row 1 restarted, the others carried
                assert not engine.state[0][:, 1].any() and engine.state[0][:, 0].any()
            values.append(engine.train_step(engine.stage(x, y), 1e-2).tolist())
        assert np.allclose(values[0], values[1], atol=1e-4), (k, values)
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(torch_step.state, numpy_step.state))
    assert torch_step.opt is not None and numpy_step.opt is None     # NumPy's moments are its own
    before = {k: v.clone() for k, v in model.state_dict().items()}
    numpy_step.sync_weights()                        # the NumPy engine's weights into the model
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_device_cuda_n_is_a_training_device_too(tmp_path, monkeypatch):
    """`--device` means the same for train as for the other commands: cuda:N is accepted
    (settings), and refused in one line where that GPU is not there."""
    _, tcfg = resolve("spec", device="cuda:1")
    assert tcfg.device == "cuda:1"
    with pytest.raises(CharwiseError, match="--device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve("spec", device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CharwiseError, match="--device cuda:1 asked for, but no CUDA GPU is available"):
        train(None, out=tmp_path / "r", preset="spec", max_steps=2, device="cuda:1", **QUIET)
    assert not (tmp_path / "r" / "run.json").exists()
    from charwise.training.step import NumpyStep
    _, tcfg = resolve("spec", device="cuda:0", engine="numpy", dropout=0.0)
    with pytest.raises(CharwiseError, match="--engine numpy runs on the CPU only"):
        NumpyStep.check(resolve("spec")[0], tcfg, resume=False)


def test_init_from_and_resume_is_refused_by_the_api_as_by_the_cli(tmp_path):
    from charwise.settings.train import INIT_FROM_AND_RESUME
    from charwise.training.trainer import Trainer
    with pytest.raises(CharwiseError) as e:
        train(None, out=tmp_path / "r", init_from="base", resume=True, **QUIET)
    assert str(e.value) == INIT_FROM_AND_RESUME and not (tmp_path / "r").exists()
    with pytest.raises(CharwiseError, match="do not mix"):
        Trainer(None, out=tmp_path / "r", init_from="base", resume=True, **QUIET)
