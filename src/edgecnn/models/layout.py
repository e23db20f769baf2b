"""Layouts of structurally pruned models: the layer attributes and tensor shapes that differ from the registry
model, stored as JSON in the checkpoint meta (``meta['pruned']['layout']``) so that a pruned checkpoint is rebuilt
from the registry with nothing pickled."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from edgecnn.errors import EdgeCNNError

#: Module attributes that pruning changes and a rebuild must restore.
LAYOUT_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
                "normalized_shape")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def pruned_layout(model: nn.Module, reference: nn.Module) -> dict[str, Any]:
    """Attributes and tensor shapes of ``model`` that differ from ``reference`` (the unpruned registry model)."""
    ref_modules = dict(reference.named_modules())
    modules: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None:
            raise EdgeCNNError(f"pruned model has a layer '{name}' the registry model lacks; it cannot be described "
                               "as a pruned registry model")
        diff = {a: _jsonable(getattr(module, a)) for a in LAYOUT_ATTRS
                if hasattr(module, a) and getattr(module, a) != getattr(ref, a, None)}
        if diff:
            modules[name] = diff
    ref_state = reference.state_dict()
    tensors = {k: list(v.shape) for k, v in model.state_dict().items()
               if k in ref_state and tuple(ref_state[k].shape) != tuple(v.shape)}
    return {"modules": modules, "tensors": tensors}


def apply_layout(model: nn.Module, layout: dict[str, Any]) -> nn.Module:
    """Give a fresh registry model the pruned shapes of ``layout`` (weights are loaded afterwards)."""
    modules = dict(model.named_modules())
    for name, attrs in layout.get("modules", {}).items():
        if name not in modules:
            raise EdgeCNNError(f"the pruned layout names a layer '{name}' that {type(model).__name__} does not have; "
                               "the checkpoint was written for another architecture or edgecnn version")
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for tensor, shape in layout.get("tensors", {}).items():
        owner_name, _, attr = tensor.rpartition(".")
        owner = modules.get(owner_name)
        if owner is not None and owner._parameters.get(attr) is not None:
            old = owner._parameters[attr]
            owner._parameters[attr] = nn.Parameter(torch.zeros(shape, dtype=old.dtype), requires_grad=old.requires_grad)
        elif owner is not None and owner._buffers.get(attr) is not None:
            owner._buffers[attr] = torch.zeros(shape, dtype=owner._buffers[attr].dtype)
        else:
            raise EdgeCNNError(f"the pruned layout names a tensor '{tensor}' that {type(model).__name__} does not "
                               "have; the checkpoint was written for another architecture or edgecnn version")
    return model
