"""From a data config to train/val/test tensor sets, with the split recorded in the run directory."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecnn.data.augment import Augmentation
from edgecnn.data.batches import Normalization, TensorSet
from edgecnn.data.datasets import (
    SAMPLE_ROOT,
    class_counts,
    decode_images,
    limit_per_class,
    scan_image_folder,
    stratified_split,
    torchvision_eurosat,
)
from edgecnn.data.options import DataConfig
from edgecnn.errors import EdgeCNNError
from edgecnn.results import CheckpointMeta

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    root: Path
    classes: list[str]
    splits: dict[str, TensorSet]
    files: dict[str, list[str]]
    normalization: Normalization
    augmentation: Augmentation
    image_size: int
    report: dict = field(default_factory=dict)  # counts, skipped and corrupt files, conversions
    channels: int = 3  # what the model takes: 1 (grayscale) or 3 (RGB)
    resize: str = "stretch"  # how non-square images were made square (data.resize)

    def model_meta(self, arch: str, arch_args: dict[str, Any] | None = None, **extra: Any) -> CheckpointMeta:
        """The meta of a model ``arch(**arch_args)`` trained on this data (classes, input size, normalization)."""
        known = {k: extra.pop(k) for k in ("pruned", "pretrained", "experiment") if k in extra}
        return CheckpointMeta(arch=arch, arch_args=dict(arch_args or {}), classes=list(self.classes),
                              input_size=self.image_size, in_channels=self.channels,
                              resize=self.resize,
                              normalization={"mean": list(self.normalization.mean),
                                             "std": list(self.normalization.std)},
                              **known, extra=extra)


def resolve_root(cfg: DataConfig) -> Path:
    if cfg.download:
        if cfg.root is None:
            raise EdgeCNNError("data.download needs data.root: the folder to download EuroSAT into")
        return torchvision_eurosat(cfg.root)
    return Path(cfg.root).expanduser() if cfg.root is not None else SAMPLE_ROOT


def prepare_data(cfg: DataConfig, seed: int, split_file: Path | None = None) -> PreparedData:
    """Scan, decode (cached) and split; reuse ``split_file`` when it exists so reruns see the same split."""
    root = resolve_root(cfg)
    index = scan_image_folder(root)
    decoded = decode_images(index, cfg.image_size, cfg.cache_dir, mapped=cfg.storage == "mmap", resize=cfg.resize)
    channels = resolve_channels(cfg.channels, decoded.all_gray())
    images = decoded.images.as_luma() if channels == 1 else decoded.images
    labels = np.asarray(index.labels)
    keep = limit_per_class(index.labels, cfg.limit_per_class, seed)
    keep = keep[decoded.valid[keep]]
    params = _split_params(cfg, seed)
    recorded = _read_split(split_file, index.files, index.classes, params) if split_file else None
    if recorded is not None:
        files, params = recorded
    else:
        parts = stratified_split(labels[keep], cfg.split.val, cfg.split.test, seed)
        files = {name: [index.files[i] for i in keep[parts[name]]] for name in SPLITS}
    if split_file is not None:  # rewritten when the content changed: every stage's key hashes this file
        _write_split(split_file, root, index.classes, params, decoded.fingerprint, files)
    position = {rel: i for i, rel in enumerate(index.files)}
    splits = {}
    for name in SPLITS:
        idx = torch.tensor([position[rel] for rel in files[name]], dtype=torch.long)
        splits[name] = TensorSet(images.select(idx), torch.as_tensor(labels[idx.numpy()], dtype=torch.long))
    if len(splits["train"]) == 0:
        raise EdgeCNNError(f"no training images left in {root} after the split; add images or lower data.split")
    for name, fraction in (("val", cfg.split.val), ("test", cfg.split.test)):
        if fraction > 0 and len(splits[name]) == 0:
            smallest = min(class_counts(labels[keep], index.classes).items(), key=lambda kv: kv[1])
            raise EdgeCNNError(f"the {name} split ({fraction:g}) got no image: class '{smallest[0]}' has only "
                               f"{smallest[1]} usable image(s); give each class at least 3 images (or raise "
                               "data.limit_per_class)")
    norm = Normalization.named(cfg.normalize, splits["train"].images, channels)
    report = {
        "root": str(root),
        "images_found": len(index.files),
        "non_image_files_skipped": len(index.skipped),
        "corrupt_images_skipped": len(decoded.failures),
        "corrupt_examples": [f for f, _ in decoded.failures[:10]],
        "converted_to_rgb": decoded.converted,
        "grayscale_images": int(decoded.gray[decoded.valid].sum()),
        "channels": channels,
        "channels_setting": cfg.channels,
        "resized": decoded.resized,
        "resize": cfg.resize,
        "decoded_from_cache": decoded.from_cache,
        "fingerprint": decoded.fingerprint,
        "storage": "mmap" if decoded.images.mapped else "memory",
        "counts": {name: class_counts(splits[name].labels.numpy(), index.classes) for name in SPLITS},
    }
    if decoded.failures or index.skipped:
        log.warning("data: %d corrupt image(s) and %d non-image file(s) skipped in %s",
                    len(decoded.failures), len(index.skipped), root)
    aug = Augmentation(**cfg.augment.model_dump())
    return PreparedData(root, index.classes, splits, files, norm, aug, cfg.image_size, report, channels, cfg.resize)


def resolve_channels(setting: str | int, all_gray: bool) -> int:
    """The model's input channels for ``data.channels``: auto is 1 when every image is grayscale, else 3."""
    if setting == "auto":
        return 1 if all_gray else 3
    return int(setting)


