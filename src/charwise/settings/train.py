"""train's settings, declared once as frozen dataclasses: the model's shape (ModelConfig), how
it trains (TrainConfig), which run (TrainRun), the presets, and `resolve`.

Each field's metadata is its documentation (``help``) and its checks (choices, bounds): the CLI
turns every field into a flag with that help text, the Python API takes the same names as
keyword arguments, and config files (toml.py) the same names as keys. Presets are partial
overrides of the dataclasses, applied before any explicit flag. The other subcommands' options
are declared the same way in options.py.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ..cells import NAMES as CELL_NAMES
from ..cells import is_attention
from ..errors import CharwiseError
from .options import DEVICES, _f, build, encoding_opt, seed_opt


@dataclass(frozen=True)
class ModelConfig:
    cell: str = _f("lstm", "the model: a recurrent cell (lstm, gru, rnn) or a causal transformer",
                   choices=CELL_NAMES)
    embed_dim: int = _f(32, "character embedding size (a transformer's width)", min=1)
    hidden_size: int = _f(128, "hidden units per layer (recurrent cells)", min=1)
    layers: int = _f(1, "number of stacked recurrent layers (a transformer's blocks)", min=1)
    dropout: float = _f(0.0, "dropout on embeddings, between layers and before the head", min=0.0, max=0.95)
    heads: int = _f(4, "attention heads (transformer; --embed-dim must be a multiple)", min=1)
    positions: str = _f("learned", "how a transformer knows where a character is: learned "
                        "position embeddings or rotary (RoPE)", choices=("learned", "rotary"))
    tie_weights: bool = _f(False, "a transformer's output head shares the embedding matrix (its "
                           "bias stays its own): vocabulary x width fewer weights")
    context: int = field(default=0, metadata={
        "help": "a transformer's context: the most characters a prediction sees (set from "
                "--seq-len, or the longest item in line mode)", "cli": False})
    vocab_size: int = field(default=0, metadata={"help": "set from the corpus", "cli": False})

    @property
    def width(self) -> int:
        """The size of the vectors the model's matrices multiply: a recurrent cell's hidden
        size, a transformer's embedding width."""
        return self.embed_dim if is_attention(self.cell) else self.hidden_size


