"""`charwise export RUN --format web`: the model as ONE self-contained HTML page that runs in
the browser (no server, no network, works opened from disk), and the weight quantization that
the web and ONNX exports share.

The page holds
  * the weights, base64 in a <script type="application/octet-stream"> block: float32, float16,
    or int8 with one float32 scale per row (symmetric: w = q * scale, scale = max|row| / 127);
    biases stay float32 (they are tiny),
  * a JSON description (cell, sizes, vocabulary, where each tensor lies in the blob),
  * a small plain-JavaScript model step (LSTM, GRU, RNN, any number of layers, torch's gate
    order and equations; or the Transformer with its KV cache and CharTransformer.step's sliding
    window, learned or rotary positions) and sampler (prime, temperature incl. 0 = greedy, top-k, top-p,
    length, seed through a seeded PRNG, stop string), from static/web/.

Quantized exports are checked the cheap way: the weights are dequantized in NumPy exactly as
the page dequantizes them, loaded into the torch model, and the loss on the run's validation
split (or a given text) compared with the original's; beyond `max_loss_increase` nothing is
written.
"""
from __future__ import annotations

import base64
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..cells import CELLS, is_attention
from ..errors import CharwiseError
from ..generation.charmodel import load
from ..generation.params import page_defaults
from ..generation.quant import dequantize_rows, quantize_rows
from ..guards import check_out_path
from ..runs.rundir import atomic_write_bytes, check_run_dir, default_out, read_run
from ..settings.commands import ExportOptions
from ..settings.options import GREEDY_BELOW
from ..transformer import CharTransformer
from .formats import DEFAULT_MAX_LOSS_INCREASE, FORMATS, check_quantize
from .losscheck import check_text, loss_phrase, loss_report, refuse_if_worse, torch_loss

_TEMPLATE_FILES = ("page.html", "page.css", "page.js")


# ----------------------------------------------------------------------------- quantization

def model_tensors(net) -> list[tuple[str, np.ndarray]]:
    """(name, float32 array) for every parameter, in state_dict order (torch's names)."""
    return [(k, v.detach().float().cpu().numpy()) for k, v in net.state_dict().items()]


def is_matrix(name: str, a: np.ndarray) -> bool:
    return a.ndim == 2                    # embed, weight_ih/hh, head.weight; biases are 1-D


def roundtrip(a: np.ndarray, quantize: str, matrix: bool = True) -> np.ndarray:
    """What the page will compute with for this tensor."""
    if quantize == "none" or not matrix:
        return a.astype(np.float32)
    if quantize == "fp16":
        return a.astype(np.float16).astype(np.float32)
    return dequantize_rows(*quantize_rows(a))


def encode_weights(net, quantize: str) -> tuple[list[dict], bytes, int]:
    """(tensor table, blob, bytes of quantized weights). Every entry starts 4-byte aligned so
    the page can view it as a typed array without copying."""
    table, parts, pos = [], [], 0

    def put(data: bytes) -> int:
        nonlocal pos
        start = pos
        parts.append(data)
        pos += len(data)
        pad = -pos % 4
        if pad:
            parts.append(b"\0" * pad)
            pos += pad
        return start

    payload = 0
    for name, a in model_tensors(net):
        entry: dict[str, Any] = {"name": name, "shape": list(a.shape)}
        if quantize == "none" or not is_matrix(name, a):
            entry.update(dtype="f32", offset=put(a.astype("<f4").tobytes()))
            payload += a.size * 4
        elif quantize == "fp16":
            entry.update(dtype="f16", offset=put(a.astype("<f2").tobytes()))
            payload += a.size * 2
        else:
            q, scale = quantize_rows(a)
            entry.update(dtype="i8", offset=put(q.tobytes()), scale=put(scale.astype("<f4").tobytes()))
            payload += q.size + scale.size * 4
        table.append(entry)
    return table, b"".join(parts), payload


def quantized_net(net, quantize: str):
    """A copy of `net` holding the weights the page computes with (for the loss check)."""
    import copy
    q = copy.deepcopy(net)
    state = {k: torch.from_numpy(roundtrip(a, quantize, is_matrix(k, a)))
             for k, a in model_tensors(net)}
    q.load_state_dict(state)
    return q.eval()


# ----------------------------------------------------------------------------- the page's matvec

