"""Checkpoints as single safetensors files: weights plus a JSON description stored in the file's metadata.

A checkpoint is self-describing (architecture, constructor arguments, classes, input size, normalization),
so ``load_checkpoint(path)`` rebuilds the model with nothing else and returns it with its typed CheckpointMeta.
``read_checkpoint`` is the file-level reader: the tensors and the flat metadata mapping as stored (which, in a
trainer's last.safetensors, also holds the training state). Writes are atomic (temp file + rename): a kill at any
moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from edgecnn.errors import EdgeCNNError
from edgecnn.results import CheckpointMeta

META_KEY = "edgecnn"
#: What derived checkpoints inherit: the description of the model, without its training state or pruned layout.
BASE_META_KEYS = tuple(k for k in CheckpointMeta.FIELDS if k != "pruned")


_RUST_IO = {"StorageFull": errno.ENOSPC, "FileTooLarge": errno.EFBIG, "QuotaExceeded": errno.EDQUOT,
            "ReadOnlyFilesystem": errno.EROFS, "PermissionDenied": errno.EACCES}


def _as_os_error(exc: Exception, path: Path) -> Exception:
    """safetensors' error for a failed write as the OSError it wraps (``Os { code: 28, kind: StorageFull }``), so
    the CLI reports a full disk as one; other errors unchanged."""
    text = str(exc)
    found = re.search(r"(?:code: |os error )(\d+)", text)
    code = int(found.group(1)) if found else next((c for kind, c in _RUST_IO.items() if kind in text), None)
    return OSError(code, os.strerror(code), str(path)) if code is not None else exc


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={META_KEY: json.dumps(meta)})
    except SafetensorError as exc:  # its Rust I/O errors are not OSErrors: a full disk would be an internal error
        tmp.unlink(missing_ok=True)
        raise _as_os_error(exc, tmp) from None
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(meta, indent=1))
    os.replace(side_tmp, side)


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any],
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the model's state dict (and ``extra`` tensors under 'extra.' names) with ``meta``."""
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    _atomic_save(tensors, path, meta)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, extra tensors, meta) of a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise EdgeCNNError(f"checkpoint not found: {path}; pass a .safetensors file written by edgecnn "
                           "(e.g. runs/NAME/train/best.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_text = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise EdgeCNNError(f"cannot read checkpoint {path} ({type(exc).__name__}); is it a safetensors file written "
                           "by edgecnn?") from None
    if meta_text is None:
        raise EdgeCNNError(f"{path} has no edgecnn metadata; it is not an edgecnn checkpoint (plain weights go in "
                           "model.weights)")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return model_state, extra, json.loads(meta_text)


class LoadedCheckpoint(NamedTuple):
    """A checkpoint's model, rebuilt with its weights loaded (eval mode), and what the file says about it;
    unpacks as ``model, meta = load_checkpoint(path)``."""

    model: nn.Module
    meta: CheckpointMeta


def checkpoint_meta(stored: dict[str, Any], path: str | Path) -> CheckpointMeta:
    """The typed meta of a checkpoint from its stored metadata mapping (``read_checkpoint``'s third value); a
    mapping without a required key is a one-line error naming the file."""
    missing = [k for k in ("arch", "classes", "input_size", "normalization") if k not in stored]
    if missing:
        raise EdgeCNNError(f"{path} has edgecnn metadata without {', '.join(missing)}; it cannot be rebuilt (was it "
                           "written by another version or edited?)")
    return CheckpointMeta.from_dict(stored)


def model_from_meta(meta: CheckpointMeta) -> nn.Module:
    """The model a checkpoint describes (random weights), with the pruned layout applied when it has one."""
    from edgecnn.models import create_model
    from edgecnn.models.layout import apply_layout

    model = create_model(meta.arch, num_classes=len(meta.classes), input_size=meta.input_size,
                         in_channels=meta.in_channels, **meta.arch_args)
    layout = (meta.pruned or {}).get("layout")
    return apply_layout(model, layout) if layout else model


def base_meta(meta: CheckpointMeta) -> dict[str, Any]:
    """The description of a model (no training state, no pruned layout) that derived checkpoints inherit, as the
    flat mapping they store."""
    return {k: v for k, v in meta.to_dict().items() if k in BASE_META_KEYS}


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Rebuild the model a checkpoint describes and load its weights (strict); returns (model in eval mode, its
    CheckpointMeta)."""
    state, _, stored = read_checkpoint(path)
    meta = checkpoint_meta(stored, path)
    return LoadedCheckpoint(load_state_strict(model_from_meta(meta), state, path), meta)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """Load ``state`` into ``model`` strictly; a mismatch is a one-line error naming the file. Returns the model
    in eval mode."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EdgeCNNError(f"the weights of {path} do not fit the model its metadata describes "
                           f"({str(exc).splitlines()[0][:160]}); was the file edited or written by another "
                           "version?") from None
    return model.eval()
