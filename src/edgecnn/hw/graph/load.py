"""LayerGraph: the layers of any ONNX / QDQ / QONNX file, with shapes, MACs, weights, bit widths and sparsity.

The estimators work on this IR, never on the ONNX protobuf, so that they handle files edgecnn did not write.
Quantizers (QuantizeLinear/DequantizeLinear, QONNX Quant/BipolarQuant/Trunc) are not layers: they annotate
the tensors they quantize with a bit width. BatchNormalization and constant scale/shift nodes that follow a
Conv/Gemm are folded into it (as every deployment flow does). Ops the IR does not know are kept as layers
with ``known=False`` so that every estimator lists them; nothing on the data path is dropped silently.

Here: ``load_graph`` and the folding pass. The IR records are in hw.layers, file loading and shape inference in
hw.onnxio, the node-to-layer pass in hw.reader, the QONNX/FINN specifics in hw.qonnx.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.graph.ir import (
    ACTIVATIONS,
    BIT_PRESERVING,
    COMPUTE_OPS,
    ELTWISE,
    SIMPLE,
    TRANSPARENT,
    WEIGHT_INPUT,
    Layer,
    LayerGraph,
)
from edgecnn.hw.graph.onnxio import load_proto
from edgecnn.hw.graph.quant_ops import QONNX_DOMAINS
from edgecnn.hw.graph.reader import LayerReader

__all__ = ["ACTIVATIONS", "BIT_PRESERVING", "COMPUTE_OPS", "ELTWISE", "QONNX_DOMAINS", "SIMPLE", "TRANSPARENT",
           "WEIGHT_INPUT", "Layer", "LayerGraph", "load_graph"]


def _fold(layers: list[Layer]) -> list[Layer]:
    """Fold BN and constant scale/shift layers into the Conv/Gemm before them (single consumer only)."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for layer in layers:
        for src in layer.inputs:
            consumers[src].append(layer.name)
    by_name = {layer.name: layer for layer in layers}
    removed: dict[str, str] = {}
    for layer in layers:
        if layer.op not in ("bn", "scale") or len(layer.inputs) != 1:
            continue
        src = removed.get(layer.inputs[0], layer.inputs[0])
        prev = by_name.get(src)
        if prev is None or not prev.is_compute or prev.op == "matmul" or len(consumers[src]) != 1:
            continue
        prev.folded.append(layer.name)
        prev.out_bits = layer.out_bits
        prev.out_shape = layer.out_shape or prev.out_shape
        removed[layer.name] = prev.name
        consumers[prev.name] = consumers.pop(layer.name, [])
    kept = []
    for layer in layers:
        if layer.name in removed:
            continue
        layer.inputs = [_resolve(removed, i) for i in layer.inputs]
        kept.append(layer)
    return kept


def _resolve(removed: dict[str, str], name: str) -> str:
    while name in removed:
        name = removed[name]
    return name


def load_graph(path_or_model: Any, batch: int = 1) -> LayerGraph:
    """Read an ONNX, QDQ or QONNX model (path or ModelProto) into a LayerGraph at the given batch size."""
    if isinstance(path_or_model, LayerGraph):
        return path_or_model
    if not isinstance(batch, int) or batch < 1:
        raise HardwareModelError(f"batch must be a positive integer, got {batch!r}")
    proto, source = load_proto(path_or_model)
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    reader = LayerReader(copy, batch)
    layers = _fold(reader.run())
    if not layers:
        raise HardwareModelError(f"no layers on the data path of '{source}' — is the graph connected to its input?")
    fmt = "qonnx" if reader.saw_qonnx else "qdq" if reader.saw_qdq else "onnx"
    name = Path(source).stem if source != "model" else (proto.graph.name or "model")
    outputs = [reader.producer_name(o.name) for o in proto.graph.output if o.name in reader.data]
    notes = list(reader.notes)
    missing = [layer.name for layer in layers if layer.out_shape is None]
    if missing:
        notes.append(f"{len(missing)} layer(s) without an inferred shape: {', '.join(missing[:5])}")
    return LayerGraph(name=name, layers=layers, batch=batch, input_shapes=reader.input_shapes, outputs=outputs,
                      format=fmt, source=source, notes=notes)
