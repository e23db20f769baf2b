"""Measure one precision variant in its own runtime: accuracy (overall, per class), agreement with fp32, params,
MACs, size on disk and latency/throughput on every backend that can run its file."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgecnn import columns as col
from edgecnn.compress.quantize import cast_model
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.accuracy import classification_report, plot_confusion
from edgecnn.measure.latency import torch_latency_layouts
from edgecnn.measure.options import EvaluateConfig
from edgecnn.measure.predict import predict_logits, require_finite
from edgecnn.measure.runtimes import file_latency, file_predictor, predict_file
from edgecnn.measure.size import file_size
from edgecnn.models.profile import profile_model
from edgecnn.results import CheckpointMeta
from edgecnn.variants.precisions import BuildJob, Precision, precision_for

#: The file type each file runtime reads.
FILE_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".onnx", "litert": ".tflite"}


#: Bump when measuring changes what a cached variant's figures would be (how a runtime executes a file, a metric's
#: definition): finished variants are then measured again on the next run, without being rebuilt.
#: 2: ONNX Runtime on the CPU runs DPU-style QDQ files in integer kernels (edgecnn.measure.ort_fusion).
MEASUREMENT_VERSION = 2


def load_source(checkpoint: Path, tta: str = "none") -> tuple[nn.Module, CheckpointMeta]:
    """The trained model a variant is built from, with its meta; with test-time views (``export.tta``) the model is
    wrapped so every file of it averages the views (the checkpoint stays the single-view network)."""
    from edgecnn.models.views import with_views
    from edgecnn.train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    if tta != "none":
        model, meta = with_views(model, tta), replace(meta, extra={**meta.extra, "tta": tta})
    return model, meta


def _gpu_latency(precision: Precision, torch_model: nn.Module | None, artefact: Path, size: int,
                 ev: EvaluateConfig, channels: int = 3) -> dict[str, Any]:
    """On a machine with a CUDA GPU, the variant's GPU rows beside its CPU rows: PyTorch CUDA in the variant's dtype
    (fp32/fp16/bf16) and ONNX Runtime's CUDA provider for its ONNX file; an absent provider is an "n/a (why)"
    entry. Nothing on a machine without a GPU."""
    from edgecnn.devices import cuda_missing_reason
    from edgecnn.measure.gpu import TORCH_CUDA, torch_cuda_latency
    from edgecnn.measure.runtimes import RuntimeUnavailable

    if cuda_missing_reason() is not None:
        return {}
    out: dict[str, Any] = {}
    by_dtype = {dtype: name for name, dtype in TORCH_CUDA.items()}
    for batch in ev.latency_batches:
        rows = []
        if torch_model is not None and precision.dtype in by_dtype:
            rows.append(torch_cuda_latency(torch_model, size, batch, by_dtype[precision.dtype],
                                           repeats=ev.latency_repeats))
        if artefact.suffix == ".onnx" and "onnxruntime" in precision.latency_backends:
            try:
                predict = file_predictor(artefact, "onnxruntime-cuda")
                rows.append(file_latency(predict, (1, channels, size, size), batch, "onnxruntime-cuda", 1,
                                         repeats=ev.latency_repeats))
            except RuntimeUnavailable as exc:
                out[col.runtime_unavailable("onnxruntime-cuda")] = f"n/a ({exc})"
        for lat in rows:
            if lat.unavailable:
                out[col.runtime_unavailable(lat.backend)] = f"n/a ({lat.unavailable})"
                continue
            out[col.latency(lat.backend, batch)] = round(lat.median_ms, 4)
            out[col.throughput(lat.backend, batch)] = round(lat.images_per_s, 2)
    return out


def measure_variant(precision: Precision, model: nn.Module, artefact: Path, data: PreparedData, ev: EvaluateConfig,
                    out_dir: Path, fp32_predictions: torch.Tensor | None) -> tuple[dict[str, Any], torch.Tensor]:
    """Accuracy (in the variant's runtime), agreement with fp32, size and latency; returns (metrics, predictions)."""
    test, norm, classes, size = data.splits["test"], data.normalization, data.classes, data.image_size
    metrics: dict[str, Any] = {}
    torch_model = cast_model(model, precision.dtype) if precision.dtype is not None else None
    channels_last = precision.dtype != torch.float64
    if torch_model is not None:
        logits = predict_logits(torch_model, test, norm, channels_last=channels_last, dtype=precision.dtype)
    else:  # the file in its own runtime (ONNX Runtime, or LiteRT for a .tflite)
        logits = predict_file(file_predictor(artefact, precision.runtime, ev.threads), test, norm)
    require_finite(logits, f"the {precision.name} variant ({artefact.name})")
    if torch_model is not None and artefact.suffix == ".onnx" and precision.dtype == torch.float32:
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
    native = [precision.runtime] if precision.runtime == "litert" else []  # a .tflite is always timed in LiteRT
    for backend in dict.fromkeys([*ev.backends, *native]):
        runs_here = backend in precision.latency_backends and (
            torch_model is not None if backend == "torch" else artefact.suffix == FILE_SUFFIX.get(backend, ".onnx"))
        if not runs_here:
            continue
        for batch in ev.latency_batches:
            if backend == "torch" and torch_model is not None:  # runs_here: there is one
                timing = torch_latency_layouts(torch_model, size, batch, layout=ev.layout, dtype=precision.dtype,
                                               repeats=ev.latency_repeats, threads=ev.threads)
                lat = timing.result
                metrics[col.torch_layout(batch)] = timing.layout
                if len(timing.median_ms) > 1:
                    metrics[col.torch_latency_by_layout(batch)] = timing.median_ms
            else:
                threads = ev.threads or torch.get_num_threads()
                predict = file_predictor(artefact, backend, threads)
                shape = (1, data.channels, size, size)
                lat = file_latency(predict, shape, batch, backend, threads, repeats=ev.latency_repeats)
            metrics[col.latency(backend, batch)] = round(lat.median_ms, 4)
            metrics[col.latency_p90(backend, batch)] = round(lat.p90_ms, 4)
            metrics[col.throughput(backend, batch)] = round(lat.images_per_s, 2)
    metrics.update(_gpu_latency(precision, torch_model, artefact, size, ev, data.channels))
    plot_confusion(report, out_dir / "confusion.png", f"{precision.name}: accuracy {report.accuracy:.2%}")
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "report": report.to_dict(),
                                                      "profile": prof.to_dict()}, indent=1))
    return metrics, preds


