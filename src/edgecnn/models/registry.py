"""Model registry: ``@register_model`` builders, ``create_model(name, ...)``, ``list_models(pattern)``,
``model_builder(name)``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from edgecnn.registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", "edgecnn models")

#: Inputs smaller than this get the small-input adaptation (no aggressive stem downsampling).
SMALL_INPUT_THRESHOLD = 128


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Register ``fn(num_classes, input_size, **kwargs) -> nn.Module`` under its function name."""
    return MODELS.register(fn.__name__)(fn)


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
