"""`charwise export RUN_DIR --format onnx`: the model's one-character inference step as an
ONNX graph, so it runs outside Python (onnxruntime in C, C#, Java, JavaScript, ...).

The graph is the step a sampler calls once per character, with the recurrent state passed in
and out explicitly:

    inputs   x      int64  (batch,)            character ids (the vocabulary's order)
             h      float  (layers, batch, H)  hidden state (zeros to start)
             c      float  (layers, batch, H)  LSTM cell state (LSTM only)
    outputs  logits float  (batch, V)          scores for the next character (softmax them)
             h_out, c_out                      the state to feed back with the next character

To prime, feed the prime's characters one by one and keep the last logits. The vocabulary and
the model's shape travel in the file's metadata (metadata_props): charwise.vocab is a JSON list
of the characters, so id i is charwise.vocab[i].

A Transformer (--cell transformer) has no recurrent state: its step takes x as (batch, 1) and
passes its KV cache in and out instead, and slides its window itself (onnxkv.py says how a
caller uses it). --quantize fp16 and int8 apply to it as to the recurrent graphs.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..cells import cell, is_attention
from ..errors import CharwiseError
from ..generation.charmodel import load
from ..guards import check_out_path
from ..runs.rundir import atomic_write_bytes, check_run_dir, default_out
from ..settings.commands import ExportOptions
from ..transformer import CharTransformer
from .formats import DEFAULT_MAX_LOSS_INCREASE, FORMATS, check_quantize
from .losscheck import check_text, loss_phrase, loss_report, refuse_if_worse, torch_loss
from .onnxkv import (
    KVStepGraph,
    check_kv_against_torch,
    kv_doc,
    kv_example,
    kv_io_names,
    kv_meta,
    strip_node_metadata,
    zero_cache,
)
from .onnxquant import quantize_proto

MAX_LOGIT_DIFF = 1e-3         # float32 rounding is ~1e-6; anything near this is a bug


class StepGraph(torch.nn.Module):
    """CharRNN's forward on one character per stream, state as plain tensors in and out."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.arity = cell(net.cfg.cell).state_arity

    # Named arguments, not *state: the exporter's dynamic shapes are keyed by parameter name.
    def forward(self, x, h, c=None):
        state = (h, c)[:self.arity]
        logits, new = self.net(x[:, None], state)
        return (logits[:, 0], *new)


def io_names(cell_name: str, layers: int = 1) -> tuple[list[str], list[str]]:
    """The graph's inputs and outputs: x and each state tensor the registry names, and back
    (a Transformer's: x and its KV cache, onnxkv.kv_io_names)."""
    if is_attention(cell_name):
        return kv_io_names(layers)
    state = list(cell(cell_name).state)
    return ["x", *state], ["logits", *(f"{s}_out" for s in state)]


def step_graph(net):
    """(the step module, example inputs, dynamic shapes: only the batch varies)."""
    if isinstance(net, CharTransformer):
        return (KVStepGraph(net), *kv_example(net))
    ins, _ = io_names(net.cfg.cell)
    example = (torch.zeros(2, dtype=torch.long), *net.zero_state(2))
    batch = torch.export.Dim("batch", min=1, max=65536)
    return StepGraph(net), example, {"x": {0: batch}, **{s: {1: batch} for s in ins[1:]}}  # state: (L, B, H)


def describe(proto, model, ins: list[str], outs: list[str]) -> None:
    """The metadata (vocabulary, shape, io names) and doc_string a caller reads."""
    net, cfg = model.net, model.net.cfg
    meta = {"charwise.vocab": json.dumps(list(model.vocab.chars), ensure_ascii=False),
            "charwise.cell": cfg.cell, "charwise.layers": str(cfg.layers),
            "charwise.hidden_size": str(cfg.hidden_size), "charwise.version": __version__,
            "charwise.inputs": ",".join(ins), "charwise.outputs": ",".join(outs)}
    if isinstance(net, CharTransformer):
        del meta["charwise.hidden_size"]            # not used by a Transformer
        meta.update(kv_meta(net))
        strip_node_metadata(proto.graph)            # torch's stack traces: most of the file
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = (kv_doc(net) if isinstance(net, CharTransformer) else
                        f"charwise {cfg.cell.upper()} {cfg.layers}x{cfg.hidden_size} character "
                        "model, one inference step; see metadata charwise.vocab")


def _require(module: str, extra: str = "onnx") -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise CharwiseError(f"export to ONNX needs the {module} package: pip install charwise[{extra}]")


