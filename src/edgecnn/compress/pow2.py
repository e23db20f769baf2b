"""Power-of-two INT8 for the Xilinx DPU and AMD's NPU flow, built with AMD Quark's ONNX quantizer (XINT8).

XINT8 is symmetric INT8 with power-of-two scales, per tensor, for weights and activations (Quark's
``XINT8_QCONFIG``; MinMSE calibration). That is the arithmetic of the DPU: every requantization is a shift, so
the file edgecnn scores in ONNX Runtime is the model the DPU runs (``edgecnn.intsim.run`` checks it with
shifts only). Where plain calibration loses accuracy, Quark's AdaRound or AdaQuant fast fine-tuning adjusts
the rounding / weights on the calibration images (``quantize.pow2_refine``). Cross-layer equalization
(``quantize.pow2_cle``, Nagel et al. 2019) first evens out per-channel weight ranges across consecutive convs,
the usual fix for per-tensor scales on depthwise layers; Quark then turns ReLU6 between equalized convs into
ReLU (what makes the rescaling exact), and the file's accuracy is measured with that change. The file stays in
Quark's DPU form (int8 biases, ReLU nodes); ONNX Runtime on the CPU runs it in integer kernels after the exact
rewrites of ``edgecnn.measure.ort_fusion``. Quark is an optional extra.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from edgecnn.compress.quantize import _ArrayReader, onnx_node_names
from edgecnn.errors import EdgeCNNError
from edgecnn.quiet import silenced_output

log = logging.getLogger(__name__)

Refine = Literal["none", "adaround", "adaquant"]  # "auto" is decided by the int8-pow2 handler
EXTRA = "pip install 'edgecnn[pow2]'"


def _quark():
    os.environ.setdefault("QUARK_LOG_LEVEL", "error")
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # quark's import makes torch log about CUDA and pytree enums
    try:
        import quark.onnx as qo
    except ImportError as exc:
        raise EdgeCNNError(f"power-of-two INT8 needs AMD Quark ({exc.name} is missing): {EXTRA}") from None
    finally:
        torch_log.setLevel(level)
    return qo


def pow2_config(refine: Refine = "none", iterations: int = 500, exclude: list[str] | None = None,
                cle: bool = False, drop_ratio: float = 1.0):
    """Quark's XINT8 configuration: cross-layer equalization first when ``cle``, then AdaRound / AdaQuant
    fine-tuning when ``refine`` asks for it. ``drop_ratio`` < 1 is QDrop: each fine-tuned layer sees the quantized
    model's input with that probability per value and the float model's otherwise (1.0: always the quantized one)."""
    _quark()
    from quark.onnx.quantization.config.algorithm import AdaQuantConfig, AdaRoundConfig, CLEConfig
    from quark.onnx.quantization.config.config import QConfig, QLayerConfig
    from quark.onnx.quantization.config.spec import XInt8Spec

    algos = [CLEConfig()] if cle else []
    if refine == "adaround":
        algos.append(AdaRoundConfig(num_iterations=iterations, learning_rate=0.1, batch_size=16,
                                    drop_ratio=drop_ratio))
    elif refine == "adaquant":
        algos.append(AdaQuantConfig(num_iterations=iterations, learning_rate=1e-5, batch_size=16,
                                    drop_ratio=drop_ratio))
    elif refine != "none":
        raise EdgeCNNError(f"unknown pow2 refinement '{refine}'; choose none, adaround or adaquant")
    return QConfig(global_config=QLayerConfig(activation=XInt8Spec(), weight=XInt8Spec()), exclude=exclude or [],
                   algo_config=algos, ForceQuantizeNoInputCheck=True)


def quantize_int8_pow2(fp32_onnx: str | Path, out_path: str | Path, calibration: np.ndarray, *,
                       refine: Refine = "none", iterations: int = 500, exclude: list[str] | None = None,
                       auto: dict | None = None, cle: bool = False, drop_ratio: float = 1.0) -> Path:
    """Power-of-two symmetric INT8 QDQ file (Quark XINT8) of an FP32 ONNX model, calibrated on ``calibration``."""
    import onnx

    from edgecnn.export.onnx import read_metadata, set_metadata

    qo = _quark()
    if len(calibration) == 0:
        raise EdgeCNNError("INT8 calibration needs images; the calibration set is empty")
    out_path = Path(out_path)
    input_name = onnx.load(str(fp32_onnx)).graph.input[0].name
    nodes_to_exclude = onnx_node_names(fp32_onnx, exclude or [])
    config = pow2_config(refine, iterations, nodes_to_exclude, cle, drop_ratio)
    reader = _ArrayReader(input_name, calibration.astype(np.float32), batch=16)
    # Quark prints tables and progress bars, and writes quantized_info.csv into the working directory: run it in a
    # throw-away one so the user's folder stays clean
    with silenced_output({"TQDM_DISABLE": "1"}), tempfile.TemporaryDirectory(prefix="edgecnn-quark-") as scratch, \
            contextlib.chdir(scratch):
        qo.ModelQuantizer(config).quantize_model(str(Path(fp32_onnx).resolve()), str(out_path.resolve()), reader)
    proto = onnx.load(str(out_path))
    scales = pow2_scales(proto)
    if not scales["all_pow2"]:
        raise EdgeCNNError(f"Quark wrote non-power-of-two scales into {out_path} — check the quark version")
    meta = read_metadata(fp32_onnx)
    set_metadata(proto, {**meta, "precision": "int8-pow2", "calibration": {
        "images": int(len(calibration)), "method": "quark-xint8 (MinMSE, power-of-two, per-tensor, symmetric)",
        "cle": cle, "refine": refine, "iterations": iterations if refine != "none" else 0,
        **({"drop_ratio": drop_ratio} if refine != "none" and drop_ratio < 1 else {}),
        "excluded_nodes": nodes_to_exclude, **({"auto": auto} if auto else {})}})
    onnx.save(proto, str(out_path))
    steps = "".join(f" + {step}" for step, on in (("CLE", cle), (refine, refine != "none")) if on)
    log.info("INT8 pow2 (Quark XINT8%s): %s, %d scales", steps, out_path, scales["count"])
    return out_path


def validation_drop_points(model, path: Path, data, backend: str = "onnxruntime") -> float | None:
    """Points of validation accuracy the INT8 file (run on ``backend``) loses against the float model (None without
    a validation split)."""
    from edgecnn.measure.predict import predict_logits
    from edgecnn.measure.runtimes import file_predictor, predict_file

    val = data.splits.get("val")
    if val is None or len(val) == 0:
        return None
    ref = predict_logits(model, val, data.normalization).argmax(1)
    got = predict_file(file_predictor(path, backend), val, data.normalization).argmax(1)
    labels = val.labels
    return round(100 * ((ref == labels).float().mean().item() - (got == labels).float().mean().item()), 3)


def pow2_scales(proto) -> dict[str, object]:
    """The (de)quantization scales of a QDQ model and whether every one is an exact power of two."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    values = [numpy_helper.to_array(inits[n.input[1]]).reshape(-1) for n in proto.graph.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits]
    flat = np.concatenate(values).astype(np.float64) if values else np.zeros(0)
    frac, _ = np.frexp(flat)
    return {"count": int(flat.size), "all_pow2": bool(flat.size) and bool(np.all(frac == 0.5))}
