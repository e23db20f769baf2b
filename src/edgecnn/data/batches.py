"""In-memory tensor sets and the batch iterator the trainer and evaluators use.

Images stay uint8 in memory (4x smaller than float); each batch is converted, augmented and normalized on
the fly, which costs far less than decoding JPEGs every epoch.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from edgecnn.data.augment import Augmentation, augment_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TensorSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the [0, 1] scale; stored with every checkpoint and exported file."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_images(cls, images: torch.Tensor) -> Normalization:
        x = images.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return cls(tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist()))

    @classmethod
    def named(cls, name: str, images: torch.Tensor | None = None) -> Normalization:
        if name == "imagenet":
            return cls(IMAGENET_MEAN, IMAGENET_STD)
        if name == "none":
            return cls((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        if images is None:
            raise ValueError("dataset normalization needs the training images")
        return cls.from_images(images)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def prepare_batch(images: torch.Tensor, norm: Normalization, augment: Augmentation | None = None,
                  generator: torch.Generator | None = None, channels_last: bool = False) -> torch.Tensor:
    """uint8 images -> normalized float32 batch, augmented when ``augment`` is given."""
    x = images.float().div_(255)
    if augment is not None and augment.enabled:
        x = augment_batch(x, augment, generator if generator is not None else torch.Generator())
    x = norm.apply(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def iterate_batches(data: TensorSet, batch_size: int, norm: Normalization, *, shuffle: bool = False,
                    seed: int = 0, augment: Augmentation | None = None, channels_last: bool = False,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches; order and augmentation are a pure function of ``seed`` (resumable epochs)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield prepare_batch(data.images[idx], norm, augment, generator, channels_last), data.labels[idx]
