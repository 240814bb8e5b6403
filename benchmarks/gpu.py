"""GPU benchmark and correctness checks, for a machine with one NVIDIA GPU and a CUDA PyTorch.

Run from the repository root (`benchmarks/gpu.sh` does exactly this, after a preflight; how
to prepare a machine: benchmarks/README.md, section "GPU"):

    PYTHONPATH=src python3 -u benchmarks/gpu.py [--quick] [--device cuda]

Prints, each section bounded in time so the whole script ends in under 8 minutes on an H100/H200
(each section prints its own duration; a section that would start after DEADLINE is skipped):
  1. the machine: GPU, CUDA, cuDNN, the measured bf16 / TF32 / IEEE fp32 matmul peaks
  2. training throughput in bf16 (chars/s, MFU) of the `small` and `large` presets, timed over
     whole read intervals (the loop reads a GPU's steps READ_EVERY at a time)
  3. time to 1.47 nats/char (nanoGPT's A100 quality) on data/tinyshakespeare.txt, exact
     validation loss on the last 10 %, evaluation time reported apart from training time
  4. sampling speed for 1 and 256 streams, and both sides of sample.CPU_STEP_MAX_WORK: the
     NumPy step on CPU copies of the weights against the fused torch step on the GPU, over
     model sizes and stream counts, and where the faster one changes
  5. correctness checks (issues #20, #29): does the recurrence compute in what run.json
     records, is --precision fp32 IEEE fp32, and is a run interrupted past its warm-up and
     resumed bit-identical to an uninterrupted one (cuDNN's own RNN-dropout state, used
     between the layers of a multi-layer model with dropout, is not saved: the documented limit)
It uses the public API (charwise.train, charwise.load), charwise.scoring.autocast (the
arithmetic training and scoring run under), the Trainer (to time evaluations and interrupt a
run) and charwise.sample's steps. `--device cpu --quick` runs every section on the CPU in a few
minutes (it checks the script itself; its numbers mean nothing for a GPU).
"""
from __future__ import annotations

import os

# cuBLAS results repeat run to run only with a fixed workspace configuration (CUDA's cuBLAS
# reproducibility notes; PyTorch's "Reproducibility" page): the resume check compares two runs
# bit for bit. Set before torch starts CUDA; gpu.sh exports it too.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import charwise  # noqa: E402
from charwise.generation.steps import CPU_STEP_MAX_WORK, FusedLSTMStep, NumpyLSTMStep, step_kind, step_weights  # noqa: E402
from charwise.model import CharRNN  # noqa: E402
from charwise.scoring import autocast  # noqa: E402
from charwise.settings.train import ModelConfig  # noqa: E402
from charwise.threads import set_blas_threads, usable_cpus  # noqa: E402
from charwise.training import hooks  # noqa: E402
from charwise.training.trainer import READ_EVERY, Trainer, TrainingInterrupted  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"
TARGET = 1.47                       # nanoGPT's shakespeare_char on an A100 (its README)
DEADLINE = 420.0                    # s: no section starts after this (gpu.sh stops the script at 480)


def quiet(*_a) -> None:
    pass


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int = 10, rounds: int = 3) -> float:
    """FLOP/s of an n x n matmul: the best of `rounds` timings (a busy machine's slow rounds
    would make a low peak, and an MFU above 100 %)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


@contextlib.contextmanager
def tf32_matmuls():
    """fp32 matmuls in TF32, through the legacy setter: it sets the per-operation cuBLAS flag
    too, so the two agree (cuBLAS raises on a mix); both put back after."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision("highest")
        matmul.fp32_precision = before


