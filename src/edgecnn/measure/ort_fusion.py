"""Exact rewrites of QDQ ONNX graphs so that ONNX Runtime's CPU kernels run them in integer arithmetic.

ONNX Runtime fuses ``DequantizeLinear -> Conv/Gemm -> QuantizeLinear`` into QLinearConv / QGemm only when
(1) the bias is int32 at scale input_scale * weight_scale, (2) on x86 the activations are uint8 (its own int8 ->
uint8 pass only converts adjacent Q -> DQ pairs), and (3) nothing sits between the layer and its output quantizer.
DPU-style files (Quark's power-of-two XINT8: int8 biases, int8 activations, ReLU / ReLU6 kept as nodes) miss all
three, so ONNX Runtime runs them in float, slower than the FP32 model. The passes here keep the arithmetic:
- biases become int32 on the accumulator's grid (exact when the bias grid is a multiple of it, as with power-of-two
  scales; otherwise under half an accumulator step, far below one output step);
- int8 activations become uint8 with the zero point moved by 128 (the same grid and the same saturation bounds);
- an activation ``Relu / Clip(a, b)`` before a quantizer moves behind it as an integer ``Clip(Q(a), Q(b))``: the
  quantizer is monotone, so ``Q(clip(x, a, b)) == clip(Q(x), Q(a), Q(b))`` for every x.
ONNX Runtime's optimizers have no such passes (its ReluQuantFusion only drops a Relu whose quantizer's zero point
is the type's minimum), hence this module. Float-scale files that already fuse come out unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FusionReport:
    """How many biases, activation zero points and activations each pass rewrote."""

    biases: int = 0
    uint8_zero_points: int = 0
    clamps: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.biases or self.uint8_zero_points or self.clamps)


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def quantize_biases(proto) -> int:
    """Conv/Gemm biases (float, or dequantized from a non-int32 integer tensor) fed with dequantized input and
    weight become int32 at scale input_scale * weight_scale, zero point 0; returns how many."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    new_nodes, changed = [], 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) != 3:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq is not None and w_dq is not None and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        if x_dq.input[1] not in inits or w_dq.input[1] not in inits:
            continue
        bias = _bias_value(node.input[2], inits, producer)
        if bias is None:
            continue
        s_x = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float64)
        s_w = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float64)
        scale = (s_x * s_w).reshape(-1)
        if scale.size not in (1, bias.size):
            continue
        scale = np.broadcast_to(scale, bias.shape).astype(np.float32)
        q = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = node.input[2]
        graph.initializer.extend([numpy_helper.from_array(q, base + "_int32"),
                                  numpy_helper.from_array(scale, base + "_int32_scale"),
                                  numpy_helper.from_array(np.zeros_like(q), base + "_int32_zp")])
        out = base + "_int32_dequantized"
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_int32", base + "_int32_scale",
                                                               base + "_int32_zp"], [out],
                                          name=base + "_int32_DequantizeLinear", axis=0))
        node.input[2] = out
        changed += 1
    if new_nodes:  # initializer-only nodes go first: the graph stays topologically sorted
        nodes = new_nodes + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def _bias_value(name: str, inits: dict, producer: dict) -> np.ndarray | None:
    """The float value of a bias that is a float initializer or a DequantizeLinear of a non-int32 initializer."""
    from onnx import numpy_helper

    if name in inits:
        value = numpy_helper.to_array(inits[name])
        return value.astype(np.float64) if value.dtype.kind == "f" else None
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or any(i not in inits for i in dq.input if i):
        return None
    q = numpy_helper.to_array(inits[dq.input[0]])
    if q.dtype == np.int32:
        return None  # already what ONNX Runtime fuses
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    return (q.astype(np.float64) - zero) * scale


def activations_to_uint8(proto) -> int:
    """Activation quantizers with an int8 zero point become uint8 (zero point + 128); returns how many zero points.
    Quantizers that write a graph output or read a graph input keep their type (the file's interface stays)."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    boundary = {v.name for v in graph.input} | {v.name for v in graph.output}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    candidates = {n.input[2] for n in qdq if n.op_type == "QuantizeLinear" and n.input[0] not in inits
                  and len(n.input) > 2 and n.input[2] in inits}
    for node in qdq:  # a zero point shared with a weight or with the file's interface stays int8
        if len(node.input) > 2 and node.input[2] in candidates:
            tensor = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
            if tensor in inits or tensor in boundary:
                candidates.discard(node.input[2])
    changed = 0
    for name in sorted(candidates):
        zero = numpy_helper.to_array(inits[name])
        if zero.dtype != np.int8:
            continue
        inits[name].CopyFrom(numpy_helper.from_array((zero.astype(np.int16) + 128).astype(np.uint8), name))
        changed += 1
    if changed:  # recorded intermediate types are stale now; ONNX Runtime infers them again
        del graph.value_info[:]
    return changed


def _quantize_scalar(value: float, scale: float, zero: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.clip(np.round(np.float64(np.float32(value) / np.float32(scale))) + zero, info.min, info.max)
    return np.array(q, dtype=dtype)


def clamp_after_quantizer(proto) -> int:
    """``Relu / Clip -> QuantizeLinear`` becomes ``QuantizeLinear -> Clip`` on the integers; returns how many."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts = _constants(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {v.name for v in graph.output}
    changed = 0
    for act in list(graph.node):
        if act.op_type not in ("Relu", "Clip") or act.output[0] in outputs:
            continue
        users = consumers.get(act.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or len(users[0].input) < 3:
            continue
        quant = users[0]
        scale, zero = consts.get(quant.input[1]), consts.get(quant.input[2])
        if scale is None or zero is None or scale.size != 1 or zero.size != 1 or zero.dtype.kind not in "iu":
            continue
        if act.op_type == "Relu":
            low, high = 0.0, np.inf
        else:
            bounds = [act.input[i] if len(act.input) > i and act.input[i] else None for i in (1, 2)]
            if any(b is not None and b not in consts for b in bounds):
                continue
            low = float(consts[bounds[0]]) if bounds[0] else -np.inf
            high = float(consts[bounds[1]]) if bounds[1] else np.inf
        q_low = _quantize_scalar(low, scale.item(), int(zero.item()), zero.dtype)
        q_high = _quantize_scalar(high, scale.item(), int(zero.item()), zero.dtype)
        base = act.output[0]
        graph.initializer.extend([numpy_helper.from_array(q_low, base + "_qmin"),
                                  numpy_helper.from_array(q_high, base + "_qmax")])
        quantized = quant.output[0]
        quant.input[0] = act.input[0]
        quant.output[0] = base + "_unclamped"
        act.CopyFrom(helper.make_node("Clip", [quant.output[0], base + "_qmin", base + "_qmax"], [quantized],
                                      name=base + "_integer_clip"))
        changed += 1
    if changed:
        _sort_topologically(graph)
    return changed


def _sort_topologically(graph) -> None:
    known = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered, pending = [], list(graph.node)
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ValueError("the rewritten ONNX graph has a cycle")
        for node in ready:
            known.update(node.output)
        ordered += ready
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def drop_unused(graph) -> None:
    """Remove nodes and initializers that no graph output depends on."""
    needed = {v.name for v in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)


def fuse_for_cpu(proto) -> FusionReport:
    """All three rewrites, in place; the model's inputs, outputs and arithmetic stay the same."""
    import onnx

    if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        return FusionReport()
    report = FusionReport(biases=quantize_biases(proto), uint8_zero_points=activations_to_uint8(proto),
                          clamps=clamp_after_quantizer(proto))
    if report.changed:
        drop_unused(proto.graph)
        onnx.checker.check_model(proto)
    return report
