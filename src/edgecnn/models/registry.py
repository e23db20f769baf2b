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

#: Inputs smaller than this get the small-input adaptation (no aggressive stem downsampling).
SMALL_INPUT_THRESHOLD = 128


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Register ``fn(num_classes, input_size, **kwargs) -> nn.Module`` under its function name."""
    return MODELS.register(fn.__name__)(fn)


def declare_model_args(builder: Callable[..., Any], names: tuple[str, ...]) -> None:
    """Declare the constructor arguments a builder takes through ``**kwargs`` (read by ``model_arguments``)."""
    setattr(builder, "model_args", names)  # an attribute of the function object


def create_model(name: str, num_classes: int = 10, input_size: int = 64, **kwargs: Any) -> nn.Module:
    """Build a registered model for ``num_classes`` classes and square inputs of ``input_size`` pixels."""
    return model_builder(name)(num_classes=num_classes, input_size=input_size, **kwargs)


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
    """The constructor arguments model ``name`` takes besides num_classes and input_size (a builder that forwards
    ``**kwargs`` declares them as ``builder.model_args``); None when they cannot be known."""
    builder = model_builder(name)
    declared = getattr(builder, "model_args", None)
    if declared is not None:
        return sorted(declared)
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return sorted(p.name for p in params if p.name not in ("num_classes", "input_size")
                  and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


def check_model_args(name: str, args: dict[str, Any], weights: str | None = None, input_size: int = 64) -> None:
    """Refuse, before any data is decoded, arguments ``name`` does not take (with the close matches), pretrained
    weights for a model that loads none, and values its constructor rejects (built on the meta device: no memory,
    no weights loaded)."""
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
            create_model(name, num_classes=2, input_size=input_size, **args)
    except (TypeError, ValueError) as exc:
        raise EdgeCNNError(f"model {name} cannot be built with {args}: {exc}") from None
    except RuntimeError:  # an operation the meta device cannot run: the real build will tell
        pass
