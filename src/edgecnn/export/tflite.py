"""Fully-integer LiteRT (TFLite) INT8 files for TPU / microcontroller flows, and their edgecnn metadata.

Path: the FP32 ONNX export -> onnx2tf (TensorFlow SavedModel, NHWC) -> TensorFlow's own TFLite converter with
full-integer post-training quantization (int8 kernels only, per-channel int8 weights, activations calibrated
on a representative set of train images). The file runs in the LiteRT interpreter (``ai-edge-litert``).

Why not litert-torch (PyTorch -> LiteRT without TensorFlow): its converter pins xdsl 0.28, which pins
typing-extensions < 4.13, while onnx 1.22 (pinned by edgecnn) needs >= 4.15; pip cannot install the two
together, and its older releases need torch 2.9. onnx2tf + TensorFlow install beside the pins.

A .tflite file has no room edgecnn can write metadata into without TensorFlow's metadata tools, so the
classes, input size and normalization sit beside it in ``<file>.json`` (``edgecnn eval`` reads it).
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError
from edgecnn.quiet import silenced_output

log = logging.getLogger(__name__)
EXTRA = "pip install 'edgecnn[tflite]'"


def tflite_meta_path(path: str | Path) -> Path:
    """The metadata file that travels with a .tflite file."""
    return Path(str(path) + ".json")


def read_tflite_metadata(path: str | Path) -> dict[str, Any]:
    """The edgecnn metadata of a .tflite file ({} when its .json companion is missing)."""
    meta = tflite_meta_path(path)
    if not meta.is_file():
        return {}
    try:
        record = json.loads(meta.read_text())
    except (ValueError, OSError) as exc:  # cut short or edited: a one-line error, not a JSONDecodeError
        raise EdgeCNNError(f"{meta} is not readable edgecnn metadata ({type(exc).__name__}); export the .tflite "
                           "again (`edgecnn quantize CHECKPOINT --precision tflite-int8`)") from None
    if not isinstance(record, dict):
        raise EdgeCNNError(f"{meta} is not edgecnn metadata (a JSON mapping); export the .tflite again")
    return record


def _quiet_tensorflow():
    """TensorFlow and onnx2tf print banners, model summaries and progress (some from C++, past sys.stderr);
    edgecnn logs one line instead."""
    return silenced_output({"TF_CPP_MIN_LOG_LEVEL": "3"})


def _import_converters():
    # TensorFlow's bundled native libraries crash the process when Triton (PyTorch's compiler) is loaded after
    # them; loading Triton first, when it is installed, avoids it.
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401
    try:
        with _quiet_tensorflow():
            import onnx2tf
            import tensorflow as tf
    except ImportError as exc:
        raise EdgeCNNError(f"LiteRT INT8 files need onnx2tf and TensorFlow ({exc.name} is missing): {EXTRA}") from None
    return onnx2tf, tf


def zero_padded_maxpools(proto) -> int:
    """Rewrite padded MaxPools that follow a ReLU as Pad(0) + unpadded MaxPool, in place; returns how many.

    Exact: after a ReLU every value is >= 0, so a zero border never wins a max. Why: TensorFlow lowers a padded
    max pool to PADV2(-inf) + MAX_POOL, and LiteRT 2.x aborts while preparing an int8 PADV2 whose pooled output
    also feeds a residual ADD (ResNet's stem); a plain int8 PAD has no such problem.
    """
    from onnx import helper, numpy_helper

    producer = {o: n for n in proto.graph.node for o in n.output}
    changed = 0
    nodes = list(proto.graph.node)
    for node in nodes:
        if node.op_type != "MaxPool":
            continue
        attrs = {a.name: a for a in node.attribute}
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        src = producer.get(node.input[0])
        if not any(pads) or len(pads) != 4 or src is None or src.op_type != "Relu":
            continue
        top, left, bottom, right = pads
        name = f"{node.name or node.output[0]}_zero_pad"
        pads_init = numpy_helper.from_array(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), name + "_pads")
        proto.graph.initializer.append(pads_init)
        pad = helper.make_node("Pad", [node.input[0], pads_init.name], [name + "_out"], name=name, mode="constant")
        proto.graph.node.insert(list(proto.graph.node).index(node), pad)
        node.input[0] = pad.output[0]
        attrs["pads"].ints[:] = [0, 0, 0, 0]
        changed += 1
    return changed


def export_tflite_int8(fp32_onnx: str | Path, out_path: str | Path, calibration: np.ndarray,
                       meta: dict[str, Any] | None = None, *, int8_io: bool = False,
                       refinement: dict[str, Any] | None = None) -> Path:
    """Full-integer INT8 .tflite of an FP32 ONNX model, calibrated on ``calibration`` (N, C, H, W, normalized).

    ``int8_io``: int8 input and output tensors (a microcontroller's choice) instead of float32 ones.
    ``refinement``: what was done to the weights before conversion (compress.tflite_refine), for the metadata.
    """
    if len(calibration) == 0:
        raise EdgeCNNError("INT8 calibration needs images; the calibration set is empty")
    onnx2tf, tf = _import_converters()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nhwc = np.ascontiguousarray(np.transpose(calibration.astype(np.float32), (0, 2, 3, 1)))

    def representative():
        for i in range(len(nhwc)):
            yield [nhwc[i:i + 1]]

    import onnx

    proto = onnx.load(str(fp32_onnx))
    rewritten = zero_padded_maxpools(proto)
    with tempfile.TemporaryDirectory(prefix="edgecnn-tflite-") as tmp, _quiet_tensorflow():
        source = Path(tmp) / "model.onnx"
        onnx.save(proto, str(source))
        saved_model = Path(tmp) / "saved_model"
        onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(saved_model), non_verbose=True,
                        not_use_onnxsim=True, copy_onnx_input_output_names_to_tflite=True,
                        output_signaturedefs=True)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8 if int8_io else tf.float32
        converter.inference_output_type = tf.int8 if int8_io else tf.float32
        out_path.write_bytes(converter.convert())
    converter_name = f"onnx2tf {getattr(onnx2tf, '__version__', '?')} + TensorFlow {tf.__version__}"
    info = {**(meta or {}), "precision": "tflite-int8", "layout": "NHWC", "int8_io": int8_io,
            "calibration": {"images": int(len(calibration)), "method": "TFLite full-integer PTQ (representative set)",
                            "converter": converter_name, **({"refine": "none"} | (refinement or {}))}}
    tflite_meta_path(out_path).write_text(json.dumps(info, indent=1))
    log.info("LiteRT INT8: %s (%d calibration images%s)", out_path, len(calibration),
             f", {rewritten} padded max-pool(s) after a ReLU zero-padded" if rewritten else "")
    return out_path
