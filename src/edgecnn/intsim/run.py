"""Integer-only reference executor for INT8 QDQ ONNX models: what an MCU/accelerator port must compute.

Here: ``run_int8`` and the check against ONNX Runtime; the executor is hw.intmodel, the arithmetic hw.intarith.
The two requantization schemes (ONNX Runtime's MLAS arithmetic, and gemmlowp/TFLite q31) are described in
docs/intsim.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.intsim.arith import IntSimError, QTensor
from edgecnn.intsim.model import IntegerModel

__all__ = ["IntSimError", "IntegerModel", "compare_with_onnxruntime", "run_int8"]


def run_int8(model: str | Path | Any, x: np.ndarray, batch: int = 64, requant: str = "ort") -> np.ndarray:
    """The model's (dequantized) first output for images x (N, C, H, W), computed integer-only."""
    sim = model if isinstance(model, IntegerModel) else IntegerModel(model, requant=requant)
    return np.concatenate([sim(x[i:i + batch]) for i in range(0, len(x), batch)])


def _last_quantized(graph, output: str) -> str | None:
    """The QuantizeLinear output feeding the op that makes a float graph output (e.g. the final Gemm's input)."""
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(output)
    for _ in range(8):
        if node is None:
            return None
        if node.op_type == "QuantizeLinear":
            return node.output[0]
        node = producer.get(node.input[0])
    return None


def compare_with_onnxruntime(model: str | Path, inputs: np.ndarray, batch: int = 64,
                             requant: str = "ort") -> dict[str, Any]:
    """Run intsim and ONNX Runtime on ``inputs`` and compare the last integer tensor and the top-1 class.

    For a quantized output the compared values are the output's int8/uint8 values (ORT's dequantized output
    is mapped back with the same scale and zero point). For a float output made by a final Gemm/MatMul, the
    compared values are the int8/uint8 input of that layer (exposed as an extra ORT output), and top-1 uses
    the float logits of both.
    """
    import onnx
    import onnxruntime as ort

    sim = IntegerModel(model, requant=requant)
    proto = onnx.load(str(model))
    out_name = sim.output_names[0]
    probe = sim.run(np.asarray(inputs[:1], np.float32))[out_name]
    extra = None
    if not isinstance(probe, QTensor):
        extra = _last_quantized(proto.graph, out_name)
        if extra is None:
            raise IntSimError("the model's float output is not fed by a quantized tensor — nothing integer to compare")
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(extra))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    diffs, top_sim, top_ort = [], [], []
    for i in range(0, len(inputs), batch):
        xb = np.asarray(inputs[i:i + batch], np.float32)
        got = sim.run(xb, keep=(extra,) if extra else ())
        ref = sess.run(None, {in_name: xb})
        out = got[out_name]
        if extra is None:
            q_ref = np.rint(ref[0].astype(np.float64) / out.scale + out.zp).astype(np.int64)
            diffs.append(np.abs(out.q - q_ref).reshape(-1))
        else:
            diffs.append(np.abs(got[extra].q - ref[-1].astype(np.int64)).reshape(-1))
        top_sim.append(out.real().reshape(len(xb), -1).argmax(axis=1))
        top_ort.append(ref[0].reshape(len(xb), -1).argmax(axis=1))
    d = np.concatenate(diffs)
    ts, to = np.concatenate(top_sim), np.concatenate(top_ort)
    return {"images": int(len(inputs)), "values": int(d.size), "requant": requant,
            "compared": "int8 output" if extra is None else f"int8 input of the float output layer ({extra})",
            "identical": float(np.mean(d == 0)), "within_1_lsb": float(np.mean(d <= 1)), "max_lsb_diff": int(d.max()),
            "top1_agreement": float(np.mean(ts == to))}
