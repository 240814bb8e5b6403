"""The cell registry: every cell charwise knows (the recurrent ones and the Transformer),
declared once (torch-free).

A cell's facts (its gate count, the names of its state tensors) live here and nowhere else:
`--cell`'s choices, the torch model, the memory and shape checks (bounds.py), checkpoints'
state arity (runs/rundir.py), the ONNX and web exports and the NumPy reference read them from
this table.

Adding a cell type touches this table plus one implementation per engine, each named below:

    torch       model.py builds `torch.nn.<torch>` (a module with nn.LSTM's interface)
    reference   reference/cells.py: `<name>_forward` and `<name>_backward` in float64 NumPy
    fast_step   generation/steps.py: the class that steps it one character at a time when sampling
                ("ModuleStep" = the torch module itself, a step at a time; no fused kernel)
    js          static/web/page.js: the entry `<name>` of CELL_UPDATES (the web page's step)

A cell of kind "attention" (the Transformer) has no gates and no carried state; its torch
class is `charwise.transformer.<torch>`, its reference `reference/transformer.py: forward`, its
step a KV-cache step, and in page.js the entry `<name>` of MODEL_STEPS.

tests/test_cells.py fails when a registered cell lacks one of them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str                   # the value of --cell
    gates: int                  # G: rows of weight_ih / weight_hh per hidden unit
    gate_names: tuple[str, ...]  # the G blocks of those rows, in torch's order
    state: tuple[str, ...]      # the recurrent state tensors, each (L, B, H), in this order
    torch: str                  # the torch.nn class of its recurrent core
    fast_step: str              # the sampling step class in generation/steps.py
    kind: str = "recurrent"     # "recurrent" (state carried from window to window) or "attention"

    @property
    def state_arity(self) -> int:
        return len(self.state)


CELLS: dict[str, Cell] = {c.name: c for c in (
    Cell("lstm", 4, ("i", "f", "g", "o"), ("h", "c"), "LSTM", "FusedLSTMStep"),
    Cell("gru", 3, ("r", "z", "n"), ("h",), "GRU", "ModuleStep"),
    Cell("rnn", 1, ("a",), ("h",), "RNN", "ModuleStep"),
    Cell("transformer", 0, (), (), "CharTransformer", "KVCacheStep", kind="attention"),
)}
NAMES = tuple(CELLS)            # --cell's choices, in the order the help lists them
RECURRENT = tuple(n for n, c in CELLS.items() if c.kind == "recurrent")


def is_attention(name: str) -> bool:
    """`name` is a Transformer: no carried state, a context window instead."""
    return cell(name).kind == "attention"


def cell(name: str) -> Cell:
    """The registered cell `name` (KeyError names the choices)."""
    try:
        return CELLS[name]
    except KeyError:
        raise KeyError(f"unknown cell {name!r} (choices: {', '.join(NAMES)})") from None


def shape_text(m: dict) -> str:
    """A run.json "model" record in a few words: "LSTM 2 x 512, embedding 64" or "TRANSFORMER
    4 blocks x 128 wide, 4 heads, context 64" (what info, the report, pack and the log say)."""
    name = str(m.get("cell", "?"))
    if name in CELLS and CELLS[name].kind == "attention":
        return (f"TRANSFORMER {m.get('layers')} blocks x {m.get('embed_dim')} wide, "
                f"{m.get('heads')} heads, {m.get('positions')} positions, context {m.get('context')}"
                + (", tied head" if m.get("tie_weights") else ""))
    return f"{name.upper()} {m.get('layers')} x {m.get('hidden_size')}, embedding {m.get('embed_dim')}"
