"""torchvision architectures used by the seed reports, with a new head and small-input adaptation.

Pretrained weights are loaded into the original ImageNet architecture first, then the classifier is replaced.
``weights`` is a local file (safetensors / state dict) or, for online users, a torchvision weight name such
as ``"IMAGENET1K_V1"`` or ``"DEFAULT"``. Small inputs (< 128 px) get a gentler stem unless pretrained weights
are used (then the input is expected at the weights' resolution and the stem is kept).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn
import torchvision.models as tvm

from edgecnn.errors import EdgeCNNError
from edgecnn.models.registry import SMALL_INPUT_THRESHOLD, declare_model_args, register_model
from edgecnn.models.weights import load_matching, read_state_dict


def _build(builder: Callable[..., nn.Module], weights: str | Path | None) -> Any:
    """The torchvision model (Any: the builders below edit it by attribute, ``model.fc``, ``model.classifier[-1]``,
    which torch types as Tensor | Module)."""
    if weights is None:
        return builder(weights=None)
    if Path(str(weights)).suffix in (".safetensors", ".pt", ".pth", ".bin") or Path(str(weights)).exists():
        model = builder(weights=None)
        load_matching(model, read_state_dict(weights), str(weights))
        return model
    try:  # a torchvision weight name: needs network access the first time
        return builder(weights=str(weights))
    except Exception as exc:
        raise EdgeCNNError(
            f"cannot get torchvision weights '{weights}' for {builder.__name__} ({type(exc).__name__}: {exc}); "
            "offline, pass a local file instead (weights: path/to/weights.safetensors)"
        ) from None


def small_input_stem(input_size: int, weights: object, adapt: bool | None) -> bool:
    """Whether the model gets the small-input stem: ``adapt`` (the ``adapt_small_input`` argument) when given,
    else inputs under SMALL_INPUT_THRESHOLD px without pretrained ``weights``."""
    return (input_size < SMALL_INPUT_THRESHOLD and weights is None) if adapt is None else adapt


def _resnet(builder, num_classes, input_size, weights=None, adapt_small_input=None):
    model = _build(builder, weights)
    if small_input_stem(input_size, weights, adapt_small_input):
        # 3x3 stride-1 stem keeps 64x64 detail; the maxpool stays so layer1 runs at input/2.
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@register_model
def resnet18(num_classes: int = 10, input_size: int = 224, **kw) -> nn.Module:
    return _resnet(tvm.resnet18, num_classes, input_size, **kw)


@register_model
def resnet50(num_classes: int = 10, input_size: int = 224, **kw) -> nn.Module:
    return _resnet(tvm.resnet50, num_classes, input_size, **kw)


ZOO_ARGS = ("weights", "adapt_small_input")  # what the **kw of the zoo's builders take
declare_model_args(resnet18, ZOO_ARGS)
declare_model_args(resnet50, ZOO_ARGS)


@register_model
def mobilenet_v2(num_classes: int = 10, input_size: int = 224, weights=None, adapt_small_input=None) -> nn.Module:
    model = _build(tvm.mobilenet_v2, weights)
    if small_input_stem(input_size, weights, adapt_small_input):
        model.features[0][0].stride = (1, 1)  # overall stride 16 instead of 32
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


def _vgg(builder, num_classes, input_size, weights=None, adapt_small_input=None):
    model = _build(builder, weights)
    if small_input_stem(input_size, weights, adapt_small_input):
        # At 64 px the features end at 2x2; pooling them to 1x1 avoids a 25088-wide dense layer of upsampled copies.
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier[0] = nn.Linear(512, model.classifier[0].out_features)
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


def _register_vgg(name: str) -> None:
    builder = getattr(tvm, name)

    def factory(num_classes: int = 10, input_size: int = 224, **kw) -> nn.Module:
        return _vgg(builder, num_classes, input_size, **kw)

    factory.__name__ = name
    factory.__doc__ = f"torchvision {name}"
    declare_model_args(factory, ZOO_ARGS)
    register_model(factory)


for _name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"):
    _register_vgg(_name)


@register_model
def alexnet(num_classes: int = 10, input_size: int = 224, weights=None, adapt_small_input=None) -> nn.Module:
    model = _build(tvm.alexnet, weights)
    if small_input_stem(input_size, weights, adapt_small_input):
        model.features[0] = nn.Conv2d(3, 64, 5, 2, 2)  # 11x11/4 would leave 15x15 after the stem at 64 px
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


@register_model
def squeezenet1_1(num_classes: int = 10, input_size: int = 224, weights=None, adapt_small_input=None) -> nn.Module:
    model = _build(tvm.squeezenet1_1, weights)
    if small_input_stem(input_size, weights, adapt_small_input):
        model.features[0] = nn.Conv2d(3, 64, 3, 1, 1)
    model.classifier[1] = nn.Conv2d(model.classifier[1].in_channels, num_classes, 1)
    return model


@register_model
def convnext_tiny(num_classes: int = 10, input_size: int = 224, weights=None, adapt_small_input=None) -> nn.Module:
    model = _build(tvm.convnext_tiny, weights)
    if small_input_stem(input_size, weights, adapt_small_input):
        model.features[0][0] = nn.Conv2d(3, 96, 2, 2)  # patchify 2x2 instead of 4x4: 64 px ends at 4x4, not 2x2
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model
