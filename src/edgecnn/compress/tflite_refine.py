"""AdaRound for the LiteRT INT8 file: weight rounding chosen on TensorFlow's own INT8 grid, before its converter.

TensorFlow's full-integer converter quantizes conv weights per output channel, symmetric, scale = max|w| / 127, and
activations per tensor from min/max over the representative images; it has no fine-tuning of its own. Quark's AdaRound
(with QDrop) can learn each weight's rounding on exactly that grid: Quark's Int8 spec with symmetric per-channel MinMax
weights and asymmetric per-tensor MinMax activations. Its dequantized weights and biases are written back into the
FP32 ONNX; every weight then lies on the converter's grid (the channel's largest weight is kept, so the scale is the
same), and the converter keeps the learned rounding. Chosen on the validation split
(benchmarks/studies/tflite_adaround.py): MobileNetV2's LiteRT file lost 0.54 validation points plain and 0.21 this way.
Quark comes with the [pow2] extra.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.compress.pow2 import _quark
from edgecnn.compress.quantize import _ArrayReader
from edgecnn.quiet import silenced_output

log = logging.getLogger(__name__)


def tflite_grid_config(iterations: int, drop_ratio: float):
    """Quark configuration on TensorFlow's INT8 grid, with AdaRound (QDrop ``drop_ratio``)."""
    _quark()
    from quark.onnx.quantization.config.algorithm import AdaRoundConfig
    from quark.onnx.quantization.config.config import QConfig, QLayerConfig
    from quark.onnx.quantization.config.spec import CalibMethod, Int8Spec, QuantGranularity

    activation = Int8Spec(symmetric=False, calibration_method=CalibMethod.MinMax)
    weight = Int8Spec(symmetric=True, calibration_method=CalibMethod.MinMax, quant_granularity=QuantGranularity.Channel)
    return QConfig(global_config=QLayerConfig(activation=activation, weight=weight), ForceQuantizeNoInputCheck=True,
                   algo_config=[AdaRoundConfig(num_iterations=iterations, learning_rate=0.1, batch_size=16,
                                               drop_ratio=drop_ratio)])


def carry_quantized_weights(fp32_proto, quark_proto, biases: bool = True) -> int:
    """Replace the FP32 model's Conv weights (and with ``biases`` its Conv biases) by Quark's dequantized ones, in
    place; returns how many tensors."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in quark_proto.graph.initializer}
    dequantizers = {n.input[0]: n for n in quark_proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in fp32_proto.graph.node if n.op_type == "Conv"]
    names = {n.input[1] for n in convs} | ({n.input[2] for n in convs if len(n.input) > 2} if biases else set())
    replaced = 0
    for init in fp32_proto.graph.initializer:
        dq = dequantizers.get(init.name + "_quantized")
        if init.name not in names or dq is None:
            continue
        shape = (-1,) + (1,) * (len(init.dims) - 1)
        scale = values[dq.input[1]].astype(np.float64).reshape(shape)
        zero = values[dq.input[2]].astype(np.float64).reshape(shape) if len(dq.input) > 2 else 0.0
        levels = values[dq.input[0]].astype(np.float64)
        init.CopyFrom(numpy_helper.from_array(((levels - zero) * scale).astype(np.float32), init.name))
        replaced += 1
    return replaced


def adaround_for_tflite(fp32_onnx: str | Path, out_onnx: str | Path, calibration: np.ndarray,
                        iterations: int = 500, drop_ratio: float = 0.5) -> dict[str, Any]:
    """Write ``out_onnx``: the FP32 model with AdaRound-rounded weights on TensorFlow's grid; returns what was done."""
    import onnx

    qo = _quark()
    name = onnx.load(str(fp32_onnx)).graph.input[0].name
    reader = _ArrayReader(name, calibration.astype(np.float32), batch=16)
    with silenced_output({"TQDM_DISABLE": "1"}), tempfile.TemporaryDirectory(prefix="edgecnn-quark-") as scratch, \
            contextlib.chdir(scratch):  # Quark writes tables and files into the working directory
        quark_file = Path(scratch) / "quark.onnx"
        qo.ModelQuantizer(tflite_grid_config(iterations, drop_ratio)).quantize_model(
            str(Path(fp32_onnx).resolve()), str(quark_file), reader)
        quark_proto = onnx.load(str(quark_file))
    proto = onnx.load(str(fp32_onnx))
    replaced = carry_quantized_weights(proto, quark_proto)
    onnx.save(proto, str(out_onnx))
    log.info("LiteRT INT8: AdaRound on TensorFlow's grid, %d weight/bias tensors carried into the converter", replaced)
    return {"refine": "adaround", "iterations": iterations, "drop_ratio": drop_ratio, "tensors": replaced}
