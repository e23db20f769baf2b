"""Which torch device a setting names: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

A data-parallel rank started by torchrun uses its own GPU (``LOCAL_RANK``) when the setting is ``auto`` or
``cuda``. Asking for a GPU that is not there is a one-line error naming the fix, never a CUDA traceback.
"""
from __future__ import annotations

import os

import torch

from edgecnn.errors import EdgeCNNError


def cuda_missing_reason() -> str | None:
    """Why CUDA cannot be used here (None when it can)."""
    if torch.version.cuda is None and not torch.cuda.is_available():
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (driver missing or CUDA_VISIBLE_DEVICES empty)"
    return None


def resolve_device(spec: str = "auto", setting: str = "train.device") -> torch.device:
    """The torch device ``spec`` names on this machine; a GPU that is not there is an EdgeCNNError."""
    local_rank = os.environ.get("LOCAL_RANK")
    if spec == "auto":
        if cuda_missing_reason() is not None:
            return torch.device("cpu")
        spec = "cuda"
    if spec == "cpu":
        return torch.device("cpu")
    if not spec.startswith("cuda"):
        raise EdgeCNNError(f"{setting}: {spec!r} is not a device; use auto, cpu, cuda or cuda:N")
    if (reason := cuda_missing_reason()) is not None:
        raise EdgeCNNError(f"{setting}: {spec} asked for, but {reason}; set {setting}: cpu (or auto)")
    if spec == "cuda":
        index = int(local_rank) % torch.cuda.device_count() if local_rank is not None else 0
    else:
        index = int(spec.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise EdgeCNNError(f"{setting}: {spec} asked for, but this machine has {torch.cuda.device_count()} GPU(s) "
                           f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """A short name of the device for logs and results (the GPU's model on CUDA)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
