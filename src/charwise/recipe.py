"""What `--preset auto` (the default) trains: decided from the text, this machine's measured
speed and the budget, and recorded in run.json ("auto") with why.

The text first (`plan`, before anything is read into memory but a sample of the text):
- no corpus: the chapter's own (the bundled opening of *Pride and Prejudice*), trained as the
  chapter does (`spec`, the whole text, no validation split);
- most of the text's characters in the bundled `base` model's vocabulary: fine-tune `base`.
  A pretrained model's head start wins at every size and budget measured (benchmarks/README.md,
  sections 6 and 9), from 20 kB to the whole 1.1 MB of tiny-shakespeare, on prose the base never
  saw (a novel; 5 MB, at 180 and 600 s), and on Python code (96-98 % of its characters in
  base's vocabulary: base's books have curly quotes, code straight ones and `=`, `{`, ...),
  100 kB and 5 MB;
- otherwise from scratch: under AUTO_SMALL_BYTES the chapter's small model with a validation
  split (a loss on text the model trained on says nothing about a new text); from
  AUTO_SMALL_BYTES the `small` recipe's shape at the width that suits this machine and budget.

The width (`size_to_machine`, once the vocabulary is known): a wider LSTM learns more per step
but takes fewer steps in the budget, and on a 2-core CPU the steps are what run out. The search
(benchmarks/README.md, section 9) found the best width at each budget and machine speed getting about
TARGET_STEPS optimizer steps in the budget, with a learning rate that grows as the width
shrinks (`lr_for`). So the candidate widths, narrowest first, each train a few steps on random
windows (real size, precision and threads) until one is too slow to take TARGET_STEPS (or,
where the next width trains in another precision, as bf16 from 1x256 on a bf16 CPU, until that
one is measured too); the widest that was fast enough is chosen.
"""
from __future__ import annotations

import os
import stat
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch

from .cells import is_attention
from .errors import CharwiseError
from .hardware import cpu_class
from .settings.train import AUTO_SMALL_BYTES, PRESETS, SHAPE_FIELDS, TRANSFORMER_PRESET, ModelConfig, TrainConfig
from .threads import usable_cpus

BASE_COVERAGE = 0.95          # share of the text's characters base must know to fine-tune it
COVERAGE_SAMPLE = 4 << 20     # characters of the text read to measure that share
WIDTHS = (640, 512, 448, 384, 320, 256, 192, 128)    # the candidates, widest first
TARGET_STEPS = 3000           # the fitted rule: the widest width that takes this many steps wins
TRAIN_SHARE = 0.9             # of a time budget spent on steps (the rest: final evaluation, saves)
PROBE_STEPS = 3               # timed steps per candidate, after one untimed warm-up step
PROBE_SHARE = 0.05            # the probes stop once they have used this share of the budget
VAL_FRACTION = TrainConfig.val_fraction     # the held-out share a small text keeps
SCRATCH_HINT = "to train from scratch instead: --preset scratch"


def lr_for(hidden: int) -> float:
    """The peak learning rate for an LSTM of `hidden` units in the small recipe: 7e-3 at 640,
    9e-3 at 448, 1.4e-2 at 256 were the searches' best; (640/H)^0.75 passes through all three."""
    return round(PRESETS["small"]["lr"] * (PRESETS["small"]["hidden_size"] / hidden) ** 0.75, 4)


@dataclass
class AutoChoice:
    """What auto chose and why (run.json's "auto")."""
    kind: str                             # chapter | finetune | small-text | sized
    why: str
    coverage: float | None = None         # share of the text's characters in base's vocabulary
    hidden_size: int | None = None
    lr: float | None = None
    chars_per_s: dict[int, float] = field(default_factory=dict)   # width -> measured speed
    expected_steps: int | None = None
    probe_seconds: float = 0.0
    cpu: str = field(default_factory=cpu_class)

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d["chars_per_s"] = {str(k): round(v) for k, v in self.chars_per_s.items()}
        return d


def plan(corpus, overrides: dict, encoding: str = "utf-8", from_base: bool = True) -> AutoChoice:
    """The text's part of the decision (see the module's docstring); `from_base` False (preset
    scratch) never fine-tunes base."""
    if corpus is None:
        return AutoChoice("chapter", "the bundled chapter corpus, trained as the chapter does")
    if os.path.isdir(corpus):
        return AutoChoice("sized", "a prepared corpus: from scratch, sized to this machine")
    try:
        st = os.stat(corpus)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        # the corpus check reports the real problem (reading a FIFO here would wait forever)
        return AutoChoice("small-text", "")
    size = st.st_size
    scratch = _scratch_only(overrides) or ("" if from_base else "preset scratch")
    coverage = None if scratch else base_coverage(corpus, encoding)
    if coverage is not None and coverage >= BASE_COVERAGE:
        return AutoChoice("finetune", f"{coverage:.1%} of the text's characters are in base's "
                          f"vocabulary: fine-tuning base ({SCRATCH_HINT})", coverage)
    why = scratch or (f"only {coverage:.1%} of the text's characters are in base's vocabulary"
                      if coverage is not None else "the text could not be read as text")
    if size < AUTO_SMALL_BYTES:
        return AutoChoice("small-text", f"{why}: the chapter's model from scratch, with a "
                          "validation split", coverage)
    return AutoChoice("sized", f"{why}: from scratch, sized to this machine", coverage)


