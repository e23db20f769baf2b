"""Integer-only reference executor for INT8 QDQ ONNX models: what an MCU/accelerator port must compute.

It runs the graph the way integer hardware does (the scheme of the seed chapter; Jacob et al., CVPR 2018):
  acc = sum((x_q - z_x) * (w_q - z_w)) + b_q            int8 x int8 -> int32 accumulation, bias in int32
  y_q = clamp(z_y + round(acc * M), q_min, q_max)       M = s_x*s_w/s_y as a fixed-point multiplier
ReLU / Clip clamp the requantized value, MaxPool compares integers, average pooling is an integer sum
requantized by s_x/(count*s_y), Add rescales both inputs with integer multipliers before a rounding shift.
Only the image entering the first QuantizeLinear is float. Two requantization schemes (``requant=``):

* ``"ort"`` (default): the requantization arithmetic of ONNX Runtime's x86-64 integer kernels (MLAS), so a
  port can be checked bit-for-bit against ORT. Conv/Gemm: M is the float32 value s_x*s_w/s_y, a 24-bit
  multiplier M0 with an exponent; acc*M0 is normalised and rounded to 24 significant bits, then shifted with
  round-half-to-even (MlasRequantizeOutput's float32 multiply and round, done with integer operations).
  Add: MLAS's float32 fused multiply-add kernel. GlobalAveragePool: MLAS's integer sum with the float32
  multiplier s_x/(s_y*count); AveragePool and ReduceMean: the float32 arithmetic ORT uses for them
  (QLinearAveragePool dequantizes to float32; ReduceMean has no integer kernel). ORT rescales in float32, so
  this mode is integer in its accumulations and float32-exact in its rescaling.
* ``"q31"``: the integer-only scheme of gemmlowp / TFLite / CMSIS-NN, what an MCU port runs: M0 a 31-bit
  integer, rounding right shift (round half away from zero); Add and Concat rescale their inputs onto a
  common 2^-20 grid with such multipliers first (TFLite's integer add).

Products and sums are exact: the GEMMs run on integer-valued float64 arrays, exact below 2^53 (an
int8 x int8 dot product of length K stays below 2^15 * K).

Here: ``run_int8`` and the check against ONNX Runtime. The executor is hw.intmodel (IntegerModel), the
arithmetic (quantized values, requantization, integer kernels) hw.intarith.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.hw.intarith import IntSimError, QTensor
from edgecnn.hw.intmodel import IntegerModel

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
