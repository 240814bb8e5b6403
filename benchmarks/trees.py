"""Same work, two source trees: is a refactoring free? Trains the small recipe at width 256 for
60 steps on tiny-shakespeare and samples 4,000 characters from the result (fp32, one stream),
printing the two times and the start of the sample as one JSON line. Run it alternately against
each tree, a few rounds, on a quiet machine, and compare medians (benchmarks/README.md, issue 27):

    git worktree add --detach /tmp/old <commit>
    for i in 1 2 3 4 5; do for src in /tmp/old/src src; do
        PYTHONPATH=$src python benchmarks/trees.py; done; done

The sample must be the same text from both trees (same seed, same arithmetic).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import charwise

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def main() -> None:
    res: dict = {"tree": str(Path(charwise.__file__).parents[1])}
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        charwise.train(str(CORPUS), out=f"{d}/r", preset="small", hidden_size=256, max_steps=60,
                       eval_every=10 ** 6, seed=1)
        res["train_60_steps_s"] = round(time.perf_counter() - t, 3)
        charwise.sample(f"{d}/r", n=50, seed=1)                  # warm-up: first-call costs
        t = time.perf_counter()
        text = charwise.sample(f"{d}/r", n=4000, seed=1, temperature=1.0)
        res["sample_4000_s"] = round(time.perf_counter() - t, 3)
        res["sample_head"] = text[:40]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
