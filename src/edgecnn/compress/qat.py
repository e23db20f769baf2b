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

from edgecnn.data.batches import iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.models.profile import example_input

log = logging.getLogger(__name__)

#: Bumped when the QAT recipe changes what it produces, so cached int8-qat variants are rebuilt.
QAT_RECIPE_VERSION = 2


def _module_names_to_exclude(model: nn.Module, exclude: list[str]) -> list[str]:
    from edgecnn.compress.quantize import resolve_exclusions

    compute = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return resolve_exclusions(exclude, compute, {n for n, _ in model.named_modules()}, "the model")


def onnxruntime_quantizer():
    """torchao's X86 recipe, adapted to what ONNX Runtime fuses into integer kernels.

    The X86 recipe fuses conv + add (+ relu) of residual blocks and quantizes only after the add, which leaves
    the conv's output in float: ONNX Runtime then runs that conv and the add in float. Here every conv/linear
    gets its own quantized output and each add is quantized on its inputs and on its (relu'd) output, the
    pattern ONNX Runtime turns into QLinearConv + QLinearAdd, as in its own static quantization.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.utils import get_input_act_qspec, get_output_act_qspec
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    key = "quantization_annotation"
    adds = {torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor}
    relus = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}

    class OnnxRuntimeQuantizer(X86InductorQuantizer):
        def _annotate_qat_conv2d_bn_binary_unary(self, *args, **kwargs):
            pass

        def _annotate_qat_conv2d_bn_binary(self, *args, **kwargs):
            pass

        def _annotate_conv2d_binary_unary(self, *args, **kwargs):
            pass

        def _annotate_conv2d_binary(self, *args, **kwargs):
            pass

        def annotate(self, model):
            model = super().annotate(model)
            config = self.global_config
            for node in model.graph.nodes:
                if node.target not in adds or key in node.meta:
                    continue
                inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
                if len(inputs) != 2:
                    continue
                node.meta[key] = QuantizationAnnotation(
                    input_qspec_map={a: get_input_act_qspec(config) for a in inputs}, _annotated=True)
                users = list(node.users)
                if len(users) == 1 and users[0].target in relus and key not in users[0].meta:
                    users[0].meta[key] = QuantizationAnnotation(output_qspec=get_output_act_qspec(config),
                                                                _annotated=True)
                else:
                    node.meta[key].output_qspec = get_output_act_qspec(config)
            return model

    return OnnxRuntimeQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))


STATELESS_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.Identity)


def unshare_activations(model: nn.Module) -> nn.Module:
    """Give every call of a reused stateless activation module its own copy (torchvision's ResNet blocks call
    ``self.relu`` twice). PT2E quantizers match patterns by source module, and a module called twice makes one
    partition with two outputs, which they reject. Returns an fx GraphModule, or the model itself when nothing
    is shared or it cannot be traced."""
    import copy

    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # models fx cannot trace are exported as they are
        return model
    seen: dict[str, int] = {}
    changed = False
    for node in traced.graph.nodes:
        if node.op != "call_module":
            continue
        module = traced.get_submodule(node.target)
        count = seen.get(node.target, 0)
        seen[node.target] = count + 1
        if count and isinstance(module, STATELESS_ACTIVATIONS):
            new_name = f"{node.target.replace('.', '_')}_call{count}"
            traced.add_submodule(new_name, copy.deepcopy(module))
            node.target = new_name
            # torch.export keeps the tracer's module stack; point it at the copy so partitions stay apart.
            stack = node.meta.get("nn_module_stack")
            if stack:
                key = list(stack)[-1]
                stack[key] = (new_name, stack[key][1])
            changed = True
    if not changed:
        return model
    traced.recompile()
    return traced


def qat_int8(model: nn.Module, data: PreparedData, *, epochs: float = 2.0, lr: float = 1e-4, batch_size: int = 64,
             exclude: list[str] | None = None, seed: int = 0, max_steps: int | None = None,
             device: torch.device | None = None) -> nn.Module:
    """Fine-tune ``model`` with INT8 fake quantization on ``device`` (default CPU); returns the converted (Q/DQ)
    exported module, on the CPU."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    model = model.float().train().to(memory_format=torch.contiguous_format)
    skip = _module_names_to_exclude(model, exclude or [])
    model = unshare_activations(model)
    quantizer = onnxruntime_quantizer()
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    size = data.image_size
    example = (example_input(model, size, batch=2),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch_dim = torch.export.Dim("batch", min=1, max=4096)
        exported = torch.export.export(model, example, dynamic_shapes=({0: batch_dim},)).module()
        prepared = prepare_qat_pt2e(exported, quantizer)
    device = device or torch.device("cpu")
    prepared = prepared.to(device)
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
                                    augment=data.augmentation, drop_last=True, device=device):
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
    prepared = prepared.to("cpu")
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared)


def export_qat_onnx(converted: nn.Module, path: str | Path, input_size: int, meta: dict[str, Any],
                    opset: int = 18) -> Path:
    """Export a converted PT2E model to an ONNX QDQ file (QuantizeLinear/DequantizeLinear around the ops); its
    input channels come from ``meta`` (``in_channels``, 3 when absent), a converted graph has no Conv2d to ask."""
    import onnx

    from edgecnn.export.onnx import INPUT_NAME, OUTPUT_NAME, set_metadata

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = torch.randn(2, int(meta.get("in_channels", 3)), input_size, input_size)
        torch.onnx.export(converted, (example,), str(path), dynamo=True,
                          external_data=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    from edgecnn.measure.ort_fusion import drop_unused, quantize_biases

    proto = onnx.load(str(path))
    if quantize_biases(proto):  # ONNX Runtime fuses Conv/Gemm only with int32 biases
        drop_unused(proto.graph)
        onnx.checker.check_model(proto)
    set_metadata(proto, {**meta, "input_size": input_size, "precision": "int8-qat"})
    onnx.save(proto, str(path))
    return path