def matvec_wasm() -> bytes:
    """The page's WebAssembly module, assembled here so that its source is readable:

        (import "env" "mem" (memory 1))
        (func (export "matvec") (param $W i32) (param $rows i32) (param $cols i32)
                                (param $x i32) (param $out i32)   ;; byte offsets
          ;; for each row, over j in steps of 8, two f32x4 accumulators:
          ;;   acc += W[j:j+4] * x[j:j+4];  acc2 += W[j+4:j+8] * x[j+4:j+8]
          ;; out[row] += sum of the lanes of acc + acc2; W advances row by row
        )

    cols must be a positive multiple of 8; every access is inside the imported memory."""
    def leb(n: int) -> bytes:                 # unsigned LEB128
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def section(sid: int, body: bytes) -> bytes:
        return bytes([sid]) + leb(len(body)) + body

    def name(s: str) -> bytes:
        return leb(len(s)) + s.encode()

    def op(*codes) -> bytes:
        return bytes(codes)

    def simd(code: int, *imm) -> bytes:       # 0xFD prefix, LEB opcode, immediates
        return b"\xfd" + leb(code) + bytes(imm)

    get, put, tee = (lambda i: op(0x20, i)), (lambda i: op(0x21, i)), (lambda i: op(0x22, i))
    const = lambda v: op(0x41) + leb(v)
    W, ROWS, COLS, X, OUT, J, XP, ACC, ACC2 = range(9)
    lane = lambda k: get(ACC) + simd(0x1F, k)   # noqa: E731  f32x4.extract_lane
    add32, sub32, fadd = op(0x6A), op(0x6B), op(0x92)
    load = lambda ptr, offset: get(ptr) + simd(0x00, 0, offset)   # noqa: E731  v128.load
    fma = lambda acc, offset: (get(acc) + load(W, offset) + load(XP, offset)   # noqa: E731
                               + simd(0xE6) + simd(0xE4) + put(acc))           # acc += w * x
    code = b"".join([
        op(0x02, 0x40), op(0x03, 0x40),                          # block, loop (rows)
        get(ROWS), op(0x45), op(0x0D, 1),                        # rows == 0: done
        simd(0x0C) + bytes(16), tee(ACC), put(ACC2),             # acc = acc2 = 0 (v128.const)
        get(COLS), put(J), get(X), put(XP),
        op(0x03, 0x40),                                          # loop (cols, 8 at a time)
        fma(ACC, 0), fma(ACC2, 16),                              # two chains: add latency hidden
        get(W), const(32), add32, put(W), get(XP), const(32), add32, put(XP),
        get(J), const(8), sub32, tee(J), op(0x0D, 0),            # j -= 8; again while j != 0
        op(0x0B),
        get(ACC), get(ACC2), simd(0xE4), put(ACC),               # acc += acc2
        get(OUT), get(OUT), op(0x2A, 2, 0),                      # out[row] (f32.load)
        lane(0), lane(1), fadd, lane(2), lane(3), fadd, fadd, fadd,
        op(0x38, 2, 0),                                          # += acc's sum (f32.store)
        get(OUT), const(4), add32, put(OUT), get(ROWS), const(1), sub32, put(ROWS),
        op(0x0C, 0), op(0x0B), op(0x0B), op(0x0B),               # next row; end loop, block, func
    ])
    body = op(2, 2, 0x7F, 2, 0x7B) + code                        # locals: 2 x i32, 2 x v128
    return (b"\0asm" + op(1, 0, 0, 0)
            + section(1, op(1, 0x60, 5) + op(*[0x7F] * 5) + op(0))          # (i32 x5) -> ()
            + section(2, op(1) + name("env") + name("mem") + op(2, 0, 1))   # import memory
            + section(3, op(1, 0))
            + section(7, op(1) + name("matvec") + op(0, 0))
            + section(10, op(1) + leb(len(body)) + body))


# ----------------------------------------------------------------------------- the page

def template(name: str, folder: str = "web") -> str:
    root = resources.files("charwise") / "static"
    return ((root / folder) if folder else root).joinpath(name).read_text(encoding="utf-8")


