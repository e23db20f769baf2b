"""Data matching a trained model: its run's recorded split, or every image of a folder labelled by its classes."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgecnn.data.batches import Normalization, TensorSet
from edgecnn.data.options import DataConfig
from edgecnn.data.prepare import PreparedData, prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.results import CheckpointMeta


def _run_split(checkpoint: Path) -> Path | None:
    """The split.json of the run a checkpoint belongs to (runs/NAME/train/best.safetensors -> runs/NAME)."""
    candidate = Path(checkpoint).resolve().parent.parent / "split.json"
    return candidate if candidate.exists() else None


def data_for_checkpoint(checkpoint: Path, meta: CheckpointMeta, data: Path | None, seed: int = 0) -> PreparedData:
    """Train/val/test data matching a checkpoint (``meta``: its CheckpointMeta): its run's recorded split, or a
    fresh split of ``data``; pre-processed as the model expects."""
    split = _run_split(checkpoint)
    if data is None:
        if split is None:
            raise EdgeCNNError(f"{checkpoint} is not inside a run directory with a split.json; pass --data FOLDER "
                               "(calibration and scoring images)")
        data = Path(json.loads(split.read_text())["root"])
    same_root = split is not None and json.loads(split.read_text())["root"] == str(Path(data).resolve())
    config = DataConfig(root=data, image_size=meta.input_size, channels=meta.in_channels,
                        resize=meta.resize)
    prepared = prepare_data(config, seed,
                            split_file=split if same_root else None)
    if prepared.classes != meta.classes:
        raise EdgeCNNError(f"the classes of {data} ({', '.join(prepared.classes)}) differ from the model's "
                           f"({', '.join(meta.classes)}); use the dataset the model was trained on")
    norm = meta.normalization
    return replace(prepared, normalization=Normalization(tuple(norm["mean"]), tuple(norm["std"])))


def folder_tensors(folder: str | Path, classes: list[str], input_size: int, channels: int = 3,
                   resize: str = "stretch") -> tuple[TensorSet, int]:
    """All readable images of an ImageFolder as a TensorSet labelled with the model's class indices (matched by
    name), pre-processed as the model's data was (``channels``, ``resize``); returns (tensors, number of skipped
    files). A folder class the model does not know is an error."""
    from edgecnn.data.datasets import decode_images, scan_image_folder

    index = scan_image_folder(folder)
    unknown = [c for c in index.classes if c not in classes]
    if unknown:
        raise EdgeCNNError(f"class folder(s) {', '.join(unknown)} in {folder} are not classes of the model "
                           f"({', '.join(classes)}); remove them or use a model trained on them")
    decoded = decode_images(index, input_size, resize=resize)
    images = decoded.images.as_luma() if channels == 1 else decoded.images
    remap = np.array([classes.index(c) for c in index.classes])
    keep = np.flatnonzero(decoded.valid)
    labels = torch.as_tensor(remap[np.asarray(index.labels)[keep]], dtype=torch.long)
    return TensorSet(images.select(keep), labels), len(decoded.failures) + len(index.skipped)