def section_machine(a) -> dict:
    if a.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(a.device)
        print(f"GPU {p.name} (compute capability {p.major}.{p.minor}), {p.total_memory / 2**30:.0f} GiB, "
              f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}")
        # the per-operation flags only: reading the legacy allow_tf32 getters after them can raise
        print(f"torch defaults: cudnn.rnn.fp32_precision = {torch.backends.cudnn.rnn.fp32_precision}, "
              f"cuda.matmul.fp32_precision = {torch.backends.cuda.matmul.fp32_precision}")
    n = 8192 if a.device.startswith("cuda") else 512
    dev = torch.device(a.device)
    peaks = {"bf16": matmul_peak(a.device, torch.bfloat16, n)}
    with autocast(dev, "fp32"):                                     # IEEE fp32
        peaks["fp32"] = matmul_peak(a.device, torch.float32, n)
    if a.device.startswith("cuda"):
        with tf32_matmuls():
            peaks["tf32"] = matmul_peak(a.device, torch.float32, n)
    else:
        peaks["tf32"] = peaks["fp32"]                               # no TF32 on a CPU
    for k, v in peaks.items():
        print(f"matmul peak {k} ({n}x{n}, measured now): {v / 1e12:8.2f} TFLOP/s")
    return peaks


def flops_per_char(cfg: dict) -> tuple[float, float]:
    """Training FLOPs per character, (recurrence, head): 3x the forward matmul FLOPs."""
    H, E, V, L = cfg["hidden_size"], cfg["embed_dim"], cfg["vocab_size"], cfg["layers"]
    gates = 4 if cfg["cell"] == "lstm" else 3 if cfg["cell"] == "gru" else 1
    return 3 * 2 * (gates * H * (E + H) + gates * H * (2 * H) * (L - 1)), 3 * 2 * H * V


def mfu(rate: float, cfg: dict, info: dict, peaks: dict) -> float:
    """Model FLOPs utilisation against the peak of the arithmetic each part really runs in:
    on a GPU the recurrence runs outside autocast (run.json's recurrence_precision: TF32 by
    torch's default, IEEE fp32 under --precision fp32), the head in the run's precision. The
    ideal time per character is each part's FLOPs at its own peak."""
    rec, head = flops_per_char(cfg)
    rec_prec = info.get("recurrence_precision", info["precision"])
    return rate * (rec / peaks[rec_prec] + head / peaks[info["precision"]])


def step_times(run: Path) -> dict[int, float]:
    rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["t"] for r in rows if "t" in r and "event" not in r}


def section_throughput(a, peaks, tmp: Path) -> None:
    print(f"{'preset':8s} {'model':>12s} {'B x T':>9s} {'chars/s':>12s} {'MFU':>7s}  precisions (head / recurrence)")
    # whole read intervals: on a GPU the loop reads its steps READ_EVERY at a time and each
    # step's time within an interval is interpolated; from a read's end to a read's end
    # (the last step is always read) the span is measured, not interpolated
    warm, steps = (3, 10) if a.quick else (READ_EVERY, 4 * READ_EVERY)
    for preset in ("small", "large"):
        out = tmp / f"thr-{preset}"
        overrides = {"hidden_size": 128, "batch_size": 4} if a.quick and preset == "large" else {}
        charwise.train(CORPUS, out=out, preset=preset, device=a.device, precision=a.precision,
                       max_steps=warm + steps, max_time=None, eval_every=0, val_fraction=0.05,
                       progress=False, log=quiet, force=True, **overrides)
        info = json.loads((out / "run.json").read_text())
        m, t = info["model"], info["train"]
        ts = step_times(out)
        rate = steps * t["batch_size"] * t["seq_len"] / (ts[warm + steps] - ts[warm])
        print(f"{preset:8s} {m['layers']}x{m['hidden_size']:>10d} {t['batch_size']:>4d}x{t['seq_len']:<4d} "
              f"{rate:12,.0f} {mfu(rate, m, info, peaks):7.1%}  "
              f"{info['precision']} / {info.get('recurrence_precision')}")


class TimedTrainer(Trainer):
    """A Trainer that notes how long each evaluation's scoring pass took."""

    def score(self) -> dict:
        t = time.perf_counter()
        res = super().score()
        self.eval_log.append(time.perf_counter() - t)
        return res