def _script_json(obj) -> str:
    """JSON safe inside <script>: no '<' at all (so no </script> or <!--)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def build_html(model, quantize: str = "none", run_name: str = "model", loss: dict | None = None) -> tuple[str, int]:
    """(the page's HTML, bytes of quantized weights in it)."""
    net, vocab, info = model.net, model.vocab, model.info
    cfg = net.cfg
    if cfg.cell not in CELLS:
        raise CharwiseError(f"the web export does not know the cell {cfg.cell!r}")
    if not is_attention(cfg.cell) and getattr(net.rnn, "nonlinearity", "tanh") != "tanh":
        raise CharwiseError("the web export runs tanh RNNs only")
    table, blob, payload = encode_weights(net, quantize)
    hist = info.get("history") or []
    best = info.get("best") or {}
    desc = {
        "format": 1, "charwise": __version__, "run": run_name, "cell": cfg.cell,
        "gates": CELLS[cfg.cell].gates, "layers": cfg.layers, "hidden": cfg.hidden_size, "embed": cfg.embed_dim,
        "vocab": list(vocab.chars), "quantize": quantize, "tensors": table,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "char_counts": info.get("char_counts"),
        "greedy_below": GREEDY_BELOW,           # the sampler's temperature floor, as sampler.py's
        "defaults": page_defaults(),            # where the page's controls start: SamplingParams's
        "best_val_loss": best.get("val_loss") if isinstance(best, dict) else None,
        "eval_split": hist[-1].get("eval_split") if hist and isinstance(hist[-1], dict) else None,
        "loss_check": loss,
    }
    if isinstance(net, CharTransformer):        # what the page's Transformer step reads
        desc.update(hidden=net.width, width=net.width, heads=net.heads, context=net.context,
                    keep=net.context // 2, positions=net.positions)
    parts = {n: template(n) for n in _TEMPLATE_FILES}
    html = parts["page.html"]
    js = parts["page.js"].replace("{{WASM}}", base64.b64encode(matvec_wasm()).decode("ascii"))
    css = template("style.css", folder="") + parts["page.css"]      # the playground's look, then ours
    for key, value in (("CSS", css), ("JS", js.replace("</", "<\\/")),
                       ("TITLE", _html_escape(f"{run_name} · charwise")),
                       ("MODEL", _script_json(desc)),
                       ("WEIGHTS", base64.b64encode(blob).decode("ascii"))):
        html = html.replace("{{" + key + "}}", value, 1)
    return html, payload


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def check_out(out: Path, force: bool, protect: Path) -> None:
    """One-line reasons not to write `out` (guards.check_out_path); nothing is touched."""
    if out.is_dir():
        raise CharwiseError(f"{out}: is a directory; give a file name such as model.html")
    check_out_path(out, force, protect=protect)


def export_web(run_dir, out=None, quantize: str = "none", which: str = "best", force: bool = False,
               textfile=None, max_loss_increase: float = DEFAULT_MAX_LOSS_INCREASE,
               check: bool = True) -> dict:
    """Write RUN_DIR's model as one HTML page (default RUN_DIR/model.html)."""
    check_quantize(quantize, "web")
    run = check_run_dir(run_dir)
    if out is None:
        suffix = FORMATS["web"].suffix
        out = default_out(run_dir, run, "model" + suffix, suffix)
    out = Path(out)
    check_out(out, force, run.parent if run.is_file() else run)                  # before the (slow) work: fail fast
    model = load(run_dir, which=which)
    model.net.float().eval()
    loss = None
    if quantize != "none" and check:
        text, where = check_text(run_dir, model, textfile)
        original = torch_loss(model, text)
        exported = torch_loss(model, text, quantized_net(model.net, quantize))
        loss = loss_report(original, exported, len(text) - 1, where)
        refuse_if_worse(loss, quantize, max_loss_increase, "web export")
    name = Path(os.path.abspath(run_dir)).name
    html, payload = build_html(model, quantize, name, loss)
    atomic_write_bytes(out, html.encode("utf-8"))
    return {"path": str(out), "format": "web", "quantize": quantize, "bytes": out.stat().st_size,
            "weights_bytes": payload, "loss": loss}


def write(run_dir, out, o: ExportOptions) -> dict:
    """`charwise export --format web` (FORMATS): the page, after the vocabulary check."""
    _check_web_vocab(run_dir)
    return export_web(run_dir, out, o.quantize, o.which, o.force, o.text,
                      DEFAULT_MAX_LOSS_INCREASE if o.max_loss_increase is None else o.max_loss_increase)


def _check_web_vocab(run_dir) -> None:
    """The web page's sampler prints code points one at a time: refuse byte and line-mode runs
    in one line instead of exporting a page that shows <E4> or ends nowhere."""
    info = read_run(check_run_dir(run_dir))
    if info.get("vocab_kind", "chars") != "chars" or info.get("line_mode"):
        kind = "a byte-level run" if info.get("vocab_kind") == "bytes" else "a line-mode run"
        raise CharwiseError(f"--format web exports code-point runs trained as one text; {run_dir} "
                            f"is {kind} (--format onnx works for it)")


def _human(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def summary_line(res: dict) -> str:
    return (f"wrote {res['path']} ({_human(res['bytes'])}, one self-contained page; weights "
            f"{res['quantize']} {_human(res['weights_bytes'])}, "
            f"{res['bytes'] / max(res['weights_bytes'], 1):.2f}x){loss_phrase(res['loss'])}"
            f"; open it in a browser")
