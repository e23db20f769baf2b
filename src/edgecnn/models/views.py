"""Test-time views: a trained classifier that averages its logits over flipped/rotated copies of each image.

The views are part of the model, so the exported ONNX file (and the INT8 files made from it) compute the average
themselves and `edgecnn eval` scores what a deployment runs. Each view is one more pass of the network: a file with
N views costs N times the compute per image, which its MACs and latency rows show.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

TTAName = Literal["none", "hflip", "flips", "d4"]

#: Views of each set, by name: identity, horizontal flip, vertical flip, both, and the transposed four (the
#: symmetries of the square, D4). ``flips`` and ``d4`` need square images.
VIEW_SETS: dict[str, tuple[str, ...]] = {
    "none": ("id",),
    "hflip": ("id", "h"),
    "flips": ("id", "h", "v", "hv"),
    "d4": ("id", "h", "v", "hv", "t", "th", "tv", "thv"),
}


def view(x: torch.Tensor, name: str) -> torch.Tensor:
    """One view of an NCHW batch: 't' transposes H and W, then 'h' flips the width, 'v' the height."""
    if name.startswith("t"):
        x = x.transpose(2, 3)
    if "h" in name:
        x = x.flip(3)
    if "v" in name:
        x = x.flip(2)
    return x


class TestTimeViews(nn.Module):
    """``model`` applied to every view of the batch in one pass (views stacked along the batch), logits averaged."""

    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, tta: str) -> None:
        super().__init__()
        if tta not in VIEW_SETS:
            raise ValueError(f"unknown test-time views '{tta}'; use one of {', '.join(VIEW_SETS)}")
        self.model = model
        self.tta = tta
        self.views = VIEW_SETS[tta]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat([view(x, name) for name in self.views], dim=0)
        logits = self.model(stacked)
        return logits.reshape(len(self.views), x.shape[0], logits.shape[-1]).mean(dim=0)


def with_views(model: nn.Module, tta: str) -> nn.Module:
    """``model`` itself for 'none', else wrapped in TestTimeViews."""
    return model if tta == "none" else TestTimeViews(model, tta)

