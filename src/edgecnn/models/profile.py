"""Parameters, multiply-accumulates and a per-layer listing of a model at a given input size.

MACs are counted with forward hooks on the layers that do the arithmetic (Conv, Linear, BatchNorm is
folded at deployment and not counted), so any nn.Module works, including pruned ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn


@dataclass
class LayerProfile:
    name: str
    op: str
    output_shape: list[int]
    params: int
    macs: int


@dataclass
class ModelProfile:
    params: int
    macs: int
    input_size: int
    layers: list[LayerProfile] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() // output.shape[0] * per_output
    if isinstance(module, nn.Linear):
        return output.numel() // output.shape[0] * module.in_features
    return 0


def profile_model(model: nn.Module, input_size: int = 64, in_channels: int = 3) -> ModelProfile:
    """Count params and MACs per image with one batch-1 forward pass on zeros (the model is left unchanged)."""
    layers: list[LayerProfile] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(mod, _inp, out, name=name):
                layers.append(LayerProfile(name, type(mod).__name__, list(out.shape[1:]),
                                           count_params(mod), _layer_macs(mod, out)))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters(), None)
            dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
            model(torch.zeros(1, in_channels, input_size, input_size, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return ModelProfile(count_params(model), sum(layer.macs for layer in layers), input_size, layers)