# The fields that fix a model's shape: given with --init-from they must match SOURCE's, and any
# of them given makes auto train from scratch (base has its own)
SHAPE_FIELDS = ("cell", "embed_dim", "hidden_size", "layers", "heads", "positions", "tie_weights")


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = _f(40, "window length T for truncated BPTT (characters)", min=1)
    batch_size: int = _f(16, "parallel contiguous streams B", min=1)
    lr: float = _f(3e-3, "peak learning rate (AdamW)", min=0.0, exclusive_min=True)
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of --lr", min=0.0, max=1.0)
    decay: str = _f("cosine", "learning-rate decay after warmup, down to --lr x --min-lr-ratio",
                    choices=("cosine", "linear"))
    warmup_steps: int = _f(20, "linear learning-rate warmup steps (with --max-time, or "
                           "--warmup-fraction of the time if that ends first)", min=0)
    warmup_fraction: float = _f(0.03, "with --max-time: the warmup also ends once this fraction "
                                "of the time budget has passed, so a slow machine does not "
                                "spend its budget warming up", min=0.0, max=0.5)
    weight_decay: float = _f(0.0, "decoupled weight decay (matrices only)", min=0.0)
    beta2: float = _f(0.99, "AdamW's second-moment decay (its first is 0.9)", min=0.0, max=0.9999)
    optimizer: str = _f("adamw", "adamw, or muon (a transformer: its blocks' weight matrices step "
                        "along their momentum orthogonalised, at --muon-lr; the rest by AdamW at "
                        "--lr; --weight-decay for both)", choices=("adamw", "muon"))
    muon_lr: float = _f(0.01, "--optimizer muon: the blocks' peak learning rate (the same warmup "
                        "and decay as --lr)", min=0.0, exclusive_min=True)
    reset_every: int = _f(16, "restart each stream's carried state from zero every N windows (staggered "
                          "across streams), so the model also learns the cold start that sampling "
                          "and evaluation use; 0 = only at epoch starts", min=0)
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)", min=0.0)
    max_steps: int | None = _f(None, "stop after this many optimizer steps", min=1)
    max_epochs: float | None = _f(None, "stop after this many passes over the training text",
                                  min=0.0, exclusive_min=True)
    max_time: float | None = _f(None, "wall-clock budget in seconds, final evaluation included; the "
                                "learning-rate schedule is stretched over it. Budgets are totals over "
                                "the whole run: --resume continues the count", min=0.0, exclusive_min=True)
    eval_every: int = _f(200, "evaluate on the whole validation split every N steps (0 = only at the end)", min=0)
    eval_every_epochs: float | None = _f(None, "evaluate every N passes over the training text "
                                         "instead of every --eval-every steps: the validation split "
                                         "is a fixed share of the text, so this keeps the cost of "
                                         "evaluating a fixed share of the run at any text size",
                                         min=0.0, exclusive_min=True)
    checkpoint_every: float = _f(60.0, "also save the resumable checkpoint every N seconds between "
                                 "evaluations (0 = only at evaluations and the end)", min=0.0)
    keep: int = _f(0, "also keep the N most recent older checkpoints (ckpt-STEP.safetensors)", min=0)
    patience: int | None = _f(None, "stop early after N evaluations without a better validation loss", min=1)
    val_fraction: float = _f(0.1, "last fraction of the text held out for validation", min=0.0, max=0.5)
    seed: int = seed_opt(1337, "random seed (a CPU fp32 run with a step budget and a fixed "
                         "--threads is repeatable)")
    device: str = _f("auto", "where to train: auto (a CUDA GPU when there is one), cpu, cuda, or "
                     "cuda:N (that GPU; under torchrun each process takes its LOCAL_RANK's: cuda)",
                     pattern=DEVICES, pattern_text="auto, cpu, cuda or cuda:N")
    precision: str = _f("auto", "bf16 autocast where the hardware does bf16 matmuls well, else fp32",
                        choices=("auto", "fp32", "bf16"))
    threads: int | None = _f(None, "CPU threads (default: measured as the run goes: one, or all this "
                             "process may use, whichever trains faster; see docs/reliability.md); a fixed count "
                             "makes a run repeatable bit for bit; capped at the CPUs available", min=1)
    encoding: str = encoding_opt("the corpus")
    vocab: str = _f("chars", "symbols the model reads: chars (the corpus's code points) or bytes "
                    "(UTF-8 bytes, 256 + an end symbol: any text and any prime work)",
                    choices=("chars", "bytes"))
    line_mode: bool = _f(False, "each line of the corpus is one item (a name, a title), trained as its "
                         "own sequence from a fresh state with an end-of-item symbol; sampling then "
                         "yields whole items")
    tensorboard: bool = _f(False, "also write TensorBoard event files (scalars and text samples) "
                           "to RUN_DIR/tensorboard; needs pip install charwise[tensorboard]")
    engine: str = _f("torch", "torch (fast) or numpy (the pure-NumPy reference engine: same maths, "
                     "hand-written backward pass; CPU, fp32, no dropout)", choices=("torch", "numpy"))


