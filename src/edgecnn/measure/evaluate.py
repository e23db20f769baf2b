"""Score a model on a tensor set and measure it: accuracy report, params, MACs, size, CPU latency."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn

from edgecnn.config import EvaluateConfig
from edgecnn.data.batches import Normalization, TensorSet
from edgecnn.measure.accuracy import ClassificationReport, classification_report, plot_confusion
from edgecnn.measure.latency import torch_latency
from edgecnn.measure.size import file_size
from edgecnn.models.profile import profile_model
from edgecnn.train.trainer import predict_logits


def score(model: nn.Module, data: TensorSet, norm: Normalization, classes: list[str]) -> ClassificationReport:
    logits = predict_logits(model, data, norm)
    return classification_report(data.labels.numpy(), logits.argmax(1).numpy(), classes)


def measure_model(model: nn.Module, data: TensorSet, norm: Normalization, classes: list[str], input_size: int,
                  artefact: Path, cfg: EvaluateConfig, out_dir: Path, title: str = "") -> dict[str, Any]:
    """All measurements of one variant; writes metrics.json and confusion.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = score(model, data, norm, classes)
    prof = profile_model(model, input_size)
    metrics: dict[str, Any] = {
        "accuracy": report.accuracy, "macro_f1": report.macro_f1, "test_images": report.n,
        "params": prof.params, "macs": prof.macs, "size_bytes": file_size(artefact),
        "per_class_f1": dict(zip(classes, report.f1)),
    }
    for batch in cfg.latency_batches:
        lat = torch_latency(model, input_size, batch, repeats=cfg.latency_repeats, threads=cfg.threads)
        metrics[f"latency_ms_torch_b{batch}"] = round(lat.median_ms, 4)
        metrics[f"latency_p90_ms_torch_b{batch}"] = round(lat.p90_ms, 4)
        metrics[f"throughput_torch_b{batch}"] = round(lat.images_per_s, 2)
        metrics["torch_threads"] = lat.threads
    plot_confusion(report, out_dir / "confusion.png", title)
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "report": report.to_dict(),
                                                      "profile": prof.to_dict()}, indent=1))
    return metrics
