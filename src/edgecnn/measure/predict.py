"""A model's logits over a split, in order and without augmentation: what every accuracy edgecnn reports is
computed from (the trainer's validation, a variant's measurement, pruning sensitivity, distillation targets)."""
from __future__ import annotations

import torch
import torch.nn as nn

from edgecnn.data.batches import Normalization, TensorSet, iterate_batches
from edgecnn.errors import EdgeCNNError


def predict_logits(model: nn.Module, data: TensorSet, norm: Normalization, batch_size: int = 256,
                   channels_last: bool = True, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) of ``model`` over a TensorSet in order, without augmentation, computed on the
    device the model's weights are on."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = []
    with torch.no_grad():  # scoring only: no autograd graph kept alive across the split
        for x, _ in iterate_batches(data, batch_size, norm, channels_last=channels_last, device=device):
            if dtype is not None:
                x = x.to(dtype)
            outputs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.zeros(0)


def require_finite(logits: torch.Tensor, source: object) -> torch.Tensor:
    """``logits`` when every value is finite; else a one-line EdgeCNNError: an accuracy computed from NaN or
    infinite outputs (argmax picks an arbitrary class) is a number nobody should believe."""
    if not logits.numel():
        return logits
    bad = ~torch.isfinite(logits).reshape(len(logits), -1).all(dim=1)
    if bool(bad.any()):
        raise EdgeCNNError(f"{source} gives NaN or infinite outputs for {int(bad.sum())} of {len(logits)} images: its "
                           "weights hold NaN/inf (a diverged training or a damaged file); no accuracy is reported, "
                           "retrain or export the model again")
    return logits
