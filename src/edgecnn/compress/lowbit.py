"""Low-bit (1-8 bit) quantization-aware training with Brevitas, for QONNX / FINN-style deployment.

``to_lowbit`` turns a float model into a Brevitas one as a spec says (precision names and per-layer ``bits``:
compress/lowbit_spec.py): Conv2d/Linear -> QuantConv2d/QuantLinear, ReLUs -> QuantReLU, a signed QuantIdentity on
the input and on residual branches (quantizer choices and reasons: compress/lowbit_quantizers.py); activation scales
are calibrated and BatchNorm statistics re-estimated. ``qat_lowbit`` fine-tunes it with trainer.fit; the rest reads
statistics (bits, packed size, sparsity) and rebuilds checkpoints. Module names of the float model are kept
(``features.0.0`` stays ``features.0.0``) plus ``input_quant``.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from edgecnn.compress.lowbit_quantizers import global_pool, quant_activation, quant_compute, signed_act, tied_act
from edgecnn.compress.lowbit_spec import (  # noqa: F401 (the spec is re-exported)
    INPUT_BITS,
    MAX_BITS,
    MIN_BITS,
    MODEL_KEYS,
    ROLE_KEYS,
    SCALINGS,
    BitSpec,
    LayerBits,
    LayerPlan,
    LowBitPlan,
    LowBitSpec,
    activation_feeding,
    is_lowbit_precision,
    parse_precision,
    resolve_spec,
)
from edgecnn.errors import EdgeCNNError
from edgecnn.models.profile import example_input

log = logging.getLogger(__name__)

BIAS_BITS = 32


# ------------------------------------------------------------------------------------------------ conversion


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


_LOWBIT_CLASSES: dict[type, type] = {}


def _lowbit_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward quantizes the input first (names of the float model are kept)."""
    if getattr(cls, "_edgecnn_lowbit", False):
        return cls
    if cls not in _LOWBIT_CLASSES:
        if issubclass(cls, nn.Sequential):  # Sequential.forward would run every child, input_quant included
            def forward(self, x):
                x = self.input_quant(x)
                for name, module in self._modules.items():
                    if name != "input_quant":
                        x = module(x)
                return x
        else:
            # two variants picked per class, each with the signature of the forward it wraps
            def forward(self, x, *args, **kwargs):  # type: ignore[misc]
                return cls.forward(self, self.input_quant(x), *args, **kwargs)

        _LOWBIT_CLASSES[cls] = type(f"LowBit{cls.__name__}", (cls,), {
            "forward": forward, "_edgecnn_lowbit": True, "__module__": __name__,
            "__doc__": f"{cls.__name__} with Brevitas low-bit layers and an {INPUT_BITS}-bit input quantizer."})
    return _LOWBIT_CLASSES[cls]


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor) -> nn.Module:
    """Initialise the activation scales from a few batches (Brevitas calibration mode); returns the model."""
    from brevitas.graph.calibrate import calibration_mode

    if isinstance(batches, torch.Tensor):
        batches = [batches]
    was_training = model.training
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for x in batches:
            model(x)
    model.train(was_training)
    return model


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance on ``batches`` with the model's quantizers active
    (a cumulative average over the batches; nothing else changes). Quantized weights shift each conv's output
    statistics, most at 1-2 bits, so the float model's running statistics are stale after ``to_lowbit``."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
        m.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv2d whose output goes only to a BatchNorm2d into one biased Conv2d (torch's
    ``fuse_conv_bn_eval``, running statistics), the BatchNorm becoming ``nn.Identity``; in place, returns ``model``.
    Module names are kept, so a folded model still matches its spec and checkpoint names."""
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    was_training = model.training
    model.eval()
    modules = dict(model.named_modules())
    try:
        nodes = list(torch.fx.symbolic_trace(model).graph.nodes)
        pairs = [(n.target, next(iter(n.users)).target) for n in nodes
                 if n.op == "call_module" and isinstance(modules.get(n.target), nn.Conv2d) and len(n.users) == 1
                 and next(iter(n.users)).op == "call_module"
                 and isinstance(modules.get(next(iter(n.users)).target), nn.BatchNorm2d)]
    except Exception as exc:  # noqa: BLE001 - untraceable models: fold Sequential neighbours only
        log.debug("fold_batchnorm: torch.fx failed (%s); folding adjacent Sequential children", exc)
        pairs = []
        for name, mod in modules.items():
            if isinstance(mod, nn.Sequential):
                kids = list(mod._modules.items())
                pairs += [(f"{name}.{a}" if name else a, f"{name}.{b}" if name else b)
                          for (a, c), (b, n) in zip(kids, kids[1:])
                          if isinstance(c, nn.Conv2d) and isinstance(n, nn.BatchNorm2d)]
    for conv_name, bn_name in pairs:
        _set_module(model, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _set_module(model, bn_name, nn.Identity())
    model.train(was_training)
    return model


def _global_pools(model: nn.Module, activations: dict[str, int], input_size) -> dict[str, tuple[str, tuple[int, int]]]:
    """{global average pool: (the activation whose output it pools, its input's H x W)} for the pools whose input
    comes from one activation through max-pools, dropouts or identities only (found with torch.fx)."""
    import torch.fx

    modules = dict(model.named_modules())
    pools = [n for n, m in modules.items() if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    if not pools:
        return {}
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models keep their float pooling (FINN's verdict will say so)
        return {}
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(i[0].shape[-2:])))
             for n in pools]
    try:
        with torch.no_grad():
            model.eval()(example_input(model, input_size))
    finally:
        for h in hooks:
            h.remove()
    found = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in pools:
            continue
        act = activation_feeding(node.args[0], modules)
        if act in activations and node.target in shapes:
            found[node.target] = (act, shapes[node.target])
    return found


def _act_quant_of(module: nn.Module) -> nn.Module | None:
    """The Brevitas activation quantizer of a converted activation (QuantReLU, QuantIdentity or act + QuantIdentity)."""
    if isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    return getattr(module, "act_quant", None)


def _quantize_residual(qmodel: nn.Module, layer, scaling: str, shared: bool) -> None:
    """The quantizer that ends a residual branch: a signed one of its own (``residual: separate``), or, with
    ``residual: shared`` where the skip comes from an activation (through max-pools) into a block with ``skip_quant``
    (CustomNet's ResidualBlock), both inputs of the add on that activation's grid, as FINN needs to build the add: the
    branch gets a signed quantizer one bit wider whose scale is the activation's own (tied, learned there), and the
    skip passes it unchanged (its values are already on that grid and in range)."""
    branch = cast(nn.Sequential, qmodel.get_submodule(layer.residual_quant))  # the branch's Sequential
    parent_name = layer.residual_quant.rpartition(".")[0]
    block = qmodel.get_submodule(parent_name) if parent_name else qmodel
    source = qmodel.get_submodule(layer.skip_source) if layer.skip_source else None
    source_quant = _act_quant_of(source) if source is not None else None
    if not shared or not hasattr(block, "skip_quant") or source_quant is None or not 1 < layer.a < 8:
        branch.append(signed_act(layer.a, scaling))
        return
    branch.append(tied_act(layer.a + 1, source_quant, scaling))
    block.__dict__["skip_quant"] = branch[-1]  # a reference, not a second submodule


def to_lowbit(model: nn.Module, spec: Any, input_size: int | tuple[int, ...] = 64,
              calib: Iterable[torch.Tensor] | torch.Tensor | None = None) -> nn.Module:
    """A Brevitas-quantized copy of a float ``model`` (the float model is not changed).

    ``spec``: precision name (``w4a4``), BitSpec, ``bits`` mapping or LowBitSpec. ``calib``: normalized input
    batches that initialise the activation scales; without them 16 standard-normal images are used (inputs are
    normalized to zero mean and unit variance), which a QAT run then refines. With real batches the BatchNorm
    statistics are then re-estimated on them (``recalibrate_bn``; not on the random stand-in, which would overwrite
    trained statistics with noise statistics). The resolved plan is stored as
    ``lowbit_plan`` (and the parsed spec as ``lowbit_spec``) on the returned model.
    """
    spec = LowBitSpec.parse(spec)
    qmodel = copy.deepcopy(model).eval()
    if spec.fold_bn:
        fold_batchnorm(qmodel)
    plan = resolve_spec(qmodel, spec, input_size)
    pools = _global_pools(qmodel, plan.activations, input_size)
    scaling = spec.scaling
    modules = dict(qmodel.named_modules())
    for layer in plan.layers:
        _set_module(qmodel, layer.name, quant_compute(modules[layer.name], layer.w, scaling))
    for name, bits in plan.activations.items():
        _set_module(qmodel, name, quant_activation(modules[name], bits, scaling))
    for layer in plan.layers:
        if layer.residual_quant is not None:
            _quantize_residual(qmodel, layer, scaling, spec.residual == "shared")
    # attributes of the low-bit model (torch types Module attributes as Tensor | Module)
    setattr(qmodel, "input_quant", signed_act(INPUT_BITS, scaling) if INPUT_BITS > 1 else None)
    qmodel.__class__ = _lowbit_class(type(qmodel))
    setattr(qmodel, "lowbit_plan", plan)
    setattr(qmodel, "lowbit_spec", spec)
    setattr(qmodel, "finn_pools", pools)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    qmodel.to(device)
    if calib is None:
        gen = torch.Generator().manual_seed(0)
        example = example_input(model, input_size, batch=16)
        calibrate(qmodel, torch.randn(example.shape, generator=gen))
    else:
        calib = [calib] if isinstance(calib, torch.Tensor) else list(calib)
        calibrate(qmodel, calib)
        recalibrate_bn(qmodel, calib)
    return qmodel.eval()


@contextmanager
def finn_ready(qmodel: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, the low-bit model's global average pools are ones FINN can build (``global_pool``: the
    average summed and floor-shifted to at most 8 bits on the grid of the activation before it) instead of a float
    average, which leaves a float 1/N scale between FINN's pooling and the classifier; the float pools are back
    afterwards.
    ``--format finn`` exports the model inside it; its logits differ from the model's by that rounding only (the
    training model keeps the float average, which the hls4ml flow needs). In place: a deep copy of a Brevitas model
    with MSE weight scales recurses without end."""
    saved = {}
    for pool_name, (act_name, kernel) in getattr(qmodel, "finn_pools", {}).items():
        act_quant = _act_quant_of(qmodel.get_submodule(act_name))
        if act_quant is not None:
            saved[pool_name] = qmodel.get_submodule(pool_name)
            _set_module(qmodel, pool_name, global_pool(act_quant, kernel).to(next(qmodel.parameters()).device))
    try:
        yield qmodel
    finally:
        for pool_name, pool in saved.items():
            _set_module(qmodel, pool_name, pool)


# ------------------------------------------------------------------------------------------------ statistics


def tensor_sparsity(t: torch.Tensor) -> float:
    """Fraction of exactly-zero elements of ``t`` (0.0 for an empty tensor)."""
    return float((t == 0).sum()) / t.numel() if t.numel() else 0.0


def _quant_layers(model: nn.Module):
    from brevitas.nn import QuantConv2d, QuantLinear

    for name, mod in model.named_modules():
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            yield name, mod


def layer_weight_bits(mod: Any) -> int:  # a Brevitas QuantConv2d / QuantLinear (untyped)
    """The weight bit width of a Brevitas layer (32 when its weight quantizer is disabled)."""
    if not mod.weight_quant.is_quant_enabled:
        return 32
    return round(float(mod.weight_quant.bit_width()))


@torch.no_grad()
def quant_weight_int(mod: Any) -> torch.Tensor:  # a Brevitas QuantConv2d / QuantLinear (untyped)
    """The layer's quantized weights as integers (±1 for binary layers)."""
    qw = mod.quant_weight()
    return torch.round(qw.value / qw.scale).to(torch.int32)


@torch.no_grad()
def weight_sparsity(model: nn.Module) -> list[dict[str, Any]]:
    """Per quantized layer: name, bits, weights, zeros and sparsity (fraction of zero integer weights)."""
    rows = []
    for name, mod in _quant_layers(model):
        q = quant_weight_int(mod)
        zeros = int((q == 0).sum())
        rows.append({"layer": name, "w_bits": layer_weight_bits(mod), "weights": q.numel(), "zeros": zeros,
                     "sparsity": zeros / q.numel() if q.numel() else 0.0})
    return rows


def packed_weight_bits(model: nn.Module) -> int:
    """Storage of the weights packed at their bit widths: sum of weights x bits, biases at 32 bits.

    Brevitas layers count at their weight bit width; any remaining float Conv2d/Linear at 32 bits. BatchNorm
    parameters are not counted (they fold into the conv or into FINN's thresholds).
    """
    total = 0
    quant = dict(_quant_layers(model))
    for name, mod in model.named_modules():
        if name in quant:
            total += mod.weight.numel() * layer_weight_bits(mod)
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            total += mod.weight.numel() * 32
        else:
            continue
        if mod.bias is not None:
            total += mod.bias.numel() * BIAS_BITS
    return int(total)


def layer_bits(model: nn.Module) -> dict[str, int]:
    """{layer name: weight bits} of the quantized layers."""
    return {name: layer_weight_bits(mod) for name, mod in _quant_layers(model)}


# ------------------------------------------------------------------------------------------------ training


def qat_lowbit(model: nn.Module, data, train_cfg, out_dir: str | Path, *, spec: Any = None, seed: int = 0,
               meta: dict[str, Any] | None = None, calib_batches: int = 8, show_progress: bool = False):
    """Low-bit QAT starting from the float ``model`` (a trained checkpoint): convert, calibrate, fine-tune.

    ``model`` is a float model (converted with ``spec``) or already the output of ``to_lowbit``. Training is
    edgecnn's ``fit`` with ``amp='off'`` (Brevitas' fake quantization runs in fp32) and ``channels_last`` off.
    Returns ``(quantized model with the best validation weights, FitResult)``. Checkpoints hold the Brevitas
    state dict (weights, BN, learned activation scales) under the float model's names; rebuild with
    ``to_lowbit(float_model, spec, ...)`` then ``load_state_dict``.
    """
    from edgecnn.data.batches import iterate_batches
    from edgecnn.train.checkpoint import read_checkpoint
    from edgecnn.train.trainer import fit

    if not getattr(type(model), "_edgecnn_lowbit", False):
        calib = []
        for x, _ in iterate_batches(data.splits["train"], min(64, train_cfg.batch_size), data.normalization,
                                    shuffle=True, seed=seed, channels_last=False):
            calib.append(x)
            if len(calib) >= calib_batches:
                break
        model = to_lowbit(model, spec, data.image_size, calib=calib or None)
    # no weight average: Brevitas' quantizer state (scales calibrated on the trained weights) is not averaged with it
    cfg = train_cfg.model_copy(update={"amp": "off", "channels_last": False, "ema": None}) \
        if hasattr(train_cfg, "model_copy") else replace(train_cfg, amp="off", channels_last=False)
    plan, used = getattr(model, "lowbit_plan", None), getattr(model, "lowbit_spec", None)
    meta = {**(meta or {}), "lowbit": plan.to_dict() if plan is not None else None,
            "lowbit_spec": used.to_dict() if used is not None else None}
    result = fit(model, data, cfg, out_dir, seed=seed, meta=meta, show_progress=show_progress)
    state, _, _ = read_checkpoint(result.best_checkpoint)
    model.load_state_dict(state)
    return model.eval(), result


def load_lowbit_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a QAT checkpoint written by ``qat_lowbit``: float model from the meta, ``to_lowbit`` with the
    stored spec, then the Brevitas state dict (strict). Returns (model in eval mode, meta).

    edgecnn's ``load_checkpoint`` cannot read these files: their state dict has the quantizers' keys.
    """
    from edgecnn.train.checkpoint import checkpoint_meta, load_state_strict, model_from_meta, read_checkpoint

    state, _, meta = read_checkpoint(path)
    if not meta.get("lowbit_spec"):
        raise EdgeCNNError(f"{path} is not a low-bit checkpoint (no lowbit_spec in its metadata); use load_checkpoint")
    model = to_lowbit(model_from_meta(checkpoint_meta(meta, path)), meta["lowbit_spec"], meta["input_size"])
    return load_state_strict(model, state, path), meta
