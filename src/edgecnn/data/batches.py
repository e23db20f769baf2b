"""Image sets and the batch iterator the trainer and evaluators use.

Images stay uint8 (4x smaller than float), in memory or memory-mapped from the cache file; each batch is moved to
the training device as uint8 and converted, augmented and normalized there, which costs far less than decoding
JPEGs every epoch and keeps a GPU from waiting on the CPU. A data-parallel rank takes its share of every global
batch, so N ranks see the same batches (and augmentations) as one process.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from edgecnn.data.augment import Augmentation, AugmentDraw, apply_augment, draw_augment
from edgecnn.data.storage import ImageRows

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TensorSet:
    images: torch.Tensor | ImageRows  # uint8 (N, C, H, W), C = 1 or 3; indexing with a tensor of rows returns a tensor
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: torch.Tensor) -> TensorSet:
        """The set of ``rows``; a memory-mapped set stays mapped (a view, no copy)."""
        images = self.images.select(rows) if isinstance(self.images, ImageRows) else self.images[rows]
        return TensorSet(images, self.labels[rows])


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the [0, 1] scale; stored with every checkpoint and exported file."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_images(cls, images: torch.Tensor | ImageRows) -> Normalization:
        """Mean and (unbiased) std per channel, accumulated in float64 over chunks so that a memory-mapped set
        is never loaded whole."""
        rows = images if isinstance(images, ImageRows) else ImageRows.from_tensor(images)
        total = torch.zeros(rows.shape[1], dtype=torch.float64)
        squares = torch.zeros(rows.shape[1], dtype=torch.float64)
        count = 0
        for chunk in rows.chunks(2048):
            x = chunk.to(torch.float64).div_(255)
            total += x.sum(dim=(0, 2, 3))
            squares += x.square().sum(dim=(0, 2, 3))
            count += x.numel() // x.shape[1]
        mean = total / count
        std = ((squares - count * mean.square()) / max(1, count - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
        return cls(tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist()))

    @classmethod
    def named(cls, name: str, images: torch.Tensor | ImageRows | None = None, channels: int = 3) -> Normalization:
        """``dataset`` (from ``images``), ``imagenet`` (for one channel: ImageNet's statistics of the luminance
        the images were converted with) or ``none``, for ``channels`` input channels."""
        if name == "imagenet":
            if channels == 1:
                return cls((_luminance(IMAGENET_MEAN),), (_luminance(IMAGENET_STD),))
            return cls(IMAGENET_MEAN, IMAGENET_STD)
        if name == "none":
            return cls((0.0,) * channels, (1.0,) * channels)
        if images is None:
            raise ValueError("dataset normalization needs the training images")
        return cls.from_images(images)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


def _luminance(rgb: tuple[float, ...]) -> float:
    """ITU-R 601 luma of an RGB triple: the weights PIL's convert("L") uses."""
    return round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], 6)


def prepare_batch(images: torch.Tensor, norm: Normalization, augment: Augmentation | None = None,
                  generator: torch.Generator | None = None, channels_last: bool = False,
                  device: torch.device | None = None, draw: AugmentDraw | None = None) -> torch.Tensor:
    """uint8 images -> normalized float32 batch on ``device`` (default: where the images are), augmented when
    ``augment`` is given (with the choices ``draw``, or drawn here from ``generator``)."""
    if device is not None:
        images = images.to(device, non_blocking=True)
    x = images.float().div_(255)
    if augment is not None and augment.enabled:
        if draw is None:
            gen = generator if generator is not None else torch.Generator()
            draw = draw_augment(augment, x.shape[0], x.shape[2] == x.shape[3], gen)
        x = apply_augment(x, augment, draw)
    x = norm.apply(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """As many row indices as ``labels``, drawn with replacement, each row with probability proportional to 1 / the
    count of its class: every class is drawn equally often on average (a class-balanced epoch of the same length).
    Drawn on the CPU from ``generator`` alone, so the order is a pure function of its seed. Two stages (a class
    uniformly, then a row of it uniformly) give exactly those probabilities without torch.multinomial's limit of
    2**24 rows."""
    labels = labels.cpu()
    n = len(labels)
    rows = torch.argsort(labels, stable=True)  # rows grouped by class
    counts = torch.unique(labels, return_counts=True)[1]  # per class present, in label order (as ``rows``)
    starts = torch.cumsum(counts, 0) - counts
    pick = torch.randint(len(counts), (n,), generator=generator)
    within = (torch.rand(n, dtype=torch.float64, generator=generator) * counts[pick]).long()
    return rows[starts[pick] + torch.minimum(within, counts[pick] - 1)]


def iterate_batches(data: TensorSet, batch_size: int, norm: Normalization, *, shuffle: bool = False,
                    seed: int = 0, augment: Augmentation | None = None, channels_last: bool = False,
                    drop_last: bool = False, device: torch.device | None = None, rank: int = 0,
                    world: int = 1, balance: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches on ``device``; order and augmentation are a pure function of ``seed`` (resumable
    epochs). ``balance`` draws the order class-balanced with replacement (``balanced_order``) instead of
    shuffling. With ``world`` > 1 this rank yields rows ``rank::world`` of every global batch of ``batch_size``
    (a global batch too small to give every rank an image is skipped)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(data)
    if balance and n:
        order = balanced_order(data.labels, generator)
    else:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    augmenting = augment is not None and augment.enabled
    square = data.images.shape[2] == data.images.shape[3]
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        draw = draw_augment(augment, len(idx), square, generator) if augmenting and augment is not None else None
        if world > 1:
            if len(idx) < world:
                continue
            idx = idx[rank::world]
            draw = draw.take(slice(rank, None, world)) if draw is not None else None
        x = prepare_batch(data.images[idx], norm, augment, None, channels_last, device, draw)
        yield x, data.labels[idx].to(x.device, non_blocking=True)
