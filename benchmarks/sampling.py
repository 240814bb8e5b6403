"""Benchmark 3: sampling speed. 1 layer, 512 units, vocabulary 65 (tiny-shakespeare's size).

Everything is measured side by side in one process run:

1. a naive loop that calls nn.LSTM one character at a time (softmax and torch.multinomial per
   step: what most char-rnn code does) against charwise's exact fp32 sampler (fused step, no
   autograd), for one stream and for 64 streams;
2. one stream, fp32 against int8 (`precision="int8"`), and where a step's time goes: the
   recurrent product alone, the whole step, and the sampling loop around it (draw, decoding,
   bookkeeping) timed with a step that does no work;
3. the int8 step's quality on the bundled trained model (`base`, LSTM 1x640): identical greedy
   characters after a few primes, and the loss of temperature-1 samples scored by the fp32
   model (literal, with its standard error, and in expectation; samplecheck.py);
4. 64 streams in fp32 and int8: chars/s, the model's GEMM FLOP/s (recurrent product and head,
   2 x (H x 4H + H x V) per character), and the peak of the same GEMMs in the same precision
   in a tight loop (best of 1 thread and all usable threads), with the ratio.

Speed does not depend on the weights, so the 1x512 model is freshly initialised.

5. (`--transformer RUN --lstm RUN`, alone) one stream from a trained transformer run against one
   from a trained LSTM run (issue 30: the 180 s runs of each), interleaved, best of repeats, the
   whole sampling loop as `charwise sample` runs it (KV cache in NumPy for the transformer).

    python benchmarks/sampling.py [--chars 3000] [--hidden 512] [--repeats 3]
                                  [--quality-chars 400] [--quality-streams 64]
    python benchmarks/sampling.py --transformer runs/tf180 --lstm runs/lstm180
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import charwise
from charwise.data.vocab import Vocab
from charwise.generation.charmodel import CharModel
from charwise.generation.check import exact_log_probs, greedy_agreement, sample_loss_gap
from charwise.generation.loop import run
from charwise.generation.quant import Int8Matrix
from charwise.generation.sampler import draw
from charwise.generation.steps import Int8LSTMStep, NumpyLSTMStep
from charwise.model import CharRNN
from charwise.settings.train import ModelConfig
from charwise.threads import set_blas_threads, set_torch_threads, usable_cpus

TARGET_NAIVE, TARGET_ONE, TARGET_PEAK, MAX_GAP, MIN_GREEDY = 10_000, 20_000, 0.40, 0.005, 200
PRIMES = ("The night", "ROMEO:", "It was", "She said", "And then", "\n")


@torch.inference_mode()
def naive(net: CharRNN, n: int, streams: int) -> float:
    """chars/s of the textbook loop: module call per character, softmax, multinomial."""
    x = torch.zeros(streams, 1, dtype=torch.long)
    state = None
    t = time.perf_counter()
    for _ in range(n):
        emb = net.embed(x)
        out, state = net.rnn(emb, state)
        probs = torch.softmax(net.head(out[:, -1]), -1)
        x = torch.multinomial(probs, 1)
    return n * streams / (time.perf_counter() - t)


def ours(model: CharModel, n: int, streams: int, precision: str = "fp32") -> float:
    t = time.perf_counter()
    for _ in model.stream("", n, temperature=1.0, seed=0, num_samples=streams, precision=precision):
        pass
    return n * streams / (time.perf_counter() - t)


def per_call(f, n: int, repeats: int) -> float:
    """Best of `repeats` mean seconds per call over n calls."""
    f()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def verdict(ok: bool, how: str = "") -> str:
    return "met" if ok else f"missed{' (' + how + ')' if how else ''}"


def naive_table(net: CharRNN, model: CharModel, a) -> None:
    print("\n1. exact fp32 sampler vs a naive nn.LSTM loop")
    print(f"{'streams':>8s} {'naive chars/s':>14s} {'charwise chars/s':>17s} {'ratio':>7s}")
    for streams in (1, 64):
        n = a.chars if streams == 1 else max(20, a.chars // 10)
        slow = max(naive(net, n, streams) for _ in range(a.repeats))
        fast = max(ours(model, n, streams) for _ in range(a.repeats))
        extra = f"  target >= {TARGET_NAIVE:,}: {verdict(fast >= TARGET_NAIVE)}" if streams == 1 else ""
        print(f"{streams:8d} {slow:14,.0f} {fast:17,.0f} {fast / slow:7.1f}{extra}")


def one_stream(net: CharRNN, model: CharModel, a) -> None:
    print("\n2. one stream, fp32 vs int8 (best of repeats, interleaved)")
    speed = {"fp32": 0.0, "int8": 0.0}
    for _ in range(a.repeats):
        for p in speed:
            speed[p] = max(speed[p], ours(model, a.chars, 1, p))
    ratio, int8 = speed["int8"] / speed["fp32"], speed["int8"]
    print(f"   fp32 {speed['fp32']:,.0f} chars/s, int8 {int8:,.0f} chars/s, ratio {ratio:.2f}x;"
          f" target int8 >= {TARGET_ONE:,}: {verdict(int8 >= TARGET_ONE, f'{int8 / TARGET_ONE:.0%}')}")
    # where the time goes, microseconds per character
    steps = {"fp32": NumpyLSTMStep(net), "int8": Int8LSTMStep(net)}
    h = np.random.default_rng(0).uniform(-1, 1, (1, net.cfg.hidden_size)).astype(np.float32)
    n = max(50, a.chars // 2)
    parts = {}
    for p, step in steps.items():
        st = step.begin(net.zero_state(1))
        ids = np.array([1])
        parts[p + " product"] = per_call(lambda: step.mm_hh[0](h), n, a.repeats)
        parts[p + " step"] = per_call(lambda: step(ids, st), n, a.repeats)
    # the int8 kernel alone on the real matrix, and on an 8x8 one (its fixed cost per call)
    big, tiny = steps["int8"].mm_hh[0], Int8Matrix(np.ones((8, 8), np.float32))
    for name, m, x in (("kernel", big, torch.from_numpy(h)), ("kernel 8x8", tiny, torch.ones(1, 8))):
        parts["int8 " + name] = per_call(lambda: m._linear(x, m.q, m.packed, m.col_sums, 1.0, 0, m.zero_bias),
                                         n, a.repeats)
    logits = np.zeros((1, len(model.vocab)), np.float32)
    rng = np.random.default_rng(0)
    loop = float("inf")
    for _ in range(a.repeats):
        t = time.perf_counter()
        for _ in run(lambda i, s: (logits, s), logits, None, n, lambda lg: draw(lg, rng, 1.0),
                     [model.vocab.decoder()]):
            pass
        loop = min(loop, (time.perf_counter() - t) / n)
    us = {k: v * 1e6 for k, v in parts.items()}
    for p in steps:
        print(f"   {p}: recurrent product {us[p + ' product']:6.1f} us, whole step {us[p + ' step']:6.1f} us "
              f"(gates, head, state: {us[p + ' step'] - us[p + ' product']:5.1f} us)")
    gemv = us["int8 kernel"] - us["int8 kernel 8x8"]
    print(f"   int8 kernel {us['int8 kernel']:.1f} us = fixed cost per call {us['int8 kernel 8x8']:.1f} "
          f"(measured on an 8x8 matrix) + the product itself ~{gemv:.1f}")
    print(f"   sampling loop around the step (draw at temperature 1, decode, bookkeeping): {loop * 1e6:.1f} us")
    total = us["int8 step"] + loop * 1e6
    print(f"   int8 per character: ~{gemv:.1f} us multiplying, ~{total - gemv:.1f} us in calls and "
          f"Python around it (sum {total:.1f} us = {1e6 / total:,.0f} chars/s); 20k chars/s is 50 us in all")


def quality(a) -> None:
    base = charwise.load("base")
    print(f"\n3. int8 quality on the trained `base` model (LSTM 1x{base.net.cfg.hidden_size})")
    agree = []
    for prime in PRIMES:
        same = greedy_agreement(base, prime, a.greedy_chars)
        note = ""
        if same < a.greedy_chars:            # how close the fp32 model's top two were there
            text = base.generate(prime, same + 1, temperature=0)
            ids = base.vocab.encode(text[len(prime):])[None]
            lp = np.sort(exact_log_probs(base, prime, ids)[0, same])
            note = f" (fp32's top two differ by {lp[-1] - lp[-2]:.4f} nats there)"
        agree.append(same)
        print(f"   greedy after {prime!r}: {same} of {a.greedy_chars} characters identical{note}")
    ok = sum(x >= MIN_GREEDY for x in agree)
    print(f"   identical for >= {MIN_GREEDY} characters after {ok} of {len(agree)} primes "
          f"(min {min(agree)}): {verdict(ok == len(agree), f'{ok} of {len(agree)}')}")
    r = sample_loss_gap(base, "The night", a.quality_chars, a.quality_streams, seed=0)
    print(f"   samples scored by the fp32 model, {r['chars']:,} characters each: fp32 {r['fp32']:.4f}, "
          f"int8 {r['int8']:.4f} nats/char; difference {r['gap']:+.4f} +- {r['stderr']:.4f} (1 s.e.)")
    print(f"   expected difference per character {r['expected_gap']:+.5f} nats; "
          f"bound |.| <= {MAX_GAP}: {verdict(abs(r['expected_gap']) <= MAX_GAP)}")


def gemm_peak(H: int, V: int, streams: int, precision: str, repeats: int) -> float:
    """FLOP/s of the step's GEMMs ((S, H) x (H, 4H) and (S, H) x (H, V)) in a tight loop,
    best of 1 and all usable threads."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (streams, H)).astype(np.float32)
    w, head = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(np.float32), \
        (rng.standard_normal((H, V)) / np.sqrt(H)).astype(np.float32)
    mm = Int8Matrix(w) if precision == "int8" else w.__rmatmul__
    best = float("inf")
    for threads in sorted({1, usable_cpus()}):
        set_torch_threads(threads)
        set_blas_threads(threads)
        best = min(best, per_call(lambda: (mm(x), x @ head), 200, repeats))
    return 2 * streams * (H * 4 * H + H * V) / best


