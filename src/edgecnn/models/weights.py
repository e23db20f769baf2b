"""Load pretrained weights safely: safetensors, or ``torch.load(weights_only=True)``; never arbitrary pickles."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from edgecnn.errors import EdgeCNNError

log = logging.getLogger(__name__)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (.safetensors, or a .pt/.pth state dict loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"weights file not found: {path}; pass the path of a .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that needs code execution
        raise EdgeCNNError(
            f"cannot read weights from {path} ({type(exc).__name__}); it must be a safetensors file or a plain "
            "state dict saved with torch.save(model.state_dict())"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgeCNNError(f"{path} holds no state dict of tensors; save it with torch.save(model.state_dict())")
    return obj


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy the tensors whose name and shape match ``model``; return the skipped names (e.g. the old head)."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise EdgeCNNError(f"no tensor of {source} matches this model's layers; are these weights for another "
                           f"architecture?")
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    if skipped:
        log.info("pretrained weights from %s: %d tensors loaded, %d left at init (%s...)",
                 source, len(usable), len(skipped), ", ".join(skipped[:4]))
    return skipped
