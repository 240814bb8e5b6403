"""Put a trained run into the package as the bundled `base` model.

    python scripts/ship_base.py RUN_DIR [--name base]

Copies what loading needs -- run.json and the best weights (model.safetensors) -- into
src/charwise/models/NAME/ and records the weights' SHA-256 beside them
(model.safetensors.sha256, `sha256sum` format), which charwise checks before using them.
last.safetensors (optimizer moments, for a resume) and metrics.jsonl stay behind; run.json keeps
its history, best loss and training time (the model card's numbers).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 10_500_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", default="base")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from charwise.runs.bundled import SHA_FILE, sha256_file
    src, dst = a.run_dir, REPO / "src" / "charwise" / "models" / a.name
    info = json.loads((src / "run.json").read_text(encoding="utf-8"))
    if info.get("status") != "done":
        raise SystemExit(f"{src}: status {info.get('status')!r}, not done")
    weights = src / "model.safetensors"
    if weights.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{weights}: {weights.stat().st_size:,} bytes, over the {MAX_BYTES:,} limit")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "run.json", dst / "run.json")
    shutil.copyfile(weights, dst / "model.safetensors")
    sha = sha256_file(dst / "model.safetensors")
    (dst / SHA_FILE).write_text(f"{sha}  model.safetensors\n", encoding="ascii")
    print(f"{dst}: run.json, model.safetensors ({weights.stat().st_size:,} bytes), sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