def _split_params(cfg: DataConfig, seed: int) -> dict[str, Any]:
    """What draws the split: a split recorded with other values is not reused."""
    return {"seed": seed, "fractions": cfg.split.model_dump(), "limit_per_class": cfg.limit_per_class}


def _write_split(path: Path, root: Path, classes: list[str], params: dict[str, Any], fingerprint: str,
                 files: dict[str, list[str]]) -> None:
    """split.json: the file lists, what drew them and the content fingerprint of the data they name (so a stage
    keyed by this file's hash sees changed images under the same names as new data). Unchanged: not rewritten."""
    record = {"root": str(root.resolve()), "classes": classes, **params, "fingerprint": fingerprint, **files}
    text = json.dumps(record, indent=1)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # several ranks may write the same split at once
    tmp.write_text(text)
    tmp.replace(path)


def _read_split(path: Path, available: list[str], classes: list[str],
                params: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]] | None:
    """(file lists, the settings it records) of the recorded split when it exists and was drawn with ``params``;
    None to draw a new one: a split recorded with another seed, fractions or limit is moved aside to
    ``split.prev-<n>.json``, never reused. A split file without those settings is your own and is kept as it is."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not all(isinstance(record.get(name), list) for name in SPLITS):
            raise ValueError("not a split record")
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # cut short or edited: draw it again (seeded)
        target = _aside(path)
        log.warning("data: %s is unreadable (%s); drawing the split again (the file is kept as %s)", path.name,
                    type(exc).__name__, target.name)
        return None
    changed = [k for k, v in params.items() if k in record and record[k] != v]
    if changed:
        target = _aside(path)
        log.info("data: %s changed since %s was drawn; drawing a new split (the old one is kept as %s)",
                 ", ".join(changed), path.name, target.name)
        return None
    if record.get("classes") != classes:
        raise EdgeCNNError(f"{path} was made for classes {record.get('classes')}, the data folder has {classes}; "
                           "delete the split file (or use a new run name) to split again")
    present = set(available)
    missing = [rel for name in SPLITS for rel in record[name] if rel not in present]
    if missing:
        raise EdgeCNNError(f"{path} lists {len(missing)} file(s) no longer in the data folder (e.g. {missing[0]}); "
                           "delete the split file (or use a new run name) to split again")
    return {name: record[name] for name in SPLITS}, {k: record[k] for k in params if k in record}


def _aside(path: Path) -> Path:
    n = 1
    while (target := path.with_name(f"{path.stem}.prev-{n}{path.suffix}")).exists():
        n += 1
    path.rename(target)
    return target
