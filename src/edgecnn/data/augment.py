"""Batch augmentations on float tensors (N, C, H, W) in [0, 1], drawn per sample from a seeded generator.

EuroSAT patches are nadir views, so flips and 90-degree rotations are label-preserving; a small brightness/
contrast jitter models illumination; an optional pad-and-crop shifts the patch by a few pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    jitter: float = 0.1  # max relative brightness / contrast change
    crop_pad: int = 0  # pixels of reflect padding before a random crop back to size

    @property
    def enabled(self) -> bool:
        return self.hflip or self.vflip or self.rot90 or self.jitter > 0 or self.crop_pad > 0


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def augment_batch(x: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of ``x``; each sample draws its own flips, rotation, jitter and shift."""
    n = x.shape[0]

    def coin() -> torch.Tensor:
        return torch.rand(n, generator=generator) < 0.5

    if aug.hflip:
        x = _where(coin(), x.flip(3), x)
    if aug.vflip:
        x = _where(coin(), x.flip(2), x)
    if aug.rot90 and x.shape[2] == x.shape[3]:
        k = torch.randint(0, 4, (n,), generator=generator)
        x = x.clone()
        for turns in (1, 2, 3):
            idx = (k == turns).nonzero().flatten()
            if len(idx):
                x[idx] = torch.rot90(x[idx], turns, dims=(2, 3))
    if aug.jitter > 0:
        j = aug.jitter
        brightness = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * j
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * j
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * brightness
        x = x.clamp_(0, 1)
    if aug.crop_pad > 0:
        p, h, w = aug.crop_pad, x.shape[2], x.shape[3]
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return x
