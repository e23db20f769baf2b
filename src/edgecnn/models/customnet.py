"""CustomNet: a parametric CNN family (the NAS search space) plus LeNet-5.

A CustomNet is an optional stem conv, then stages; each stage is a conv (cin -> c, k x k) + BN + act, a
downsampling step (max/avg pool or a strided conv), and ``blocks`` extra blocks (residual pairs of convs when
``residual`` is set, plain conv-BN-act otherwise). The head is global average pooling (or flatten), an
optional hidden dense layer and the classifier.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from edgecnn.errors import EdgeCNNError
from edgecnn.models.registry import declare_model_args, register_model

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "leakyrelu": nn.LeakyReLU,
    "tanh": nn.Tanh,  # the seed report's search space
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise EdgeCNNError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int, batchnorm: bool, act: str | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(_activation(act))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two k x k convs with an identity shortcut (ResNet basic block without downsampling).

    ``skip_quant`` (None in a float model) is set by the low-bit conversion to the quantizer that ends the residual
    branch: the block's input is put on that grid too, so both inputs of the add share one integer grid, as FINN
    needs to build the add in hardware. It is a reference, not a submodule (its parameters live in the branch).
    """

    def __init__(self, channels: int, kernel: int, batchnorm: bool, act: str) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(channels, channels, kernel, 1, batchnorm, act)
        self.conv2 = conv_bn_act(channels, channels, kernel, 1, batchnorm, None)
        self.act = _activation(act)
        self.skip_quant: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip_quant is not None:
            x = self.skip_quant(x)
        return self.act(x + self.conv2(self.conv1(x)))


def _per_stage(value: int | Sequence[int], n: int, what: str) -> list[int]:
    values = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(values) != n:
        raise EdgeCNNError(f"CustomNet: {what} has {len(values)} entries but there are {n} stages; give one per stage")
    return values


class CustomNet(nn.Module):
    """Parametric CNN; every constructor argument is a search-space dimension."""

    def __init__(
        self,
        num_classes: int = 10,
        input_size: int = 64,
        in_channels: int = 3,
        stem_channels: int = 32,
        stem_kernel: int = 3,
        stem_stride: int = 2,
        channels: Sequence[int] = (64, 128, 256),
        kernel_sizes: int | Sequence[int] = 3,
        blocks: int | Sequence[int] = 1,
        downsample: str = "max",
        pool_size: int = 2,
        activation: str = "relu",
        batchnorm: bool = True,
        residual: bool = True,
        global_pool: bool = True,
        head_width: int = 0,
        dropout: float = 0.0,
    ) -> None:
        """Stem, stages and head. Long for a reason: the signature is one line per search-space dimension, and the
        body creates the modules in the one order that fixes every parameter's name and seeded initial value in
        checkpoints and recorded runs, so it is kept in one piece."""
        super().__init__()
        if not channels:
            raise EdgeCNNError("CustomNet: channels must list at least one stage width")
        if downsample not in ("max", "avg", "stride"):
            raise EdgeCNNError(f"CustomNet: downsample '{downsample}' is not one of max, avg, stride")
        n = len(channels)
        kernels = _per_stage(kernel_sizes, n, "kernel_sizes")
        nblocks = _per_stage(blocks, n, "blocks")
        layers: list[nn.Module] = []
        cin, size = in_channels, input_size
        if stem_channels:
            layers.append(conv_bn_act(cin, stem_channels, stem_kernel, stem_stride, batchnorm, activation))
            cin, size = stem_channels, -(-size // stem_stride)
        for cout, k, nb in zip(channels, kernels, nblocks):
            stride = pool_size if downsample == "stride" else 1
            stage: list[nn.Module] = [conv_bn_act(cin, cout, k, stride, batchnorm, activation)]
            if downsample == "max":
                stage.append(nn.MaxPool2d(pool_size))
            elif downsample == "avg":
                stage.append(nn.AvgPool2d(pool_size))
            size = size // pool_size if downsample != "stride" else -(-size // pool_size)
            if size < 1:
                raise EdgeCNNError(
                    f"CustomNet: input {input_size}px is downsampled below 1 pixel; use fewer stages or a smaller "
                    f"pool_size"
                )
            for _ in range(nb):
                stage.append(
                    ResidualBlock(cout, k, batchnorm, activation)
                    if residual
                    else conv_bn_act(cout, cout, k, 1, batchnorm, activation)
                )
            layers.append(nn.Sequential(*stage))
            cin = cout
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if global_pool else []
        head.append(nn.Flatten())
        features_out = cin if global_pool else cin * size * size
        if head_width:
            head += [nn.Linear(features_out, head_width), _activation(activation)]
            features_out = head_width
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(features_out, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def customnet(num_classes: int = 10, input_size: int = 64, **kwargs) -> nn.Module:
    """The parametric family; defaults are a small residual net that reaches >97% on EuroSAT."""
    return CustomNet(num_classes=num_classes, input_size=input_size, **kwargs)


@register_model
def customnet_seed(num_classes: int = 10, input_size: int = 64, **kwargs) -> nn.Module:
    """The seed report's CustomNet: 3 conv 5x5 (32/64/128) + BN + maxpool 4, dense 128."""
    params: dict[str, Any] = dict(stem_channels=0, channels=(32, 64, 128), kernel_sizes=5, blocks=0, pool_size=4,
                                  residual=False, global_pool=False, head_width=128)
    if input_size < 64:
        params["pool_size"] = 2
    params.update(kwargs)
    return CustomNet(num_classes=num_classes, input_size=input_size, **params)


def _arguments_of(cls: type[nn.Module]) -> tuple[str, ...]:
    """The constructor arguments of ``cls`` a config may set (the registry passes num_classes and input_size)."""
    skip = ("self", "num_classes", "input_size")  # in_channels stays: create_model passes the data's
    return tuple(n for n in inspect.signature(cls).parameters if n not in skip)


declare_model_args(customnet, _arguments_of(CustomNet))
declare_model_args(customnet_seed, _arguments_of(CustomNet))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for inputs of any size and channels; the dense input follows the input size."""

    def __init__(self, num_classes: int = 10, input_size: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        size = ((input_size - 4) // 2 - 4) // 2
        if size < 1:
            raise EdgeCNNError(f"lenet5 needs inputs of at least 16 pixels, got {input_size}")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * size * size, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def lenet5(num_classes: int = 10, input_size: int = 32, **kwargs) -> nn.Module:
    return LeNet5(num_classes=num_classes, input_size=input_size, **kwargs)


declare_model_args(lenet5, _arguments_of(LeNet5))
