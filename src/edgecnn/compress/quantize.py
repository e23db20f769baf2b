"""Precision variants: PyTorch casts (FP64/FP16/BF16) and INT8 post-training quantization with ONNX Runtime.

INT8 deployable format is an ONNX QDQ model (int8 weights, per-channel by default; uint8 or int8
activations) that ONNX Runtime runs with its integer kernels. Calibration reads images of the train split.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgecnn.data.batches import TensorSet, iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError, did_you_mean

log = logging.getLogger(__name__)

FLOAT_DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def calibration_images(data: PreparedData, n: int, seed: int) -> np.ndarray:
    """``n`` pre-processed train images (seeded choice) for INT8 calibration."""
    train = data.splits["train"]
    if n > len(train):
        raise EdgeCNNError(f"INT8 calibration asks for {n} images but the train split has {len(train)}; "
                           f"lower quantize.calib (--calib) to at most {len(train)}")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    subset = TensorSet(train.images[idx], train.labels[idx])
    return torch.cat([x for x, _ in iterate_batches(subset, 256, data.normalization)]).numpy()


def cast_model(model: nn.Module, precision: str | torch.dtype) -> nn.Module:
    """A copy of ``model`` with parameters and buffers in ``precision`` (fp64/fp32/fp16/bf16, or a torch dtype)."""
    if isinstance(precision, str):
        if precision not in FLOAT_DTYPES:
            raise EdgeCNNError(f"unknown float precision '{precision}'{did_you_mean(precision, FLOAT_DTYPES)}")
        precision = FLOAT_DTYPES[precision]
    return copy.deepcopy(model).to(precision).eval()


def resolve_exclusions(exclude: list[str], compute: list[str], names: set[str], where: str) -> list[str]:
    """Map 'first'/'last' to the first/last compute layer and check explicit names (did-you-mean otherwise)."""
    resolved = []
    for item in exclude:
        if item == "first" and compute:
            resolved.append(compute[0])
        elif item == "last" and compute:
            resolved.append(compute[-1])
        elif item and item in names:
            resolved.append(item)
        else:
            raise EdgeCNNError(f"--exclude: no layer '{item}' in "
                               f"{where}{did_you_mean(item, ['first', 'last', *compute])}"
                               " (use first, last or a Conv/Linear layer name)")
    return resolved


def onnx_node_names(path: str | Path, exclude: list[str]) -> list[str]:
    """Resolve 'first'/'last' (first and last Conv/Gemm/MatMul) and explicit node names of an ONNX model."""
    import onnx

    graph = onnx.load(str(path)).graph
    compute = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]
    return resolve_exclusions(exclude, compute, {n.name for n in graph.node}, str(path))


def even_batch(n: int, limit: int = 32) -> int:
    """The largest batch of at most ``limit`` images that divides ``n``: ONNX Runtime's histogram calibrators
    (entropy, percentile) stack every batch's activations into one array, which fails on a shorter last batch."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class _ArrayReader:
    """ONNX Runtime CalibrationDataReader over an array of pre-processed images."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 32) -> None:
        self.batches = [{input_name: images[i:i + batch]} for i in range(0, len(images), batch)]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return self.batches[self.pos - 1]

    def rewind(self) -> None:
        self.pos = 0


def quantize_int8_ptq(fp32_onnx: str | Path, out_path: str | Path, calibration: np.ndarray, *,
                      method: str = "minmax", per_channel: bool = True, symmetric_activations: bool = False,
                      exclude: list[str] | None = None) -> Path:
    """Static INT8 quantization (QDQ) of an FP32 ONNX model, calibrated on ``calibration`` (N, C, H, W)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgecnn.export.onnx import read_metadata, set_metadata

    if method not in CALIBRATION_METHODS:
        raise EdgeCNNError(f"unknown calibration method '{method}'{did_you_mean(method, CALIBRATION_METHODS)}; "
                           f"choose one of {', '.join(CALIBRATION_METHODS)}")
    if len(calibration) == 0:
        raise EdgeCNNError("INT8 calibration needs images; the calibration set is empty")
    out_path = Path(out_path)
    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
    input_name = onnx.load(str(pre)).graph.input[0].name
    nodes_to_exclude = onnx_node_names(pre, exclude or [])
    batch = 32 if method == "minmax" else even_batch(len(calibration))
    quantize_static(
        str(pre), str(out_path), _ArrayReader(input_name, calibration.astype(np.float32), batch),
        quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[method],
        nodes_to_exclude=nodes_to_exclude,
        extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
    )
    pre.unlink(missing_ok=True)
    meta = read_metadata(fp32_onnx)
    proto = onnx.load(str(out_path))
    set_metadata(proto, {**meta, "precision": "int8-ptq", "calibration": {
        "images": int(len(calibration)), "method": method, "per_channel": per_channel,
        "symmetric_activations": symmetric_activations, "excluded_nodes": nodes_to_exclude}})
    onnx.save(proto, str(out_path))
    log.info("INT8 PTQ: %s (%d calibration images, %s, excluded %s)", out_path, len(calibration), method,
             nodes_to_exclude or "none")
    return out_path