# Presets: model shape plus the training settings that go with it. Flags override any field.
PRESETS: dict[str, dict[str, Any]] = {
    # The spec's model: embed 32, hidden 128, one LSTM layer, windows of 40 characters.
    # Like the chapter it trains on the whole text (no validation split).
    "spec": dict(embed_dim=32, hidden_size=128, layers=1, seq_len=40, batch_size=8, lr=1e-2,
                 max_steps=400, eval_every=50, val_fraction=0.0),
    # Tuned on tiny-shakespeare for a 180 s CPU budget (benchmarks/README.md has the search):
    # small batches of short windows make many more updates per second than B=64 x T=128;
    # weight decay is the regulariser that costs no speed (dropout slowed learning more than it
    # helped); decaying to zero beats stopping at 10 %; a 100-step warmup (not 20) lets a higher
    # peak rate through and gained the most (-0.02). Each evaluation of the whole validation
    # split costs ~70 of the ~3,400 steps that fit, so within 180 s only the final one runs
    # (eval_every 5000 = every ~4-5 minutes in longer runs); checkpoints still land every 60 s.
    "small": dict(embed_dim=128, hidden_size=640, layers=1, seq_len=64, batch_size=16, lr=7e-3,
                  warmup_steps=100, min_lr_ratio=0.0, weight_decay=0.2, grad_clip=5.0, dropout=0.0,
                  eval_every=5000, max_time=180.0),
    # --cell transformer (what preset auto gives it), searched for a 180 s budget on a 2-core
    # CPU (benchmarks/README.md, section 11): as for the LSTM, a small fast model wins there --
    # 2 pre-norm blocks of width 128 (4 heads) beat 3 or 4 blocks and width 192; rotary
    # positions beat learned ones; batches of 32 windows of 64 beat 16 and 64 windows, and
    # windows of 128. Muon for the blocks' matrices (training/muon.py) then gained ~0.06 nats
    # more (muon_lr 0.005-0.02 alike; a third block no better in the budget).
    "transformer": dict(cell="transformer", embed_dim=128, layers=2, heads=4, positions="rotary",
                        seq_len=64, batch_size=32, lr=6e-3, optimizer="muon", warmup_steps=100,
                        min_lr_ratio=0.0, weight_decay=0.1, grad_clip=1.0, dropout=0.0,
                        eval_every=5000, max_time=180.0),
    # Not tuned here (they need longer runs than this CPU allows): sensible starting points.
    "medium": dict(embed_dim=64, hidden_size=512, layers=2, seq_len=64, batch_size=32, lr=4e-3,
                   grad_clip=5.0, dropout=0.1, eval_every=1000),
    "large": dict(embed_dim=128, hidden_size=1024, layers=3, seq_len=128, batch_size=64, lr=2e-3,
                  grad_clip=5.0, dropout=0.2, eval_every=1000),
    # For `--init-from SOURCE` (the model's shape comes from SOURCE, so none here): a peak
    # rate below the base's and a short warmup, so the pretrained weights are adjusted, not
    # overwritten; no weight decay (it would pull them towards zero); a one-minute budget. A
    # pretrained model overfits a small text within a few passes, so it is evaluated once a
    # pass, keeps the best and stops after 3 passes without a gain (benchmarks/README.md,
    # section 6: the search and the measured benefit).
    "finetune": dict(seq_len=64, batch_size=16, lr=4e-3, warmup_steps=10, min_lr_ratio=0.0,
                     weight_decay=0.0, grad_clip=5.0, eval_every_epochs=1.0, patience=3,
                     max_time=60.0),
}


TRANSFORMER_PRESET = "transformer"
BUDGETS = {"max_steps", "max_epochs", "max_time"}
INIT_FROM_AND_RESUME = ("--init-from and --resume do not mix: --init-from starts a new run from "
                        "another model's weights, --resume continues the run in --out where it "
                        "stopped")


def check_init_from(init_from: str | os.PathLike | None, resume: bool) -> None:
    """--init-from starts a new run and --resume continues one: not both. The one check of that
    rule; the trainer (train(), Trainer) calls it, and `merge_cli` so that the command line says
    it before it looks for the run to resume."""
    if init_from is not None and resume:
        raise CharwiseError(INIT_FROM_AND_RESUME)


AUTO_SMALL_BYTES = 100_000
NO_PRESET = "none"
SCRATCH = "scratch"          # auto's choice among from-scratch recipes only (recipe.py)


