"""Post-processing of QDQ ONNX graphs so that ONNX Runtime fuses them into integer kernels.

torchao's PT2E export keeps Conv/Gemm biases in float. ONNX Runtime's QDQ fusion (DQ -> Conv -> Q into
QLinearConv / ConvInteger paths) wants the bias as int32 with scale = input_scale * weight_scale and zero
point 0, the scheme integer-only hardware uses too. This pass quantizes such biases; the rounding error is
below half an accumulator LSB, far under one output LSB.
"""
from __future__ import annotations

import numpy as np


def quantize_float_biases(proto) -> int:
    """Replace float biases of Conv/Gemm nodes fed by DequantizeLinear input and weight; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    changed = 0
    new_nodes = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) == 3 and node.input[2] in inits:
            x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
            if not (x_dq is not None and w_dq is not None and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
                continue
            if x_dq.input[1] not in inits or w_dq.input[1] not in inits:
                continue
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            s_x = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float64)
            s_w = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float64)
            scale = (s_x * s_w).reshape(-1)
            if scale.size not in (1, bias.size):
                continue
            scale = np.broadcast_to(scale, bias.shape).astype(np.float32)
            q = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
            base = node.input[2]
            graph.initializer.extend([
                numpy_helper.from_array(q, base + "_int32"),
                numpy_helper.from_array(scale, base + "_int32_scale"),
                numpy_helper.from_array(np.zeros_like(q), base + "_int32_zp"),
            ])
            out = base + "_dequantized"
            new_nodes.append(helper.make_node("DequantizeLinear", [base + "_int32", base + "_int32_scale",
                                                                   base + "_int32_zp"],
                                              [out], name=base + "_DequantizeLinear", axis=0))
            node.input[2] = out
            changed += 1
    if new_nodes:
        # Initializer-only DequantizeLinear nodes go first; the graph stays topologically sorted.
        nodes = new_nodes + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in graph.node for i in n.input}
        for init in list(graph.initializer):
            if init.name not in used:
                graph.initializer.remove(init)
        onnx.checker.check_model(proto)
    return changed