def view_gain(model: nn.Module, data: PreparedData) -> dict[str, float]:
    """Validation accuracy of a model with test-time views and of its single-view network: the evidence for keeping
    the views, read from the validation split (the test split decides nothing)."""
    from edgecnn.models.views import TestTimeViews

    val = data.splits["val"]
    single = model.model if isinstance(model, TestTimeViews) else model
    out = {}
    for key, net in (("val_accuracy", model), ("val_accuracy_one_view", single)):
        logits = predict_logits(net, val, data.normalization)
        out[key] = float((logits.argmax(1) == val.labels).float().mean())
    return out


def make_variant(job: BuildJob, ev: EvaluateConfig, fp32_predictions: torch.Tensor | None = None
                 ) -> tuple[Path, dict[str, Any], torch.Tensor | None]:
    """Build ``job.precision`` with its registered handler and measure it: (artefact, metrics, test predictions;
    None for handlers that measure themselves)."""
    precision = precision_for(job.precision, job.options.lowbit)
    if precision.needs_fp32_onnx and job.fp32_onnx is None:
        raise EdgeCNNError(f"{job.precision} is built from the fp32 ONNX export; keep fp32 in precisions")
    job.out_dir.mkdir(parents=True, exist_ok=True)
    built = precision.build(job)
    if built.metrics is not None:
        return built.artefact, built.metrics, None
    metrics, preds = measure_variant(precision, job.model, built.artefact, job.data, ev, job.out_dir, fp32_predictions)
    return built.artefact, metrics, preds