def section_time_to_target(a, tmp: Path) -> Path:
    budget = 20 if a.quick else 150
    out = tmp / "ttt"
    # The small preset's model with a GPU-sized batch: 128 streams of 128 characters. Each
    # evaluation scores the whole validation split (111k characters, one stream): every 500
    # steps, not 50, so that the run mostly trains; the time to the target is then known to
    # 500 steps, and its training time is the wall time less the evaluations before it.
    # (--quick: a small batch and a 1 % validation split, so that a CPU fits steps and
    # evaluations in its 20 s)
    sizes = dict(batch_size=16, seq_len=64, eval_every=5, val_fraction=0.01) if a.quick else \
        dict(batch_size=128, seq_len=128, eval_every=500)
    tr = TimedTrainer(CORPUS, out=out, preset="small", device=a.device, precision=a.precision,
                      max_time=budget, progress=False, log=quiet, force=True, **sizes)
    tr.eval_log = []
    res = tr.fit()
    spent = 0.0
    hit = None
    for h, seconds in zip(res.history, tr.eval_log):
        print(f"  step {h['step']:6d}  t {h['time']:7.1f} s  val {h['val_loss']:.4f}  "
              f"(evaluation {seconds:.1f} s)")
        if hit is None and h["val_loss"] <= TARGET:
            hit = (h, h["time"] - spent)
        spent += seconds
    n = len(tr.eval_log)
    print(f"evaluations: {n}, {sum(tr.eval_log):.1f} s in all ({sum(tr.eval_log) / max(n, 1):.2f} s each, "
          f"{tr.run.evaluation.chars:,} characters)")
    if hit:
        h, training = hit
        print(f"reached {TARGET}: {h['val_loss']:.4f} at step {h['step']}, {h['time']:.1f} s wall, "
              f"{training:.1f} s of it training (and checkpoint saves), the rest earlier evaluations")
    else:
        print(f"not reached in {budget} s: best {res.best_val_loss:.4f}")
    return out


def section_sampling(a, run: Path) -> None:
    model = charwise.load(run, device=a.device)
    for streams in (1, 256):
        n = (300 if a.quick else 3000) if streams == 1 else (50 if a.quick else 500)
        model.generate("ROMEO:", 20, temperature=1.0, seed=0, num_samples=streams)      # warm-up
        sync(a.device)
        t = time.perf_counter()
        for _ in model.stream("ROMEO:", n, temperature=1.0, seed=0, num_samples=streams):
            pass
        sync(a.device)
        print(f"{streams:4d} streams: {n * streams / (time.perf_counter() - t):12,.0f} chars/s")
    step_crossover(a)


def time_step(step, state, streams: int, seconds: float) -> float:
    """Characters a second (streams x steps) of a sampling step, over ~`seconds` after a
    warm-up. The fused step's logits come back to the host each step, so it is synchronous."""
    ids = np.zeros(streams, dtype=np.int64)
    st = step.begin(state)
    for _ in range(10):
        _, st = step(ids, st)
    n, t = 0, time.perf_counter()
    while n < 20 or time.perf_counter() - t < seconds:
        _, st = step(ids, st)
        n += 1
    return n * streams / (time.perf_counter() - t)


def step_crossover(a) -> None:
    """#29 item 12: sample.CPU_STEP_MAX_WORK says up to how much work (weights read per step x
    streams) the NumPy step on CPU copies of the weights beats the fused torch step on the GPU;
    it is an estimate. Both are timed here over model sizes and stream counts (random weights:
    the speed does not depend on them), NumPy at 1 thread and at every CPU (the sampler's
    thread policy picks the faster), and the work where the faster one changes is printed."""
    sizes = [(1, 128), (1, 640)] if a.quick else [(1, 128), (1, 256), (1, 640), (3, 1024)]
    streams_list = (1, 16) if a.quick else (1, 4, 16, 64)
    seconds = 0.05 if a.quick else 0.15
    print(f"  {'L x H':>8s} {'streams':>7s} {'work':>12s} {'NumPy/CPU':>12s} {'torch/GPU':>12s}  faster  rule")
    rows = []
    for layers, hidden in sizes:
        net = CharRNN(ModelConfig(vocab_size=65, hidden_size=hidden, layers=layers)).to(a.device).eval()
        for streams in streams_list:
            state = net.zero_state(streams, torch.device(a.device))
            numpy_rate = 0.0
            for threads in sorted({1, usable_cpus()}):
                set_blas_threads(threads)
                numpy_rate = max(numpy_rate, time_step(NumpyLSTMStep(net), state, streams, seconds))
            fused_rate = time_step(FusedLSTMStep(net), state, streams, seconds)
            work = streams * step_weights(net.cfg)
            faster = "numpy" if numpy_rate > fused_rate else "fused"
            rule = step_kind(net.cfg, False, "cuda", streams)
            rows.append((work, faster, rule))
            print(f"  {layers:>3d} x {hidden:<4d} {streams:7d} {work:12,d} {numpy_rate:12,.0f} {fused_rate:12,.0f}  "
                  f"{faster:6s}  {rule}{'' if rule == faster else '  (rule differs)'}")
    set_blas_threads(usable_cpus())
    numpy_up_to = max((w for w, f, _ in rows if f == "numpy"), default=0)
    fused_from = min((w for w, f, _ in rows if f == "fused"), default=0)
    agree = sum(f == r for _, f, r in rows)
    if not fused_from or numpy_up_to < fused_from:
        where = (f"the crossover lies between work {numpy_up_to:,} and {fused_from:,}" if fused_from else
                 f"NumPy was faster everywhere measured (up to work {numpy_up_to:,})")
    else:
        where = (f"no single crossover: NumPy faster up to work {numpy_up_to:,}, the GPU from "
                 f"{fused_from:,}")
    print(f"  {where}; CPU_STEP_MAX_WORK = {CPU_STEP_MAX_WORK:,} picks the faster step in {agree} of "
          f"{len(rows)} cases")


