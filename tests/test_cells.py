"""The cell registry (charwise.cells) against the engines: every registered cell has a torch
module, a float64 NumPy reference, a sampling step and a web-page step, and the facts the
registry declares (gates, state tensors) are what those implementations use. A cell of kind
"attention" (the Transformer) has its own places for them (cells.py's docstring names them)."""
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from charwise.cells import CELLS, NAMES, RECURRENT, Cell, cell
from charwise.model import CharRNN, build_model
from charwise.settings.train import ModelConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "charwise"
STEPS_MODULE = "charwise.generation.steps"             # where the sampling step classes live


def js_cells(table_name: str = "CELL_UPDATES") -> set[str]:
    """The entries of a table in page.js: CELL_UPDATES (`name(gi, gh, ...) {` at its top
    level) or MODEL_STEPS (`name: Class,`)."""
    js = (SRC / "static" / "web" / "page.js").read_text(encoding="utf-8")
    table = re.search(r"const " + table_name + r" = \{\n(.*?)\n  \};", js, re.S)
    assert table, f"page.js has no {table_name} table"
    entry = r"^    (\w+)\(" if table_name == "CELL_UPDATES" else r"^    (\w+): \w+,"
    return set(re.findall(entry, table.group(1), re.M))


def missing_attention(c: Cell) -> list[str]:
    """What an engine lacks for a cell of kind "attention" (empty when it is complete)."""
    model = importlib.import_module("charwise.transformer")
    ref = importlib.import_module("charwise.reference.transformer")
    steps = importlib.import_module(STEPS_MODULE)
    missing = []
    if not isinstance(getattr(model, c.torch, None), type):
        missing.append(f"torch: charwise.transformer.{c.torch}")
    if not callable(getattr(ref, "forward", None)):
        missing.append("reference: forward in reference/transformer.py")
    if not isinstance(getattr(steps, c.fast_step, None), type):
        missing.append(f"fast step: {c.fast_step} in {STEPS_MODULE}")
    if c.name not in js_cells("MODEL_STEPS"):
        missing.append(f"js: MODEL_STEPS.{c.name} in static/web/page.js")
    return missing


def missing_implementations(c: Cell) -> list[str]:
    """What an engine lacks for cell `c` (empty when it is complete)."""
    if c.kind == "attention":
        return missing_attention(c)
    ref = importlib.import_module("charwise.reference.cells")
    steps = importlib.import_module(STEPS_MODULE)
    missing = []
    if not isinstance(getattr(torch.nn, c.torch, None), type):
        missing.append(f"torch: torch.nn.{c.torch}")
    if c.name not in ref.CELLS or not all(hasattr(ref, f"{c.name}_{d}") for d in ("forward", "backward")):
        missing.append(f"reference: {c.name}_forward/_backward in reference/cells.py")
    if not isinstance(getattr(steps, c.fast_step, None), type):
        missing.append(f"fast step: {c.fast_step} in {STEPS_MODULE}")
    if c.name not in js_cells():
        missing.append(f"js: CELL_UPDATES.{c.name} in static/web/page.js")
    return missing


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_cell_has_every_engine(name):
    assert missing_implementations(CELLS[name]) == []


def test_a_cell_without_its_engines_is_caught():
    fake = Cell("lstm2", 4, ("i", "f", "g", "o"), ("h", "c"), "LSTM2", "LSTM2Step")
    assert [m.split(":")[0] for m in missing_implementations(fake)] == ["torch", "reference", "fast step", "js"]
    attn = Cell("transformer2", 0, (), (), "CharTransformer2", "KVCacheStep2", kind="attention")
    assert [m.split(":")[0] for m in missing_implementations(attn)] == ["torch", "fast step", "js"]


@pytest.mark.parametrize("name", RECURRENT)
def test_the_torch_model_has_the_registered_gates_and_state(name):
    c, H = CELLS[name], 6
    net = CharRNN(ModelConfig(cell=name, embed_dim=5, hidden_size=H, layers=2, vocab_size=7))
    assert net.rnn.weight_hh_l1.shape == (c.gates * H, H) == net.rnn.weight_ih_l1.shape
    assert len(c.gate_names) == c.gates
    state = net.zero_state(3)
    assert len(state) == c.state_arity and all(s.shape == (2, 3, H) for s in state)
    _, new = net(torch.zeros(3, 4, dtype=torch.long), state)
    assert len(new) == c.state_arity


def test_an_attention_cell_carries_no_state():
    for c in CELLS.values():
        if c.kind == "attention":
            net = build_model(ModelConfig(cell=c.name, embed_dim=4, layers=2, heads=2, context=8, vocab_size=5))
            assert (c.gates, c.state_arity, net.zero_state(3)) == (0, 0, ())
            assert len(net.new_cache(3)) == 2 * 2 + 2


@pytest.mark.parametrize("name", RECURRENT)
def test_the_reference_engine_uses_the_registered_facts(name):
    from charwise.reference import CharLSTM
    m = CharLSTM(ModelConfig(cell=name, embed_dim=3, hidden_size=4, layers=1, vocab_size=5))
    assert (m.G, m.n_state) == (CELLS[name].gates, CELLS[name].state_arity)
    sd = {k: np.asarray(v) for k, v in m.params.items()}
    assert CharLSTM.from_state_dict(sd).cfg.cell == name


def test_the_settings_choices_and_sampling_steps_come_from_the_registry():
    import dataclasses

    from charwise.settings.train import ModelConfig as MC
    choices = next(f for f in dataclasses.fields(MC) if f.name == "cell").metadata["choices"]
    assert tuple(choices) == NAMES
    steps = importlib.import_module(STEPS_MODULE)
    for name in RECURRENT:      # a transformer's step may be another class on the CPU
        net = CharRNN(ModelConfig(cell=name, embed_dim=3, hidden_size=4, vocab_size=5)).eval()
        assert isinstance(steps.make_step(net), getattr(steps, CELLS[name].fast_step)), name


def test_unknown_cell_names_the_choices():
    with pytest.raises(KeyError, match="choices: lstm, gru, rnn"):
        cell("lstm3")
