"""Public verbs that combine stages: train alone, evaluate a checkpoint on any ImageFolder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecnn.config import ExperimentConfig
from edgecnn.data.batches import Normalization, TensorSet
from edgecnn.data.datasets import decode_images, scan_image_folder
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.accuracy import classification_report


def train(cfg: ExperimentConfig, *, resume: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Run the data and train stages of ``cfg`` (the same code path as `edgecnn run`); returns the fit record."""
    from edgecnn.data.prepare import prepare_data
    from edgecnn.pipeline import prepare_run_dir, train_stage

    run_dir = prepare_run_dir(cfg)
    data = prepare_data(cfg.data, cfg.seed, run_dir / "split.json")
    fit, _ = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
    return fit


def evaluate_folder(checkpoint: str | Path, folder: str | Path, batch_size: int = 256,
                    cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Score a checkpoint on every image of an ImageFolder; the folder's classes are matched by name."""
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.train.trainer import predict_logits

    model, meta = load_checkpoint(checkpoint)
    index = scan_image_folder(folder)
    model_classes: list[str] = meta["classes"]
    unknown = [c for c in index.classes if c not in model_classes]
    if unknown:
        raise EdgeCNNError(f"class folder(s) {', '.join(unknown)} in {folder} are not classes of the model "
                           f"({', '.join(model_classes)}); remove them or use a model trained on them")
    decoded = decode_images(index, meta["input_size"], cache_dir)
    remap = np.array([model_classes.index(c) for c in index.classes])
    keep = np.flatnonzero(decoded.valid)
    labels = torch.as_tensor(remap[np.asarray(index.labels)[keep]], dtype=torch.long)
    data = TensorSet(decoded.images[torch.as_tensor(keep)], labels)
    norm = Normalization(tuple(meta["normalization"]["mean"]), tuple(meta["normalization"]["std"]))
    logits = predict_logits(model, data, norm, batch_size=batch_size)
    report = classification_report(labels.numpy(), logits.argmax(1).numpy(), model_classes)
    return {**report.to_dict(), "per_class": report.per_class(), "checkpoint": str(checkpoint),
            "data": str(folder), "skipped_files": len(decoded.failures) + len(index.skipped)}