def export_onnx(run_dir, out=None, which: str = "best", check: bool = True, quantize: str = "none",
                textfile=None, max_loss_increase: float | None = None, force: bool = False) -> dict:
    """Write RUN_DIR's step graph to `out` (default RUN_DIR/model.onnx). An existing `out` (the
    default too) is replaced only with `force`, and never when it is not a regular file, is one
    of the run's own files or lies in another run's directory. When onnxruntime is installed and
    `check` is set, run 64 steps through both and report the largest logit gap. quantize
    fp16/int8 (onnxquant.py): the loss of the quantized graph on the run's validation split (or
    `textfile`) is compared with the original's; beyond max_loss_increase nothing is written."""
    check_quantize(quantize, "onnx")
    run = check_run_dir(run_dir)
    if out is None:
        suffix = FORMATS["onnx"].suffix
        out = default_out(run_dir, run, "model" + suffix, suffix)
    out = check_out_path(out, force, protect=run.parent if run.is_file() else run)
    _require("onnx")
    _require("onnxscript")                 # torch's exporter translates through onnxscript
    model = load(run_dir, which=which)
    net = model.net.float().eval()
    cfg = net.cfg
    ins, outs = io_names(cfg.cell, cfg.layers)
    graph, example, shapes = step_graph(net)
    # The exporter is chatty (progress lines, deprecation notes); only failures matter here.
    chatter = io.StringIO()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.ERROR)
            program = torch.onnx.export(graph, example, input_names=ins, output_names=outs,
                                        dynamic_shapes=shapes, dynamo=True, verbose=False)
    except Exception as e:  # noqa: BLE001 - any exporter failure becomes one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CharwiseError(f"ONNX export failed: {first[:300]}") from None
    finally:
        quiet.setLevel(level)
    assert program is not None                  # dynamo=True always returns the program
    proto = program.model_proto
    describe(proto, model, ins, outs)
    if quantize != "none":
        return _export_quantized(run_dir, model, proto, out, quantize, textfile, max_loss_increase,
                                 {"inputs": ins, "outputs": outs})
    atomic_write_bytes(out, proto.SerializeToString())
    result = {"path": str(out), "bytes": out.stat().st_size, "inputs": ins, "outputs": outs,
              "max_abs_logit_diff": None, "checked_steps": 0}
    if check:
        try:
            result["max_abs_logit_diff"], result["checked_steps"] = check_against_torch(out, model)
        except ModuleNotFoundError:
            return result                   # onnxruntime not installed: written, not checked
        if not result["max_abs_logit_diff"] <= MAX_LOGIT_DIFF:
            raise CharwiseError(f"{out}: the exported graph disagrees with the torch model (max "
                                f"|logit difference| {result['max_abs_logit_diff']:.3g}); do not use it")
    return result


def _export_quantized(run_dir, model, proto, out, quantize, textfile, max_loss_increase, io) -> dict:
    """Quantize, check the loss in a temporary file, and only then write `out`."""
    import tempfile
    _require("onnxruntime")                 # a quantized export is never written unchecked
    data = quantize_proto(proto, quantize)
    text, where = check_text(run_dir, model, textfile)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        worst, steps = check_against_torch(path, model)
        loss = loss_report(torch_loss(model, text), onnx_loss(path, model, text), len(text) - 1, where)
    limit = DEFAULT_MAX_LOSS_INCREASE if max_loss_increase is None else max_loss_increase
    refuse_if_worse(loss, quantize, limit, "ONNX export")
    atomic_write_bytes(out, data)
    return {"path": str(out), "bytes": out.stat().st_size, **io, "quantize": quantize,
            "max_abs_logit_diff": worst, "checked_steps": steps, "loss": loss}


def onnx_loss(path, model, text: str) -> float:
    """nats/char of `text` under the ONNX step graph at `path`, one character at a time."""
    sess = onnx_session(path)
    ids = model.vocab.encode(text).astype(np.int64)
    net = model.net
    cfg = net.cfg
    ins, _ = io_names(cfg.cell, cfg.layers)
    shape: tuple[int, ...] = (1,)
    if isinstance(net, CharTransformer):
        state, shape = zero_cache(net, 1), (1, 1)                # x (1, 1)
    else:
        state = [np.zeros((cfg.layers, 1, cfg.hidden_size), np.float32) for _ in ins[1:]]
    total = 0.0
    for t in range(len(ids) - 1):
        got = sess.run(None, dict(zip(ins, [ids[t:t + 1].reshape(shape), *state])))
        z = got[0][0].astype(np.float64)
        m = z.max()
        total += m + np.log(np.exp(z - m).sum()) - z[ids[t + 1]]
        state = got[1:]
    return total / (len(ids) - 1)


def onnx_session(path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1           # one character at a time: threads only add latency
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def check_against_torch(path, model, steps: int = 64, batch: int = 3, seed: int = 0):
    """Feed the same random characters and state through torch and onnxruntime; return
    (max |logit difference| over all steps, steps). A Transformer: at least 2 x context steps."""
    sess = onnx_session(path)
    net = model.net
    if isinstance(net, CharTransformer):        # from an empty cache, past the context
        return check_kv_against_torch(sess, net, steps, batch, seed)
    rng = np.random.default_rng(seed)
    V = len(model.vocab)
    state = tuple(torch.randn(s.shape, generator=torch.Generator().manual_seed(seed)) * 0.5
                  for s in net.zero_state(batch))
    ins, _ = io_names(net.cfg.cell)
    onnx_state = [s.numpy().copy() for s in state]
    worst = 0.0
    for _ in range(steps):
        x = rng.integers(0, V, size=batch).astype(np.int64)
        logits, state = net(torch.from_numpy(x)[:, None], state)
        got = sess.run(None, dict(zip(ins, [x, *onnx_state])))
        onnx_state = got[1:]
        worst = max(worst, float(np.abs(got[0] - logits[:, 0].numpy()).max()))
    return worst, steps


def write(run_dir, out, o: ExportOptions) -> dict:
    """`charwise export --format onnx` (FORMATS)."""
    return export_onnx(run_dir, out, o.which, quantize=o.quantize, textfile=o.text,
                       max_loss_increase=o.max_loss_increase, force=o.force)


def summary_line(res: dict) -> str:
    size = res["bytes"]
    human = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    line = f"wrote {res['path']} ({human}; inputs {', '.join(res['inputs'])} -> " \
           f"outputs {', '.join(res['outputs'])})"
    if res["max_abs_logit_diff"] is None:
        return line + "; not checked (pip install onnxruntime to check it against torch)"
    if res.get("loss"):
        return line + (f"; {res['quantize']}, checked with onnxruntime: max |logit difference| "
                       f"{res['max_abs_logit_diff']:.2e} over {res['checked_steps']} steps"
                       f"{loss_phrase(res['loss'])}")
    return line + (f"; checked with onnxruntime over {res['checked_steps']} steps: "
                   f"max |logit difference| {res['max_abs_logit_diff']:.2e}")