@dataclass(frozen=True)
class TrainRun:
    """train's flags that say which run rather than how to train it (config-file keys too,
    except resume, force and config)."""
    corpus: str | None = _f(None, "UTF-8 text file, or a directory made by charwise prepare",
                            shown="the bundled corpus", positional="?", path=True)
    config: str | None = _f(None, "read settings from a TOML file whose keys are these flags "
                            "(hidden-size = 256, corpus = \"in.txt\", ...); flags given here "
                            "override it. Every run saves RUN_DIR/config.toml, which trains the "
                            "same run again", metavar="FILE.toml", shown="none", path=True)
    out: str | None = _f(None, "run directory", shown="runs/latest", path=True)
    preset: str | None = _f(None, "model size and training recipe; auto = chosen from the text, "
                            "this machine's speed and the budget (fine-tunes base where it reads "
                            "the text, else from scratch as 'scratch'); scratch = auto never "
                            "starting from base; finetune with --init-from; none = only the "
                            "built-in defaults", choices=("auto", SCRATCH, *PRESETS, NO_PRESET),
                            shown="auto")
    resume: bool = _f(False, "continue the run in --out exactly where it stopped (not --init-from)")
    init_from: str | None = _f(None, "start a NEW run from SOURCE's weights: a run directory, or "
                               "base (the model bundled with charwise). The model's shape comes "
                               "from SOURCE, the vocabulary is SOURCE's merged with the corpus's; "
                               "preset auto means finetune. Not --resume, which continues the run "
                               "in --out", metavar="SOURCE", shown="none", path=True)
    force: bool = _f(False, "replace an existing run in --out")
    quiet: bool = _f(False, "print nothing but the final summary line (no progress bar, no "
                     "evaluation lines, no notes)")


def resolve(preset: str | None = "spec", **overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """Preset, then explicit overrides (None means "not given"), split into the two configs."""
    if preset is not None and preset not in PRESETS:
        raise CharwiseError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    merged = dict(PRESETS[preset]) if preset else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.keys() & BUDGETS:                  # a budget you give replaces the preset's budget
        merged = {k: v for k, v in merged.items() if k not in BUDGETS}
    if "eval_every" in given and "eval_every_epochs" not in given:
        merged.pop("eval_every_epochs", None)   # and a cadence you give, the preset's cadence
    merged.update(given)
    mnames = {f.name for f in dataclasses.fields(ModelConfig)}
    tnames = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - mnames - tnames)
    if unknown:
        raise CharwiseError(f"unknown setting(s): {', '.join(unknown)}")
    mcfg = check_model(build(ModelConfig, {k: v for k, v in merged.items() if k in mnames}))
    tcfg = build(TrainConfig, {k: v for k, v in merged.items() if k in tnames})
    return mcfg, tcfg


def check_model(cfg: ModelConfig, where: str = "") -> ModelConfig:
    """What a model's fields must agree on beyond each one's own bounds (a transformer's heads
    split its width; rotary positions turn pairs of dimensions): a one-line error, before
    anything is built. Returns `cfg`."""
    if not is_attention(cfg.cell):
        return cfg
    pre = f"{where}: " if where else ""
    if cfg.embed_dim % cfg.heads:
        raise CharwiseError(f"{pre}--embed-dim {cfg.embed_dim} is not a multiple of --heads "
                            f"{cfg.heads} (a transformer's heads split its width)")
    if cfg.positions == "rotary" and (cfg.embed_dim // cfg.heads) % 2:
        raise CharwiseError(f"{pre}--positions rotary (the transformer preset's) needs an even "
                            f"head size; --embed-dim {cfg.embed_dim} / --heads {cfg.heads} is "
                            f"{cfg.embed_dim // cfg.heads} (or give --positions learned)")
    if isinstance(cfg.context, bool) or not isinstance(cfg.context, int) or cfg.context < 0:
        raise CharwiseError(f"{pre}a transformer's context must be a whole number, got {cfg.context!r}")
    return cfg


def preset_values(name: str) -> str:
    """What each preset sets `name` to, for --help: "spec 128, small 640, ..." ("" if none)."""
    return ", ".join(f"{p} {_shown(vals[name])}" for p, vals in PRESETS.items() if name in vals)


def _shown(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