def many_streams(model: CharModel, a) -> None:
    H, V, S = a.hidden, len(model.vocab), 64
    flop_per_char = 2 * (H * 4 * H + H * V)
    print(f"\n4. {S} streams: chars/s, model GEMM GFLOP/s, and the same GEMMs' peak in a tight loop")
    n = max(20, a.chars // 10)
    for p in ("fp32", "int8"):
        speed = max(ours(model, n, S, p) for _ in range(a.repeats))
        peak = gemm_peak(H, V, S, p, a.repeats)
        got = speed * flop_per_char
        print(f"   {p}: {speed:,.0f} chars/s, {got / 1e9:.0f} GFLOP/s of {peak / 1e9:.0f} peak = "
              f"{got / peak:.0%}; target >= {TARGET_PEAK:.0%}: {verdict(got / peak >= TARGET_PEAK)}")


def transformer_vs_lstm(a) -> None:
    """5: one stream from each trained run, interleaved, best of repeats."""
    from charwise.cells import shape_text
    models = {"transformer": charwise.load(a.transformer), "lstm": charwise.load(a.lstm)}
    print("\n5. one stream: a trained transformer against a trained LSTM (best of repeats, interleaved)")
    speed = dict.fromkeys(models, 0.0)
    for _ in range(a.repeats):
        for name, model in models.items():
            speed[name] = max(speed[name], ours(model, a.chars, 1))
    for name, model in models.items():
        print(f"   {name:12s} {shape_text(model.info['model'])}: {speed[name]:,.0f} chars/s")
    ratio = speed["transformer"] / speed["lstm"]
    print(f"   transformer / LSTM = {ratio:.2f}; target >= 1: {verdict(ratio >= 1, f'{ratio:.0%}')}")
    kv_breakdown(models["transformer"].net, a.repeats)


def kv_breakdown(net, repeats: int) -> None:
    """Where the transformer's character goes: its NumPy step alone (slides included, one BLAS
    thread), a slide alone (the window's last half encoded again), and per character what the
    whole sampling loop above adds."""
    from charwise.generation.kvstep import NumpyKVStep
    from charwise.generation.steps import KVState
    set_blas_threads(1)
    step, keep = NumpyKVStep(net), net.context // 2
    _, cache = net.step(torch.zeros(1, 1, dtype=torch.long), net.new_cache(1), 0)
    state, ids = step.begin(KVState(cache, 1)), np.array([1])

    def chars(n: int = 4 * net.context) -> None:
        nonlocal state
        for _ in range(n):
            _, state = step(ids, state)

    def slide() -> None:
        state.n = 0
        step._extend(np.ones((1, keep), dtype=np.int64), state, keys_only=True)

    per_char = per_call(chars, 1, repeats) / (4 * net.context)
    per_slide = per_call(slide, 20, repeats)
    print(f"   the transformer's NumPy step alone, one BLAS thread: {per_char * 1e6:.0f} us a character "
          f"with the slides; a slide (re-encoding {keep} characters, once every {net.context - keep}) "
          f"{per_slide * 1e6:.0f} us = {per_slide / (net.context - keep) * 1e6:.0f} us a character")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=3000, help="characters per one-stream run")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="best of N (the machine is noisy)")
    ap.add_argument("--greedy-chars", type=int, default=400)
    ap.add_argument("--quality-chars", type=int, default=400, help="characters per sampled stream")
    ap.add_argument("--quality-streams", type=int, default=64)
    ap.add_argument("--transformer", help="a trained transformer run: compare it with --lstm (alone)")
    ap.add_argument("--lstm", help="the trained LSTM run --transformer is compared with")
    a = ap.parse_args()
    if a.transformer or a.lstm:
        if not (a.transformer and a.lstm):
            ap.error("--transformer and --lstm go together")
        transformer_vs_lstm(a)
        return 0
    torch.manual_seed(0)
    vocab = Vocab(tuple(chr(32 + i) for i in range(65)))
    net = CharRNN(ModelConfig(vocab_size=65, embed_dim=64, hidden_size=a.hidden)).eval()
    model = CharModel(net, vocab)
    print(f"LSTM 1x{a.hidden}, vocabulary 65, torch threads {torch.get_num_threads()}, "
          f"CPU threads usable {usable_cpus()}, best of {a.repeats}")
    naive_table(net, model, a)
    one_stream(net, model, a)
    quality(a)
    many_streams(model, a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
