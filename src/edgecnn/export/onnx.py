"""ONNX export: FP32 (and FP16) single-file models with a dynamic batch and self-describing metadata.

The exported file carries edgecnn's pre-processing in its metadata (``edgecnn`` key: classes, input size,
mean/std, architecture, precision), so `edgecnn eval MODEL.onnx` and any deployment code can use it alone.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgecnn.errors import EdgeCNNError
from edgecnn.export.options import ExportConfig
from edgecnn.models.profile import input_channels

log = logging.getLogger(__name__)
META_KEY = "edgecnn"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: nn.Module, path: str | Path, input_size: int, meta: dict[str, Any], *, opset: int = 18,
                dynamic_batch: bool = True) -> Path:
    """Export ``model`` (eval mode, fp32; its input channels from its first convolution) to one ONNX file with
    ``meta`` stored as metadata."""
    import onnx

    check_opset(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    example = (torch.randn(2, input_channels(model), input_size, input_size),)
    tmp = path.with_name(path.stem + ".export.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the maintained torch.export-based exporter; weights kept inside the file
            name = next(iter(__import__("inspect").signature(model.forward).parameters))
            torch.onnx.export(model, example, str(tmp), dynamo=True, external_data=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
                              dynamic_shapes={name: {0: torch.export.Dim("batch")}} if dynamic_batch else None)
        except Exception as exc:  # e.g. a model torch.export cannot trace: fall back to the TorchScript exporter
            log.info("dynamo ONNX export failed (%s); using the TorchScript exporter", type(exc).__name__)
            torch.onnx.export(model, example, str(tmp), dynamo=False, opset_version=min(opset, 17),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"},
                                            OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None)
    proto = onnx.load(str(tmp))
    set_metadata(proto, {**meta, "input_size": input_size})
    onnx.save(proto, str(path))
    tmp.unlink(missing_ok=True)
    Path(str(tmp) + ".data").unlink(missing_ok=True)
    return path


def check_opset(opset: int) -> None:
    """A one-line error for an opset outside the exporter's range (the bounds of ExportConfig.opset)."""
    field = ExportConfig.model_fields["opset"]
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("ge", "le") if hasattr(m, k)}
    low, high = bounds["ge"], bounds["le"]
    if not low <= opset <= high:
        raise EdgeCNNError(f"--opset {opset} is not supported: the ONNX exporter writes opsets {low} to {high}; "
                           f"e.g. --opset {field.default}")


def set_metadata(proto, meta: dict[str, Any]) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == META_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """edgecnn's metadata of an ONNX file ({} for ONNX files edgecnn did not write)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise EdgeCNNError(f"{path} is not a readable ONNX file ({type(exc).__name__}); pass a .onnx model") from None
    for prop in proto.metadata_props:
        if prop.key == META_KEY:
            return json.loads(prop.value)
    return {}


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """FP16 weights and compute, fp32 inputs/outputs (onnxconverter-common's converter)."""
    import onnx
    from onnxconverter_common import float16

    proto = onnx.load(str(src))
    with warnings.catch_warnings():  # it warns once per weight too small for fp16 (they round to 0/1e-7)
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(proto, keep_io_types=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    del half.metadata_props[:]
    for k, v in meta.items():
        e = half.metadata_props.add()
        e.key, e.value = k, v
    if META_KEY in meta:
        set_metadata(half, {**json.loads(meta[META_KEY]), "precision": "fp16"})
    onnx.save(half, str(dst))
    return Path(dst)