def check_recurrence_dtype(a, run: Path) -> None:
    """#20 item 1: the dtype the LSTM computes in under the training autocast, against what
    the run's run.json says it used."""
    info = json.loads((run / "run.json").read_text())
    recorded = info.get("recurrence_precision", "(not recorded)")
    model = charwise.load(run, device=a.device)
    seen = []
    h = model.net.rnn.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o[0].dtype)))
    x = torch.zeros(2, 16, dtype=torch.long, device=a.device)
    with autocast(torch.device(a.device), info["precision"]):
        model.net(x)
    h.remove()
    dtype_in, dtype_out = seen[0]
    want = {"bf16": torch.bfloat16, "fp32": torch.float32, "tf32": torch.float32}.get(recorded)
    verdict = "OK" if dtype_out == want else f"WRONG (run.json says {recorded})"
    print(f"{info['precision']} run: recurrence input {dtype_in}, output {dtype_out}; run.json: "
          f"precision {info['precision']}, recurrence_precision {recorded}: {verdict}")


# Largest |logit| difference from float64 that still counts as IEEE fp32. IEEE fp32 rounds to
# 2^-24 (6e-8 relative); TF32 rounds each matmul input to a 10-bit mantissa (2^-11, 5e-4
# relative), ~8,000x coarser. Through a 640-unit layer over 256 steps, logits of a few units
# are expected to differ from float64 by ~1e-6..1e-5 in IEEE fp32 -- the CPU's own fp32 error,
# printed beside it, is the measured yardstick -- and by ~1e-3..1e-2 in TF32 (an estimate from
# those roundings, not measured): 1e-4 sits about an order of magnitude from each.
IEEE_LIMIT = 1e-4


def check_fp32_is_ieee(a, run: Path) -> None:
    """#20 item 5: an fp32 forward on the device vs float64 on the CPU, with torch's defaults
    and under charwise's fp32 (what --precision fp32 trains and scores in)."""
    model = charwise.load(run, device=a.device)
    x = torch.randint(0, len(model.vocab), (4, 256), device=a.device)
    with torch.no_grad():
        want = charwise.load(run, device="cpu").net.double()(x.cpu())[0]
        yardstick = (charwise.load(run, device="cpu").net(x.cpu())[0].double() - want).abs().max().item()
        print(f"fp32 forward vs float64, {'CPU (IEEE)':15s}: max |logit diff| {yardstick:.2e} (the yardstick)")
        for label, ctx in (("torch defaults", contextlib.nullcontext()),
                           ("charwise fp32", autocast(torch.device(a.device), "fp32"))):
            with ctx:
                got = model.net(x)[0].float().cpu()
            err = (got.double() - want).abs().max().item()
            verdict = "IEEE fp32" if err < IEEE_LIMIT else "NOT IEEE fp32 (TF32?)"
            print(f"fp32 forward vs float64, {label:15s}: max |logit diff| {err:.2e}: {verdict}")


