"""Quantized ONNX exports (`charwise export --format onnx --quantize fp16|int8`) and their check.

int8: onnxruntime's dynamic quantization (int8 weights with scales; activations quantized on
the fly: MatMulInteger, DynamicQuantizeLSTM; inside a Transformer's If too). fp16: every float
weight is stored as float16 and cast back to float32 inside the graph, so the file halves and
every onnxruntime build (the CPU one has no float16 LSTM kernel) runs it; the arithmetic stays
float32.

The check: the loss of the exported graph, run step by step through onnxruntime on the run's
validation split (or a given text), against the torch model's on the same characters.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import CharwiseError


def to_fp16_storage(proto) -> None:
    """In place: float32 initializers -> float16 ones plus a Cast back to float32. One with a
    value float16 cannot hold (a transformer's attention mask, -3.4e38) stays float32."""
    from onnx import TensorProto, helper, numpy_helper
    casts, inits = [], []
    for init in proto.graph.initializer:
        a = numpy_helper.to_array(init) if init.data_type == TensorProto.FLOAT else None
        if a is None or np.abs(a[np.isfinite(a)]).max(initial=0.0) > np.finfo(np.float16).max:
            inits.append(init)
            continue
        a = a.astype(np.float16)
        half = numpy_helper.from_array(a, init.name + "__fp16")
        inits.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def fold_constants(proto):
    """Fold the weight-layout ops (Transpose, Reshape, Slice of initializers) that torch's
    exporter leaves for large weights, so the LSTM reads its weights straight from
    initializers: only then does the int8 quantizer see (and quantize) them."""
    import onnxscript.optimizer
    meta = [(p.key, p.value) for p in proto.metadata_props]
    doc = proto.doc_string
    folded = onnxscript.optimizer.optimize(proto, input_size_limit=1 << 31, output_size_limit=1 << 31)
    if not folded.metadata_props:
        for k, v in meta:
            entry = folded.metadata_props.add()
            entry.key, entry.value = k, v
    folded.doc_string = folded.doc_string or doc
    return folded


def has_subgraphs(graph) -> bool:
    return any(a.HasField("g") for node in graph.node for a in node.attribute)


def quantize_proto(proto, quantize: str) -> bytes:
    """The fp32 step graph -> the serialized quantized graph."""
    import onnx
    proto = fold_constants(proto)
    if quantize == "fp16":
        to_fp16_storage(proto)
        onnx.checker.check_model(proto)
        return proto.SerializeToString()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ModuleNotFoundError:
        raise CharwiseError("int8 ONNX export needs onnxruntime: pip install charwise[onnx]") from None
    import logging
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)        # "consider pre-processing" advice: not for this graph
        try:
            # EnableSubgraph: also the MatMuls inside an If (a Transformer's window slide)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                             extra_options={"EnableSubgraph": has_subgraphs(proto.graph)})
        finally:
            root.setLevel(level)
        return dst.read_bytes()