def settings(choice: AutoChoice, overrides: dict) -> tuple[str, dict]:
    """The preset and overrides a from-scratch choice trains with (fine-tuning: transfer.py).
    --cell transformer: the transformer recipe whatever the text (the chapter's text without a
    validation split, as the chapter's model)."""
    if overrides.get("cell") is not None and is_attention(overrides["cell"]):
        choice.why = f"--cell {overrides['cell']}: the {TRANSFORMER_PRESET} recipe"
        if choice.kind == "chapter" and overrides.get("val_fraction") is None:
            return TRANSFORMER_PRESET, {**overrides, "val_fraction": 0.0}
        return TRANSFORMER_PRESET, overrides
    if choice.kind == "chapter":
        return "spec", overrides
    if choice.kind == "small-text":             # the chapter's model, but scored on held-out text
        held_out = overrides.get("val_fraction")
        return "spec", {**overrides, "val_fraction": VAL_FRACTION if held_out is None else held_out}
    return "small", overrides                   # sized: the width is measured later


def _scratch_only(overrides: dict) -> str:
    """Why base cannot be the start ("" when it can): flags that fix another shape or a
    vocabulary that base's is not."""
    given = [k for k in SHAPE_FIELDS if overrides.get(k) is not None]
    if given:
        return "--" + given[0].replace("_", "-") + " given"
    if overrides.get("line_mode"):
        return "line mode"
    if overrides.get("vocab") not in (None, "chars"):
        return "--vocab bytes"
    return ""


def base_coverage(path, encoding: str = "utf-8") -> float | None:
    """The share of the text's characters (its first COVERAGE_SAMPLE) that base's vocabulary
    has; None where the text cannot be read (the corpus check then says why)."""
    from .data.corpus import iter_text_chunks
    from .runs import bundled
    from .runs.rundir import read_run
    try:
        known = set(read_run(bundled.models_root() / "base")["vocab"])
        seen = covered = 0
        for chunk in iter_text_chunks(path, encoding):
            chunk = chunk.replace("\r", "")     # Windows line ends: one more symbol, not a script
            seen += len(chunk)
            covered += sum(1 for c in chunk if c in known)
            if seen >= COVERAGE_SAMPLE:
                break
    except (CharwiseError, OSError, KeyError, TypeError):
        return None
    return covered / seen if seen else None


def size_to_machine(choice: AutoChoice, budget: float, cfg: ModelConfig, batch: int, seq: int,
                    precision_for: Callable[[ModelConfig], str], device: torch.device,
                    threads: int | None = None) -> AutoChoice:
    """The widest candidate that takes TARGET_STEPS in `budget`, measured narrowest first (a
    narrow probe costs little, so no probe is ever far slower than the width chosen) until one
    falls short (the next width is still measured where it trains in another precision); at
    `threads`, or the threads torch has now (2 on a quiet 2-core machine)."""
    t0, before = time.perf_counter(), torch.get_num_threads()
    # as the training step's thread policy will (threads.py): the faster of 1 and all threads,
    # since on a busy machine all threads can be many times slower than one
    counts = [threads] if threads else sorted({1, usable_cpus()})
    chosen = WIDTHS[-1]
    widths = sorted(WIDTHS)
    try:
        for i, width in enumerate(widths):
            c = ModelConfig(**{**asdict(cfg), "hidden_size": width})
            precision = precision_for(c)
            speed = choice.chars_per_s[width] = max(
                _at_threads(n, train_speed, c, batch, seq, precision, device) for n in counts)
            if _steps(speed, budget, batch, seq) < TARGET_STEPS:
                # Wider is slower, so the search ends here, unless the next width trains in
                # another precision: on a bf16 CPU an fp32 1x192 can be slower than a bf16 1x256.
                after = widths[i + 1:i + 2]
                if not after or precision_for(replace(c, hidden_size=after[0])) == precision:
                    break
                continue
            chosen = width
            if time.perf_counter() - t0 > PROBE_SHARE * budget:
                break
    finally:
        torch.set_num_threads(before)
    choice.hidden_size, choice.lr = chosen, lr_for(chosen)
    choice.expected_steps = _steps(choice.chars_per_s[chosen], budget, batch, seq)
    choice.probe_seconds = round(time.perf_counter() - t0, 3)
    return choice


def _at_threads(n: int, f: Callable[..., float], *args: Any) -> float:
    torch.set_num_threads(n)
    return f(*args)


def _steps(chars_per_s: float, budget: float, batch: int, seq: int) -> int:
    return int(chars_per_s * budget * TRAIN_SHARE / (batch * seq))


def train_speed(cfg: ModelConfig, batch: int, seq: int, precision: str, device: torch.device) -> float:
    """Characters per second of this shape's training step here (forward, backward, AdamW), on
    random windows: PROBE_STEPS timed after one untimed warm-up."""
    from .model import CharRNN
    from .scoring import autocast
    rng_state = torch.random.get_rng_state()          # the run's seeded draws stay as they were
    try:
        net = CharRNN(cfg).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))
        x = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
        times = []
        for _ in range(PROBE_STEPS + 1):
            t = time.perf_counter()
            with autocast(device, precision):
                logits, _ = net(x[:, :-1], net.zero_state(batch, device))
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
    finally:
        torch.random.set_rng_state(rng_state)
    return batch * seq / statistics.median(times[1:])


def header(choice: AutoChoice, budget: float | None) -> str:
    """The line that says what auto chose, at what measured speed, and what to expect."""
    if choice.kind != "sized" or choice.hidden_size is None:
        return f"auto: {choice.why}"
    speed = choice.chars_per_s[choice.hidden_size]
    return (f"auto: LSTM 1x{choice.hidden_size} (lr {choice.lr:g}) chosen for {budget:g} s at "
            f"{speed / 1000:.1f}k chars/s on this CPU ({choice.cpu}): ~{choice.expected_steps:,} "
            f"steps; measured {len(choice.chars_per_s)} width(s) in {choice.probe_seconds:.1f} s "
            "(--hidden-size overrides)")
