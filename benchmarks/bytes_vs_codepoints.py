"""Benchmark: code points vs UTF-8 bytes on a text with a large alphabet, at the same budget.

The text is classical Chinese poetry: the Quan Tang Shi (全唐詩, public domain) as the npm package
`chinese-poetry` 2.0.1 ships it (MIT; `npm pack chinese-poetry@2.0.1` fetches the 85 MB tarball;
give the .tgz or its unpacked `package/` directory). The poems are written out as
"title\\nauthor\\nline\\nline...\\n\\n" in file order; the first --train-chars characters train, the
next --heldout-chars are held out. Each vocabulary trains the same model for the same wall-clock
budget (`charwise train --max-time`, evaluation included) in its own process, and is then scored
on the held-out text by `charwise eval` in bits per *character* (a byte model's bytes of each
character summed), with the peak resident memory of the training process.

    python benchmarks/bytes_vs_codepoints.py --source chinese-poetry-2.0.1.tgz [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def poems(source: Path):
    """Yield the Quan Tang Shi poems (dicts) from the package's tarball or directory."""
    if source.is_dir():
        files = sorted((source / "dist" / "quantangshi").glob("poet.tang.*.json"),
                       key=lambda p: int(p.name.split(".")[2]))
        for f in files:
            yield from json.loads(f.read_text(encoding="utf-8"))
        return
    with tarfile.open(source) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith("package/dist/quantangshi/poet.tang.") and m.name.endswith(".json")]
        for m in sorted(members, key=lambda m: int(m.name.split(".")[2])):
            yield from json.loads(tar.extractfile(m).read().decode("utf-8"))


def build_text(source: Path, chars: int) -> str:
    parts, n = [], 0
    for p in poems(source):
        t = p["title"] + "\n" + p["author"] + "\n" + "\n".join(p["paragraphs"]) + "\n\n"
        parts.append(t)
        n += len(t)
        if n >= chars:
            break
    return "".join(parts)[:chars]


def run_measured(cmd: list[str]) -> tuple[int, float]:
    """Run a command; its exit code and peak RSS in MB (from wait4's rusage)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="chinese-poetry-2.0.1.tgz or its package/ dir")
    ap.add_argument("--seconds", type=float, default=60.0, help="training budget per vocabulary")
    ap.add_argument("--train-chars", type=int, default=1_000_000)
    ap.add_argument("--heldout-chars", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="--preset small --hidden-size 256 --embed-dim 64",
                    help="model flags for both runs")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charwise-bytes-"))
    text = build_text(a.source, a.train_chars + a.heldout_chars)
    train, held = work / "train.txt", work / "heldout.txt"
    train.write_text(text[:a.train_chars], encoding="utf-8")
    held.write_text(text[a.train_chars:], encoding="utf-8")
    seen = set(text[:a.train_chars])
    unseen = sum(c not in seen for c in text[a.train_chars:])
    print(f"text: {len(text):,} characters, {len(set(text)):,} distinct, "
          f"{len(text.encode()) / len(text):.2f} UTF-8 bytes per character; {unseen:,} held-out "
          f"characters never seen in training (the code-point model skips them: --oov skip); "
          f"work dir {work}", flush=True)
    rows = []
    for kind in ("chars", "bytes"):
        out = work / kind
        cmd = [sys.executable, "-m", "charwise", "train", str(train), "--out", str(out), *a.model.split(),
               "--vocab", kind, "--max-time", str(a.seconds), "--threads", str(a.threads),
               "--val-fraction", "0.02", "--quiet"]
        code, peak = run_measured(cmd)
        if code != 0:
            sys.exit(f"{kind}: training failed ({code})")
        res = json.loads(subprocess.run([sys.executable, "-m", "charwise", "eval", str(out), str(held),
                                         "--json", "--oov", "skip"], capture_output=True, text=True,
                                        check=True).stdout)
        info = json.loads((out / "run.json").read_text(encoding="utf-8"))
        rows.append((kind, info["model"]["vocab_size"], info["parameters"], info["step"], peak,
                     res["bits_per_char"], res.get("bits_per_byte")))
    print("\n| vocabulary | symbols | parameters | steps in budget | peak RSS (MB) | held-out bits/char | bits/byte |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, v, params, steps, peak, bpc, bpb in rows:
        print(f"| {kind} | {v:,} | {params:,} | {steps:,} | {peak:,.0f} | {bpc:.3f} | "
              f"{'' if bpb is None else f'{bpb:.3f}'} |")


if __name__ == "__main__":
    main()
