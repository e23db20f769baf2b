"""Model introspection: parameters, multiply-accumulates and a per-layer listing at a given input size, example
inputs, and the Conv2d/Linear layers in execution order (the classifier is the last of them).

MACs are counted with forward hooks on the layers that do the arithmetic (Conv, Linear, BatchNorm is
folded at deployment and not counted), so any nn.Module works, including pruned ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from edgecnn.errors import EdgeCNNError


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


def profile_model(model: nn.Module, input_size: int = 64, in_channels: int | None = None) -> ModelProfile:
    """Count params and MACs per image with one batch-1 forward pass on zeros (the model is left unchanged). A layer
    that runs on several copies of the image (test-time views stacked along the batch) counts each copy."""
    layers: list[LayerProfile] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(mod, _inp, out, name=name):
                layers.append(LayerProfile(name, type(mod).__name__, list(out.shape[1:]),
                                           count_params(mod), _layer_macs(mod, out) * out.shape[0]))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(zero_input(model, input_size, in_channels=in_channels))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return ModelProfile(count_params(model), sum(layer.macs for layer in layers), input_size, layers)


def input_channels(model: nn.Module) -> int:
    """The channels ``model`` takes: its first Conv2d's input channels (3 for a model without one)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def zero_input(model: nn.Module, input_size: int, batch: int = 1, in_channels: int | None = None) -> torch.Tensor:
    """A batch of zero images of ``input_size`` pixels (``in_channels``, default the model's own) in the dtype of
    the model's parameters (float32 without)."""
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    channels = input_channels(model) if in_channels is None else in_channels
    return torch.zeros(batch, channels, input_size, input_size, dtype=dtype)


def example_input(model: nn.Module, input_size: int | tuple[int, ...], batch: int = 1) -> torch.Tensor:
    """A standard-normal batch shaped for ``model`` (drawn from torch's global generator).

    ``input_size``: the side of a square image (channels from the first Conv2d, 3 without one; a flat vector when
    the model has no Conv2d and starts with a Linear), a (H, W) shape (channels as before) or a (C, H, W) shape."""
    if isinstance(input_size, int):
        first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if isinstance(first, nn.Linear) and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            return torch.randn(batch, first.in_features)
        return torch.randn(batch, input_channels(model), input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if len(shape) == 2:  # (H, W)
        shape = (input_channels(model), *shape)
    return torch.randn(batch, *shape)


def compute_layers(model: nn.Module, input_size: int) -> list[str]:
    """Names of the Conv2d/Linear layers in execution order (one batch-1 forward pass in eval mode)."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: order.append(n) if n not in order else None)
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(zero_input(model, input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def output_layer(model: nn.Module, input_size: int) -> str:
    """The classifier layer (the last Conv2d/Linear to run): never pruned, replaced in transfer learning."""
    layers = compute_layers(model, input_size)
    if not layers:
        raise EdgeCNNError(f"{type(model).__name__} has no Conv2d/Linear layer to prune")
    return layers[-1]
