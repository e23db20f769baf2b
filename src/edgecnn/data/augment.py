"""Batch augmentations on float tensors (N, C, H, W) in [0, 1], drawn per sample from a seeded generator.

Flips and 90-degree rotations (off unless configured: they preserve the label only for data such as EuroSAT's nadir
views, not for digits or upright objects), a small brightness/contrast jitter that models illumination, and an
optional pad-and-crop that shifts the image by a few pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    jitter: float = 0.1  # max relative brightness / contrast change
    crop_pad: int = 0  # pixels of reflect padding before a random crop back to size

    @property
    def enabled(self) -> bool:
        return self.hflip or self.vflip or self.rot90 or self.jitter > 0 or self.crop_pad > 0


@dataclass
class AugmentDraw:
    """The random choices of one batch (per sample), drawn before any pixel is touched: a data-parallel rank draws
    them for the whole global batch and applies its own rows, so N ranks augment exactly as one process would."""

    hflip: torch.Tensor | None = None  # bool (n,)
    vflip: torch.Tensor | None = None
    turns: torch.Tensor | None = None  # int (n,) quarter turns
    brightness: torch.Tensor | None = None  # (n, 1, 1, 1)
    contrast: torch.Tensor | None = None
    dy: torch.Tensor | None = None  # int (n,) crop offsets
    dx: torch.Tensor | None = None

    def take(self, rows: torch.Tensor | slice) -> AugmentDraw:
        return AugmentDraw(**{k: None if v is None else v[rows] for k, v in vars(self).items()})


def draw_augment(aug: Augmentation, n: int, square: bool, generator: torch.Generator) -> AugmentDraw:
    """Per-sample flips, quarter turns, jitter and shifts of ``n`` images from ``generator`` (CPU, seeded)."""
    d = AugmentDraw()
    if aug.hflip:
        d.hflip = torch.rand(n, generator=generator) < 0.5
    if aug.vflip:
        d.vflip = torch.rand(n, generator=generator) < 0.5
    if aug.rot90 and square:
        d.turns = torch.randint(0, 4, (n,), generator=generator)
    if aug.jitter > 0:
        d.brightness = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * aug.jitter
        d.contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * aug.jitter
    if aug.crop_pad > 0:
        d.dy = torch.randint(0, 2 * aug.crop_pad + 1, (n,), generator=generator)
        d.dx = torch.randint(0, 2 * aug.crop_pad + 1, (n,), generator=generator)
    return d


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.to(a.device).view(-1, 1, 1, 1), a, b)


def apply_augment(x: torch.Tensor, aug: Augmentation, d: AugmentDraw) -> torch.Tensor:
    """``x`` (on any device) augmented with the drawn choices ``d``."""
    if d.hflip is not None:
        x = _where(d.hflip, x.flip(3), x)
    if d.vflip is not None:
        x = _where(d.vflip, x.flip(2), x)
    if d.turns is not None:
        x = x.clone()
        for turns in (1, 2, 3):
            idx = (d.turns == turns).nonzero().flatten().to(x.device)
            if len(idx):
                x[idx] = torch.rot90(x[idx], turns, dims=(2, 3))
    if d.brightness is not None and d.contrast is not None:  # drawn together
        brightness, contrast = d.brightness.to(x.device), d.contrast.to(x.device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * brightness
        x = x.clamp_(0, 1)
    if d.dy is not None and d.dx is not None:  # drawn together
        p, h, w = aug.crop_pad, x.shape[2], x.shape[3]
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        dy, dx = d.dy.tolist(), d.dx.tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(len(dy))])
    return x


def augment_batch(x: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of ``x``; each sample draws its own flips, rotation, jitter and shift."""
    return apply_augment(x, aug, draw_augment(aug, x.shape[0], x.shape[2] == x.shape[3], generator))