class StopAt(hooks.Hook):
    """SIGINT, as a kill would deliver it, once step `at` is reported: the loop saves a
    resumable checkpoint at the next step and stops (TrainingInterrupted)."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, trainer, lr: float, grad_norm: float) -> None:
        if trainer.state.step == self.at:
            trainer.signals.caught.append(signal.SIGINT)


def check_resume(a, tmp: Path) -> None:
    """#20 item 10: straight run vs a run interrupted halfway and resumed, compared tensor by
    tensor. Both have the same --max-steps, so the same schedule, and the interruption falls
    past the warm-up (a run stopped inside it tested only the warm-up's learning rates).
    Expected bit-identical, except with dropout between the layers of a multi-layer model on a
    GPU: cuDNN draws that dropout from its own state, which no API saves (docs/how-it-works.md)."""
    n, warm = (20, 5) if a.quick else (60, 10)
    for layers, dropout in ((2, 0.0), (1, 0.1), (2, 0.1)):
        kw = dict(device=a.device, max_time=None, eval_every=0, checkpoint_every=0, progress=False,
                  log=quiet, max_steps=n,
                  # on the CPU the measured thread count can change the last bits of a step's
                  # sums (docs/reliability.md: bit-identical resumes need a fixed --threads)
                  threads=1 if a.device == "cpu" else None)
        shape = dict(preset="small", precision="fp32", hidden_size=128, layers=layers, dropout=dropout,
                     warmup_steps=warm, val_fraction=0.05)
        charwise.train(CORPUS, out=tmp / "straight", force=True, **shape, **kw)
        part = Trainer(CORPUS, out=tmp / "halves", force=True, **shape, **kw)
        part.hooks.append(StopAt(n // 2))
        with contextlib.suppress(TrainingInterrupted):
            part.fit()
        stopped = json.loads((tmp / "halves" / "run.json").read_text())["step"]
        charwise.train(None, out=tmp / "halves", resume=True, **kw)
        s, h = load_file(tmp / "straight" / "last.safetensors"), load_file(tmp / "halves" / "last.safetensors")
        diff = max((s[k].double() - h[k].double()).abs().max().item()
                   for k in s if k.startswith("model/"))
        limit = a.device.startswith("cuda") and layers > 1 and dropout > 0
        verdict = ("bit-identical" if diff == 0 else
                   "NOT bit-identical: the documented cuDNN-dropout limit" if limit else
                   "NOT bit-identical: UNEXPECTED")
        print(f"resume, {layers} layer(s), dropout {dropout}: interrupted at step {stopped} (warm-up "
              f"{warm}), max |weight diff| after {n} steps = {diff:.3g} ({verdict})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default=None,
                    help="bf16 on a GPU, auto (bf16 where the CPU has it) on the CPU")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks the script, not the GPU)")
    a = ap.parse_args()
    a.precision = a.precision or ("bf16" if a.device.startswith("cuda") else "auto")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU visible to torch; nothing measured")
        return 2
    t0 = time.perf_counter()

    def section(title: str, fn, *args):
        if time.perf_counter() - t0 > DEADLINE:
            print(f"== {title}: skipped ({DEADLINE:.0f} s have passed)")
            return None
        print(f"== {title}")
        ts = time.perf_counter()
        result = fn(*args)
        print(f"   ({time.perf_counter() - ts:.0f} s)")
        return result

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        peaks = section("1. machine", section_machine, a)
        section(f"2. training throughput, {a.precision} (MFU: each part against the measured peak "
                "of the arithmetic it runs in)", section_throughput, a, peaks, tmp)
        run = section(f"3. time to {TARGET} nats/char on tiny-shakespeare (last 10 % held out, exact "
                      "loss)", section_time_to_target, a, tmp)
        if run is not None:
            section("4. sampling (the time-to-target run's weights; then both sides of "
                    "CPU_STEP_MAX_WORK)", section_sampling, a, run)
            section("5a. correctness: the recurrence's arithmetic", check_recurrence_dtype, a, run)
            section("5b. correctness: --precision fp32 is IEEE", check_fp32_is_ieee, a, run)
        section("5c. correctness: interrupted and resumed = straight", check_resume, a, tmp)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
