"""GPU benchmark and correctness checks, for a machine with one NVIDIA GPU and a CUDA PyTorch.

Run as is from the repository root (no install step; `benchmarks/gpu.sh` does exactly this):

    PYTHONPATH=src python3 benchmarks/gpu.py [--quick] [--device cuda]

Prints, each section bounded in time so the whole script ends in under 8 minutes on an H100/H200:
  1. the machine: GPU, CUDA, cuDNN, the measured bf16 / fp32 matmul peaks
  2. training throughput in bf16 (chars/s, MFU) of the `small` and `large` presets
  3. time to 1.47 nats/char (nanoGPT's A100 quality) on data/tinyshakespeare.txt, exact
     validation loss on the last 10 %, evaluation time included
  4. sampling speed for 1 and 256 streams (on a GPU also the two one-stream steps timed
     against each other: the NumPy step on CPU copies of the weights, and the fused torch step)
  5. correctness checks for issue #20: does the recurrence compute in what run.json records
     (cuDNN's autocast wrapper would cast it to fp16 under bf16 autocast; charwise runs it
     outside autocast on a GPU), is --precision fp32 IEEE fp32 (cuDNN RNNs default to TF32 on
     Ampere and later; charwise sets IEEE), and is a resumed GPU run bit-identical to an
     uninterrupted one (the CUDA RNG is saved; cuDNN's own RNN-dropout state, used between the
     layers of a multi-layer model with dropout, is not: that case is the documented limit)
It uses the public API (charwise.train, charwise.load), charwise.evaluate.autocast (the
arithmetic training and scoring run under) and, for the step timing, charwise.sample's steps.
`--device cpu --quick` runs every section on the CPU in a few minutes (used to check the script
itself; its numbers mean nothing for a GPU).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import charwise
from charwise.evaluate import autocast

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"
TARGET = 1.47                       # nanoGPT's shakespeare_char on an A100 (its README)


def quiet(*_a) -> None:
    pass


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_char(cfg: dict) -> float:
    """Training FLOPs per character: 3x the forward matmul FLOPs (forward + backward)."""
    H, E, V, L = cfg["hidden_size"], cfg["embed_dim"], cfg["vocab_size"], cfg["layers"]
    gates = 4 if cfg["cell"] == "lstm" else 3 if cfg["cell"] == "gru" else 1
    fwd = 2 * (gates * H * (E + H) + gates * H * (2 * H) * (L - 1) + H * V)
    return 3 * fwd


def step_times(run: Path) -> dict[int, float]:
    rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["t"] for r in rows if "t" in r and "event" not in r}


def section_machine(a) -> dict:
    print("== 1. machine")
    if a.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}")
        # the new per-operation API only: reading the legacy allow_tf32 flags after it was used
        # makes torch raise
        print(f"torch defaults: cudnn.rnn.fp32_precision = {torch.backends.cudnn.rnn.fp32_precision}, "
              f"cuda.matmul.fp32_precision = {torch.backends.cuda.matmul.fp32_precision}")
    n = 8192 if a.device.startswith("cuda") else 1024
    peaks = {"bf16": matmul_peak(a.device, torch.bfloat16, n)}
    with autocast(torch.device(a.device), "fp32"):                  # IEEE fp32 peak
        peaks["fp32"] = matmul_peak(a.device, torch.float32, n)
    for k, v in peaks.items():
        print(f"matmul peak {k} ({n}x{n}, measured now): {v / 1e12:8.2f} TFLOP/s")
    return peaks


def section_throughput(a, peaks, tmp: Path) -> None:
    print(f"== 2. training throughput, {a.precision} (MFU against the measured peak of the run's precision)")
    print(f"{'preset':8s} {'model':>12s} {'B x T':>9s} {'chars/s':>12s} {'MFU':>11s}")
    steps, warm = (10, 3) if a.quick else (60, 10)
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
        mfu = rate * flops_per_char(m) / peaks.get(info["precision"], peaks["bf16"])
        print(f"{preset:8s} {m['layers']}x{m['hidden_size']:>10d} {t['batch_size']:>4d}x{t['seq_len']:<4d} "
              f"{rate:12,.0f} {mfu:10.1%}   (run.json precision: {info['precision']})")


def section_time_to_target(a, tmp: Path) -> None:
    print(f"== 3. time to {TARGET} nats/char on tiny-shakespeare (last 10 % held out, exact loss)")
    budget = 20 if a.quick else 150
    out = tmp / "ttt"
    # The small preset's model with a GPU-sized batch: 128 streams of 128 characters.
    res = charwise.train(CORPUS, out=out, preset="small", device=a.device, precision=a.precision,
                         batch_size=128, seq_len=128, max_time=budget, eval_every=50 if not a.quick else 5,
                         progress=False, log=quiet, force=True)
    hit = next((h for h in res.history if h["val_loss"] <= TARGET), None)
    for h in res.history:
        print(f"  step {h['step']:6d}  t {h['time']:7.1f} s  val {h['val_loss']:.4f}")
    if hit:
        print(f"reached {TARGET}: {hit['val_loss']:.4f} at step {hit['step']}, {hit['time']:.1f} s "
              f"wall (training + evaluations so far)")
    else:
        print(f"not reached in {budget} s: best {res.best_val_loss:.4f}")
    return out


def section_sampling(a, run: Path) -> None:
    print("== 4. sampling (the time-to-target run's weights)")
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
    if a.device.startswith("cuda"):
        compare_one_stream_steps(model, 300 if a.quick else 3000)


def compare_one_stream_steps(model, n: int) -> None:
    """#20 item 14: one stream of a small model samples through the NumPy step on CPU copies
    of the weights (sample.CPU_STEP_MAX_WORK, an estimate); time both steps to check it."""
    from charwise.sample import FusedLSTMStep, NumpyLSTMStep, step_kind
    _, state = model.prime("ROMEO:", 1)
    ids = np.zeros(1, dtype=np.int64)
    for cls in (NumpyLSTMStep, FusedLSTMStep):
        step = cls(model.net)
        st = step.begin(state)
        for _ in range(20):                                         # warm-up
            _, st = step(ids, st)
        t = time.perf_counter()
        for _ in range(n):
            _, st = step(ids, st)
        print(f"   1 stream, {cls.__name__:14s}: {n / (time.perf_counter() - t):12,.0f} chars/s")
    print(f"   chosen for 1 stream of this model: "
          f"{step_kind(model.net.cfg, False, model.device.type, 1)}")


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


def check_fp32_is_ieee(a, run: Path) -> None:
    """#20 item 5: an fp32 forward on the device vs float64 on the CPU (TF32 errs ~1e-3),
    with torch's defaults and under charwise's fp32 (what --precision fp32 trains and scores in)."""
    model = charwise.load(run, device=a.device)
    x = torch.randint(0, len(model.vocab), (4, 256), device=a.device)
    with torch.no_grad():
        want = charwise.load(run, device="cpu").net.double()(x.cpu())[0]
        for label, ctx in (("torch defaults", contextlib.nullcontext()),
                           ("charwise fp32", autocast(torch.device(a.device), "fp32"))):
            with ctx:
                got = model.net(x)[0].float().cpu()
            err = (got.double() - want).abs().max().item()
            verdict = "IEEE fp32" if err < 1e-4 else "NOT IEEE fp32 (TF32?)"
            print(f"fp32 forward vs float64, {label:15s}: max |logit diff| {err:.2e}: {verdict}")


def check_resume(a, tmp: Path) -> None:
    """#20 item 10: straight run vs half + resume, compared tensor by tensor. Expected
    bit-identical, except with dropout between the layers of a multi-layer model on a GPU:
    cuDNN draws that dropout from its own state, which no API saves (README)."""
    for layers, dropout in ((2, 0.0), (1, 0.1), (2, 0.1)):
        kw = dict(preset="small", device=a.device, precision="fp32", hidden_size=128, layers=layers,
                  dropout=dropout, max_time=None, eval_every=0, val_fraction=0.05,
                  checkpoint_every=0, progress=False, log=quiet, force=True,
                  # on the CPU the measured thread count can change the last bits of a step's
                  # sums (README: bit-identical resumes need a fixed --threads)
                  threads=1 if a.device == "cpu" else None)
        n = 20 if a.quick else 60
        charwise.train(CORPUS, out=tmp / "straight", max_steps=n, **kw)
        charwise.train(CORPUS, out=tmp / "halves", max_steps=n // 2, **kw)
        kw.pop("force")
        for k in ("preset", "hidden_size", "layers", "dropout", "val_fraction", "precision"):
            kw.pop(k)
        charwise.train(None, out=tmp / "halves", resume=True, max_steps=n, **kw)
        s, h = load_file(tmp / "straight" / "last.safetensors"), load_file(tmp / "halves" / "last.safetensors")
        diff = max((s[k].double() - h[k].double()).abs().max().item()
                   for k in s if k.startswith("model/"))
        limit = a.device.startswith("cuda") and layers > 1 and dropout > 0
        verdict = ("bit-identical" if diff == 0 else
                   "NOT bit-identical: the documented cuDNN-dropout limit" if limit else
                   "NOT bit-identical: UNEXPECTED")
        print(f"resume, {layers} layer(s), dropout {dropout}: max |weight diff| after {n} steps "
              f"= {diff:.3g} ({verdict})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks the script, not the GPU)")
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU visible to torch; nothing measured")
        return 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        peaks = section_machine(a)
        section_throughput(a, peaks, tmp)
        run = section_time_to_target(a, tmp)
        section_sampling(a, run)
        print("== 5. correctness checks (issue #20)")
        check_recurrence_dtype(a, run)
        check_fp32_is_ieee(a, run)
        check_resume(a, tmp)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
