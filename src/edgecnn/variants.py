"""Precision variants of a trained model: build each deployable artefact, then measure it in its runtime.

| precision | artefact (size on disk)      | accuracy measured in | latency backends          |
|-----------|------------------------------|----------------------|---------------------------|
| fp32      | ONNX fp32                    | PyTorch (+ ORT check)| torch, onnxruntime        |
| fp64/bf16 | safetensors in that dtype    | PyTorch cast         | torch                     |
| fp16      | ONNX fp16 (fp32 I/O)         | PyTorch cast         | onnxruntime               |
| int8-ptq  | ONNX QDQ (ORT static quant)  | ONNX Runtime         | onnxruntime               |
| int8-qat  | ONNX QDQ (torchao PT2E QAT)  | ONNX Runtime         | onnxruntime               |
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from edgecnn.config import ExperimentConfig
from edgecnn.data.batches import iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.accuracy import classification_report, plot_confusion
from edgecnn.measure.latency import torch_latency
from edgecnn.measure.runtimes import file_latency, file_predictor, predict_file
from edgecnn.measure.size import file_size
from edgecnn.models.profile import profile_model
from edgecnn.train.trainer import predict_logits

log = logging.getLogger(__name__)
ONNX_PRECISIONS = {"fp32", "fp16", "int8-ptq", "int8-qat"}
TORCH_PRECISIONS = {"fp32", "fp64", "fp16", "bf16"}


def calibration_images(data: PreparedData, n: int, seed: int) -> np.ndarray:
    """``n`` pre-processed train images (seeded choice) for INT8 calibration."""
    train = data.splits["train"]
    if n > len(train):
        raise EdgeCNNError(f"INT8 calibration asks for {n} images but the train split has {len(train)}; "
                           f"lower quantize.calib (--calib) to at most {len(train)}")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    from edgecnn.data.batches import TensorSet

    subset = TensorSet(train.images[idx], train.labels[idx])
    return torch.cat([x for x, _ in iterate_batches(subset, 256, data.normalization)]).numpy()


def build_artefact(precision: str, model: nn.Module, meta: dict[str, Any], data: PreparedData,
                   cfg: ExperimentConfig, out_dir: Path, fp32_onnx: Path | None) -> Path:
    """Write the deployable file of ``precision`` into ``out_dir`` and return its path."""
    from edgecnn.compress.quantize import FLOAT_DTYPES, cast_model, quantize_int8_ptq
    from edgecnn.export.onnx import convert_fp16, export_onnx
    from edgecnn.train.checkpoint import save_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    size = meta["input_size"]
    if precision == "fp32":
        return export_onnx(model, out_dir / "model.onnx", size, {**meta, "precision": "fp32"}, opset=cfg.export.opset)
    if precision in ("fp64", "bf16"):
        return save_checkpoint(cast_model(model, precision), out_dir / f"model-{precision}.safetensors",
                               {**meta, "precision": precision, "dtype": str(FLOAT_DTYPES[precision])})
    if fp32_onnx is None:
        raise EdgeCNNError(f"{precision} is built from the fp32 ONNX export; keep fp32 in precisions")
    if precision == "fp16":
        return convert_fp16(fp32_onnx, out_dir / "model-fp16.onnx")
    q = cfg.quantize
    if precision == "int8-ptq":
        return quantize_int8_ptq(fp32_onnx, out_dir / "model-int8-ptq.onnx", calibration_images(data, q.calib, cfg.seed),
                                 method=q.method, per_channel=q.per_channel, symmetric_activations=q.symmetric,
                                 exclude=q.exclude)
    if precision == "int8-qat":
        import copy

        from edgecnn.compress.qat import export_qat_onnx, qat_int8

        converted = qat_int8(copy.deepcopy(model), data, epochs=q.qat_epochs, lr=q.qat_lr, batch_size=q.qat_batch_size,
                             exclude=q.exclude, seed=cfg.seed)
        return export_qat_onnx(converted, out_dir / "model-int8-qat.onnx", size, {**meta, "qat": q.model_dump()},
                               opset=cfg.export.opset)
    raise EdgeCNNError(f"unknown precision '{precision}'")


def measure_precision(precision: str, model: nn.Module, artefact: Path, data: PreparedData, cfg: ExperimentConfig,
                      out_dir: Path, fp32_predictions: torch.Tensor | None) -> tuple[dict[str, Any], torch.Tensor]:
    """Accuracy (in the variant's runtime), agreement with fp32, size and latency; returns (metrics, predictions)."""
    from edgecnn.compress.quantize import FLOAT_DTYPES, cast_model

    test, norm, classes = data.splits["test"], data.normalization, data.classes
    size = data.image_size
    ev = cfg.evaluate
    metrics: dict[str, Any] = {}
    torch_model = cast_model(model, precision) if precision in TORCH_PRECISIONS else None
    if torch_model is not None:
        logits = predict_logits(torch_model, test, norm, channels_last=precision != "fp64",
                                dtype=FLOAT_DTYPES[precision])
    else:
        logits = predict_file(file_predictor(artefact, "onnxruntime", ev.threads), test, norm)
    if precision == "fp32" and artefact.suffix == ".onnx":
        onnx_logits = predict_file(file_predictor(artefact, "onnxruntime", ev.threads), test, norm)
        metrics["onnx_max_abs_diff"] = float((onnx_logits - logits).abs().max())
        metrics["accuracy_onnxruntime"] = float((onnx_logits.argmax(1) == test.labels).float().mean())
    preds = logits.argmax(1)
    report = classification_report(test.labels.numpy(), preds.numpy(), classes)
    prof = profile_model(model, size)
    metrics.update({"accuracy": report.accuracy, "macro_f1": report.macro_f1, "test_images": report.n,
                    "params": prof.params, "macs": prof.macs, "size_bytes": file_size(artefact),
                    "per_class_f1": dict(zip(classes, report.f1))})
    if fp32_predictions is not None:
        metrics["agreement_with_fp32"] = float((preds == fp32_predictions).float().mean())
    for backend in ev.backends:
        runs_here = (backend == "torch" and torch_model is not None and precision != "fp16") or (
            backend != "torch" and artefact.suffix == ".onnx")
        if not runs_here:
            continue
        for batch in ev.latency_batches:
            if backend == "torch":
                lat = torch_latency(torch_model, size, batch, repeats=ev.latency_repeats, threads=ev.threads,
                                    channels_last=precision != "fp64", dtype=FLOAT_DTYPES[precision])
            else:
                threads = ev.threads or torch.get_num_threads()
                predict = file_predictor(artefact, backend, threads)
                lat = file_latency(predict, (1, 3, size, size), batch, backend, threads, repeats=ev.latency_repeats)
            metrics[f"latency_ms_{backend}_b{batch}"] = round(lat.median_ms, 4)
            metrics[f"latency_p90_ms_{backend}_b{batch}"] = round(lat.p90_ms, 4)
            metrics[f"throughput_{backend}_b{batch}"] = round(lat.images_per_s, 2)
    plot_confusion(report, out_dir / "confusion.png", f"{precision}: accuracy {report.accuracy:.2%}")
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "report": report.to_dict(),
                                                      "profile": prof.to_dict()}, indent=1))
    return metrics, preds
