"""INT8 quantization-aware training with torchao's PT2E flow, exported to an ONNX QDQ model.

The X86 quantizer's scheme (uint8 asymmetric per-tensor activations, int8 symmetric per-channel weights) is
the scheme ONNX Runtime's QDQ integer kernels run, so the fake-quantized training matches the deployed file.
The accuracy that counts is the exported file's, measured in ONNX Runtime by the caller.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.data.prepare import PreparedData
from edgecnn.data.batches import iterate_batches
from edgecnn.errors import EdgeCNNError, did_you_mean

log = logging.getLogger(__name__)


def _module_names_to_exclude(model: nn.Module, exclude: list[str]) -> list[str]:
    compute = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    names = dict(model.named_modules())
    resolved = []
    for item in exclude:
        if item == "first" and compute:
            resolved.append(compute[0])
        elif item == "last" and compute:
            resolved.append(compute[-1])
        elif item in names and item:
            resolved.append(item)
        else:
            raise EdgeCNNError(f"--exclude: no layer '{item}' in the model{did_you_mean(item, ['first', 'last', *compute])}")
    return resolved


def qat_int8(model: nn.Module, data: PreparedData, *, epochs: float = 2.0, lr: float = 1e-4, batch_size: int = 64,
             exclude: list[str] | None = None, seed: int = 0, max_steps: int | None = None) -> nn.Module:
    """Fine-tune ``model`` with INT8 fake quantization; returns the converted (Q/DQ) exported module."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    model = model.float().train().to(memory_format=torch.contiguous_format)
    skip = _module_names_to_exclude(model, exclude or [])
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    size = data.image_size
    example = (torch.randn(2, 3, size, size),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch_dim = torch.export.Dim("batch", min=1, max=4096)
        exported = torch.export.export(model, example, dynamic_shapes=({0: batch_dim},)).module()
        prepared = prepare_qat_pt2e(exported, quantizer)
    optimizer = torch.optim.AdamW(prepared.parameters(), lr=lr, weight_decay=0.0)
    train = data.splits["train"]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max(1, int(epochs * steps_per_epoch))
    if max_steps:
        total = min(total, max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    step, epoch = 0, 0
    torch.manual_seed(seed)
    while step < total:
        for x, y in iterate_batches(train, batch_size, data.normalization, shuffle=True, seed=seed * 7 + epoch,
                                    augment=data.augmentation, drop_last=True):
            loss = F.cross_entropy(prepared(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sched.step()
            step += 1
            if step >= total:
                break
        epoch += 1
    log.info("QAT: %d steps (%.2f epochs) at lr %g", step, step / steps_per_epoch, lr)
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared)


def export_qat_onnx(converted: nn.Module, path: str | Path, input_size: int, meta: dict[str, Any], opset: int = 18) -> Path:
    """Export a converted PT2E model to an ONNX QDQ file (QuantizeLinear/DequantizeLinear around the ops)."""
    import onnx

    from edgecnn.export.onnx import INPUT_NAME, OUTPUT_NAME, set_metadata

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(converted, (torch.randn(2, 3, input_size, input_size),), str(path), dynamo=True,
                          external_data=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    from edgecnn.export.qdq import quantize_float_biases

    proto = onnx.load(str(path))
    quantize_float_biases(proto)
    set_metadata(proto, {**meta, "input_size": input_size, "precision": "int8-qat"})
    onnx.save(proto, str(path))
    return path
