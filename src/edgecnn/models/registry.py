"""Model registry: ``@register_model`` builders, ``create_model(name, ...)``, ``list_models(pattern)``,
``model_builder(name)``."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", "edgecnn models")

#: Constructor arguments the data decides (classes, image size, channels), never set in a model's args.
DATA_ARGS = ("num_classes", "input_size", "in_channels")

#: Inputs smaller than this get the small-input adaptation (no aggressive stem downsampling).
SMALL_INPUT_THRESHOLD = 128


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Register ``fn(num_classes, input_size, **kwargs) -> nn.Module`` under its function name."""
    return MODELS.register(fn.__name__)(fn)


def declare_model_args(builder: Callable[..., Any], names: tuple[str, ...]) -> None:
    """Declare the constructor arguments a builder takes through ``**kwargs`` (read by ``model_arguments``)."""
    setattr(builder, "model_args", names)  # an attribute of the function object


def create_model(name: str, num_classes: int = 10, input_size: int = 64, in_channels: int = 3,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model for ``num_classes`` classes and square inputs of ``input_size`` pixels with
    ``in_channels`` channels (a builder that takes no ``in_channels`` gets its first convolution adapted)."""
    builder = model_builder(name)
    if "in_channels" in _builder_params(builder):
        return builder(num_classes=num_classes, input_size=input_size, in_channels=in_channels, **kwargs)
    model = builder(num_classes=num_classes, input_size=input_size, **kwargs)
    return adapt_input_channels(model, in_channels) if in_channels != 3 else model


def adapt_input_channels(model: nn.Module, channels: int) -> nn.Module:
    """Give the first 3-channel Conv2d of ``model`` ``channels`` inputs, keeping what its weights compute: for one
    channel the RGB kernels are summed (a grayscale image repeated three times gives the same output), as timm's
    ``adapt_input_conv`` does for pretrained weights; for more, the kernels are tiled and scaled by 3/channels."""
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
    if found is None:
        raise EdgeCNNError(f"{type(model).__name__} has no 3-channel first convolution to give {channels} input "
                           "channel(s); use data.channels: 3")
    name, old = found
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding,  # type: ignore[arg-type]
                    old.dilation, old.groups, old.bias is not None, old.padding_mode,  # type: ignore[arg-type]
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        if old.weight.device.type != "meta":
            weight = old.weight.sum(dim=1, keepdim=True) if channels == 1 else (
                old.weight.repeat(1, (channels + 2) // 3, 1, 1)[:, :channels] * (3 / channels))
            new.weight.copy_(weight)
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return model


def _builder_params(builder: ModelBuilder) -> tuple[str, ...]:
    declared = getattr(builder, "model_args", None)
    if declared is not None:
        return tuple(declared)
    return tuple(inspect.signature(builder).parameters)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching the fnmatch ``pattern``."""
    load_builtin_models()
    return MODELS.names(pattern)


def model_builder(name: str) -> ModelBuilder:
    """The registered builder of ``name`` (built-in models loaded first); an unknown name is an error naming
    the closest registered ones. ``model_builder(name).__module__`` tells where the model is defined."""
    load_builtin_models()
    return MODELS.get(name)


def load_builtin_models() -> None:
    """Register edgecnn's own models (importing their modules runs the @register_model decorators)."""
    from edgecnn.models import customnet, torchvision_zoo  # noqa: F401


def model_arguments(name: str) -> list[str] | None:
    """The constructor arguments model ``name`` takes besides the data's (DATA_ARGS); a builder that forwards
    ``**kwargs`` declares them as ``builder.model_args``; None when they cannot be known."""
    builder = model_builder(name)
    declared = getattr(builder, "model_args", None)
    if declared is not None:
        return sorted(a for a in declared if a not in DATA_ARGS)
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return sorted(p.name for p in params if p.name not in DATA_ARGS
                  and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


def check_model_args(name: str, args: dict[str, Any], weights: str | None = None, input_size: int = 64,
                     in_channels: int = 3) -> None:
    """Refuse, before any data is decoded, arguments ``name`` does not take (with the close matches), pretrained
    weights for a model that loads none, and values its constructor rejects (built on the meta device: no memory,
    no weights loaded)."""
    if "in_channels" in args:
        raise EdgeCNNError(f"model {name}: the input channels follow the data; set data.channels (auto, 1 or 3) "
                           "instead of the model argument in_channels")
    accepted = model_arguments(name)
    if accepted is not None:
        for key in args:
            if key not in accepted:
                raise EdgeCNNError(f"model {name} takes no argument '{key}'{did_you_mean(key, accepted)} "
                                   f"(its arguments: {', '.join(accepted) or 'none'})")
        if weights and "weights" not in accepted:
            raise EdgeCNNError(f"model {name} loads no pretrained weights; remove weights or pick a torchvision model")
    try:
        with torch.device("meta"):
            create_model(name, num_classes=2, input_size=input_size, in_channels=in_channels, **args)
    except (TypeError, ValueError) as exc:
        raise EdgeCNNError(f"model {name} cannot be built with {args}: {exc}") from None
    except RuntimeError:  # an operation the meta device cannot run: the real build will tell
        pass
