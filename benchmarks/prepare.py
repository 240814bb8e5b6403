"""Benchmark: `charwise prepare` on a corpus larger than memory, and how soon training starts.

Generates MB megabytes of text (random words from a fixed list, some of them non-ASCII, so
multi-byte UTF-8 is exercised) as several files in a temporary directory, then

  1. runs `charwise prepare DIR --out PREPARED` in a subprocess: seconds, MB/s, and the
     child's peak RSS next to the corpus size (it should stay flat: chunks, not the text);
  2. runs `charwise train PREPARED` and times process start -> first batch read (corpus
     mapped, model built) and -> first step done, then leaves: the memmap is used as it is,
     so this should be seconds whatever the corpus size.

    python benchmarks/prepare.py [--mb 1000] [--dir /big/disk/tmp] [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("the of and to in a is that it was for on with as his he be at by I had not are but "
         "from or have an they which one you were her all she there would their we him been has "
         "when who will more no if out so said what up its about into than them can only other "
         "time new some could these two may first then do any like my now over such our man me "
         "café naïve déjà vu façade Straße Ärger über señor niño São Paulo Kraków Zürich "
         "résumé coöperate smörgåsbord — – … “quoted” ‘single’ €5 £3 ½ ° × π λ Ω 東京 日本語 🙂").split()
FILE_MB = 100                      # at most this much per generated file: several documents


def generate(root: Path, mb: float, seed: int = 0) -> int:
    """Write about `mb` MB of text into root/part-NNN.txt in 4 MB chunks; returns bytes."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS, dtype=object)
    target, written, part = int(mb * 1e6), 0, 0
    while written < target:
        with open(root / f"part-{part:03d}.txt", "wb") as f:
            in_file = 0
            while in_file < FILE_MB * 1e6 and written < target:
                picks = words[rng.integers(len(words), size=600_000)]
                lines = [" ".join(picks[i:i + 12]) for i in range(0, len(picks), 12)]
                chunk = ("\n".join(lines) + "\n").encode()[: target - written]
                chunk = chunk.decode("utf-8", "ignore").encode()   # never cut a character in half
                f.write(chunk)
                in_file += len(chunk)
                written += len(chunk)
        part += 1
    return written


def run_measured(argv: list[str]):
    """Run argv; returns (seconds, peak RSS in bytes of that child, its output, exit code)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        # os.wait4 gives this child's own rusage (RUSAGE_CHILDREN: the max over all children)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        log.seek(0)
        out = log.read().decode(errors="replace")
    return seconds, usage.ru_maxrss * 1024, out, proc.returncode     # ru_maxrss: KiB on Linux


# `charwise train` with a stopwatch: the moments the first two batches are read (data and model
# ready; step 1 done) are printed, then the process leaves at once -- a run of --max-steps 1
# would go on to evaluate the whole text, which on a big corpus is what takes long, not startup.
TRAIN_CHILD = """
import os, sys, time
import charwise.training.batches as data
window, calls = data.StreamBatches.window, []
def timed(self, *a, **k):
    calls.append(time.time())
    print(f"BATCH{len(calls)} {calls[-1]!r}", flush=True)
    if len(calls) == 2:
        os._exit(0)
    return window(self, *a, **k)
data.StreamBatches.window = timed
from charwise.cli import main
sys.exit(main(["train", *sys.argv[1:], "--max-steps", "2", "--quiet"]))
"""


def marks(out: str) -> dict:
    return {w[0]: float(w[1]) for w in (line.split() for line in out.splitlines())
            if len(w) == 2 and w[0].startswith("BATCH")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=1000, help="corpus size in MB (default: 1000)")
    ap.add_argument("--dir", default=None, help="where to write (needs ~3x MB free; default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charwise-prepare-bench-", dir=a.dir))
    charwise = [sys.executable, "-m", "charwise"]
    try:
        corpus, prepared, run = work / "corpus", work / "prepared", work / "run"
        corpus.mkdir()
        t = time.perf_counter()
        size = generate(corpus, a.mb)
        n_files = len(list(corpus.iterdir()))
        print(f"corpus: {size / 1e6:,.1f} MB in {n_files} file(s), "
              f"generated in {time.perf_counter() - t:.1f}s")

        secs, peak, out, rc = run_measured([*charwise, "prepare", str(corpus), "--out", str(prepared)])
        if rc != 0:
            print(out, file=sys.stderr)
            return 1
        print(out.strip())
        start = time.time()
        tsecs, tpeak, tout, trc = run_measured([sys.executable, "-c", TRAIN_CHILD, str(prepared),
                                                "--out", str(run)])
        m = marks(tout)
        if trc != 0 or "BATCH2" not in m:
            print(tout, file=sys.stderr)
            return 1
        mb = size / 1e6
        rows = [("prepare", secs, f"{mb / secs:,.1f}", peak),
                ("train: start -> batch 1", m["BATCH1"] - start, "", None),
                ("train: start -> step 1", m["BATCH2"] - start, "", tpeak)]
        print(f"\n{'what':<24}{'seconds':>9}{'MB/s':>9}{'peak RSS MB':>13}{'RSS / corpus':>14}")
        for what, sec, rate, rss in rows:
            r = f"{rss / 1e6:>13,.1f}{rss / size:>14.2f}" if rss else ""
            print(f"{what:<24}{sec:>9.2f}{rate:>9}{r}")
        print("(train's RSS counts the memory-mapped corpus pages it has read, which the OS can "
              "drop at will;\n prepare's does not grow with the corpus: compare two --mb values)")
        return 0
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
