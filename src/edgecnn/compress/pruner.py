"""Structured (channel) pruning plumbing on torch-pruning's dependency graph, shared by ``prune`` (the verb,
with fine-tuning) and ``sensitivity`` (per-layer analysis and automatic ratios).

The DependencyGraph groups coupled layers, so whole filters are removed together with every tensor slice that
depends on them: residual adds, concatenations (SqueezeNet fire modules) and depthwise convs stay consistent and
the result is a smaller dense model. Importance: L1/L2 filter norm, BN scale or first-order Taylor; ratios global
(one ranking over all layers), uniform or per layer; progressive pruning until params or MACs reach a goal.
The classifier (``output_layer``) is never pruned.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.data.batches import iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.models.profile import compute_layers, count_params, output_layer, profile_model, zero_input
from edgecnn.registry import Registry

__all__ = ["IMPORTANCE", "IMPORTANCES", "PROGRESSIVE_STEPS", "accumulate_taylor_grads", "channel_table", "check_ratio",
           "compute_layers", "layer_ratio_dict", "make_pruner", "metric_fn", "output_layer", "prunable_layers",
           "prune_until", "register_importance", "structured_prune", "torch_pruning"]

#: The registered importances (IMPORTANCE) in the order errors list them; prune.importance takes these values.
IMPORTANCES = ("l1", "l2", "bn", "taylor")
PROGRESSIVE_STEPS = 200  # granularity of target-driven pruning: 0.5% of the channels per step


def torch_pruning():
    """The torch_pruning module (an optional dependency: a clear error when it is missing)."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise EdgeCNNError("structured pruning needs torch-pruning: pip install 'edgecnn[prune]'") from None
    return tp


def check_ratio(value: float | None, what: str) -> float:
    """``value`` as a float, or an error naming ``what`` unless it lies strictly between 0 and 1."""
    if not isinstance(value, (int, float)) or not 0 < float(value) < 1:
        raise EdgeCNNError(f"{what} must lie strictly between 0 and 1 (a fraction), got {value}")
    return float(value)


def _resolve_names(model: nn.Module, names: Iterable[str], allowed: list[str], what: str) -> list[nn.Module]:
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in allowed:
            raise EdgeCNNError(f"{what}: no prunable layer '{name}' in {type(model).__name__}"
                               f"{did_you_mean(name, allowed)} (run with ratios: auto or see prunable_layers() "
                               "for the names)")
        out.append(modules[name])
    return out


#: ``fn(torch_pruning, model) -> importance``: how channels are ranked, by ``prune.importance`` name.
ImportanceFn = Callable[[Any, nn.Module], Any]
IMPORTANCE: Registry[ImportanceFn] = Registry("pruning importance", "edgecnn prune --help")


def register_importance(name: str) -> Callable[[ImportanceFn], ImportanceFn]:
    """Register ``fn(tp, model)`` (``tp``: the torch_pruning module) as the channel importance ``name``."""
    return IMPORTANCE.register(name)


@register_importance("l1")
def _l1(tp: Any, model: nn.Module) -> Any:
    """Filter weight L1 norm."""
    return tp.importance.MagnitudeImportance(p=1)


@register_importance("l2")
def _l2(tp: Any, model: nn.Module) -> Any:
    """Filter weight L2 norm."""
    return tp.importance.MagnitudeImportance(p=2)


@register_importance("bn")
def _bn(tp: Any, model: nn.Module) -> Any:
    """BatchNorm scale of the channel (the model needs BatchNorm layers)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise EdgeCNNError(f"importance 'bn' ranks channels by BatchNorm scale but {type(model).__name__} has no "
                           "BatchNorm layer; use l1, l2 or taylor")
    return tp.importance.BNScaleImportance()


@register_importance("taylor")
def _taylor(tp: Any, model: nn.Module) -> Any:
    """First-order Taylor: gradient x weight (the gradients must be present: ``accumulate_taylor_grads``)."""
    return tp.importance.TaylorImportance()


def _importance(kind: str, model: nn.Module):
    tp = torch_pruning()
    if kind not in IMPORTANCE:
        raise EdgeCNNError(f"unknown importance '{kind}'{did_you_mean(kind, IMPORTANCES)}; "
                           f"choose one of {', '.join(IMPORTANCES)}")
    return IMPORTANCE.get(kind)(tp, model)


def _graph(model: nn.Module, input_size: int):
    tp = torch_pruning()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model.eval(), example_inputs=zero_input(model, input_size))


def prunable_layers(model: nn.Module, input_size: int, exclude: Iterable[str] = ()) -> dict[str, list[str]]:
    """Groups of layers whose output channels are pruned together: root layer name -> coupled layer names.

    The classifier and the ``exclude``d layers are left out, and so is any group that contains them."""
    dg = _graph(model, input_size)
    names = {m: n for n, m in model.named_modules()}
    ignored = _ignored(model, input_size, exclude)
    groups: dict[str, list[str]] = {}
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        members = [names[dep.target.module] for dep, _ in group
                   if dg.is_out_channel_pruning_fn(dep.handler)
                   and isinstance(dep.target.module, (nn.Conv2d, nn.Linear))]
        if members:
            groups[members[0]] = list(dict.fromkeys(members))
    return groups


def _ignored(model: nn.Module, input_size: int, exclude: Iterable[str]) -> list[nn.Module]:
    layers = compute_layers(model, input_size)
    modules = dict(model.named_modules())
    ignored = [modules[layers[-1]]]
    for name in exclude:
        if name not in modules or not isinstance(modules[name], (nn.Conv2d, nn.Linear)):
            raise EdgeCNNError(f"prune.exclude: no Conv2d/Linear layer '{name}' in {type(model).__name__}"
                               f"{did_you_mean(name, layers)}")
        ignored.append(modules[name])
    return ignored


def layer_ratio_dict(model: nn.Module, input_size: int, ratios: dict[str, float],
                     exclude: Iterable[str] = ()) -> dict[nn.Module, float]:
    """Check per-layer ratios (names of prunable Conv2d/Linear layers, values in (0, 1)) and map them to modules."""
    groups = prunable_layers(model, input_size, exclude)
    allowed = sorted({n for members in groups.values() for n in members})
    modules = _resolve_names(model, ratios, allowed, "per-layer ratio")
    return {m: check_ratio(r, f"per-layer ratio of '{name}'") for m, (name, r) in zip(modules, ratios.items())}


def make_pruner(model: nn.Module, input_size: int, *, importance: str = "l2", ratio: float = 0.0,
                ratios: dict[str, float] | None = None, scope: str = "global", steps: int = 1,
                max_layer_ratio: float = 0.9, round_to: int | None = None, exclude: Iterable[str] = ()):
    """A torch-pruning MetaPruner over ``model`` (the classifier and ``exclude`` kept); ``steps`` iterative steps
    reach ``ratio`` (channels removed; per layer with ``ratios``)."""
    tp = torch_pruning()
    if scope not in ("global", "uniform"):
        raise EdgeCNNError(f"unknown pruning scope '{scope}'; choose global or uniform")
    exclude = list(exclude)
    ratio_dict = layer_ratio_dict(model, input_size, ratios, exclude) if ratios else None
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.pruner.MetaPruner(
            model, zero_input(model, input_size), importance=_importance(importance, model),
            global_pruning=scope == "global", pruning_ratio=ratio, pruning_ratio_dict=ratio_dict,
            max_pruning_ratio=max_layer_ratio, iterative_steps=steps, round_to=round_to,
            ignored_layers=_ignored(model, input_size, exclude))


def accumulate_taylor_grads(model: nn.Module, data: PreparedData, batches: int = 8, batch_size: int = 64,
                            seed: int = 0) -> None:
    """Gradients of the loss on a few train batches, for Taylor importance (BN statistics left unchanged)."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(iterate_batches(data.splits["train"], batch_size, data.normalization,
                                               shuffle=True, seed=seed)):
        if i >= batches:
            break
        F.cross_entropy(model(x.to(memory_format=torch.contiguous_format)), y).backward()
    model.train(was_training)


def metric_fn(kind: str, input_size: int) -> Callable[[nn.Module], float]:
    """The size measure a pruning target names: ``params`` or ``macs`` (at ``input_size``) of a model."""
    if kind == "params":
        return lambda m: float(count_params(m))
    if kind == "macs":
        return lambda m: float(profile_model(m, input_size).macs)
    raise EdgeCNNError(f"unknown pruning target '{kind}'; choose params, macs or latency")


def prune_until(pruner, model: nn.Module, metric: Callable[[nn.Module], float], goal: float,
                before_step: Callable[[], None] | None = None) -> float:
    """Step a progressive pruner until ``metric(model) <= goal``; returns the metric reached."""
    value = metric(model)
    while value > goal:
        if pruner.current_step >= pruner.iterative_steps:
            raise EdgeCNNError(f"cannot prune below {value:.4g} (asked {goal:.4g}): every layer reached "
                               "max_layer_ratio; raise prune.max_layer_ratio, exclude fewer layers or ask for less")
        if before_step is not None:
            before_step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner.step()
        model.eval()
        value = metric(model)
    return value


def structured_prune(model: nn.Module, input_size: int, *, importance: str = "l2", ratio: float | None = None,
                     ratios: dict[str, float] | None = None, target: str | None = None,
                     target_ratio: float | None = None, scope: str = "global", max_layer_ratio: float = 0.9,
                     round_to: int | None = None, exclude: Iterable[str] = ()) -> nn.Module:
    """One-shot structured pruning in place (no fine-tuning): ``ratio`` of the channels (global ranking or
    uniform), per-layer ``ratios``, or until params/MACs are ``target_ratio`` of the original. Returns ``model``.

    For Taylor importance, gradients must be present (``accumulate_taylor_grads``)."""
    if target is not None:
        target_ratio = check_ratio(target_ratio, "target_ratio")
        metric = metric_fn(target, input_size)
        goal = target_ratio * metric(model)
        pruner = make_pruner(model, input_size, importance=importance, ratio=1.0, scope=scope,
                             steps=PROGRESSIVE_STEPS, max_layer_ratio=max_layer_ratio, round_to=round_to,
                             exclude=exclude)
        prune_until(pruner, model, metric, goal)
        return model
    if ratio is None and not ratios:
        raise EdgeCNNError("structured pruning needs a target (target + target_ratio), a ratio or per-layer ratios")
    pruner = make_pruner(model, input_size, importance=importance, ratio=check_ratio(ratio, "ratio") if ratio else 0.0,
                         ratios=ratios, scope=scope, max_layer_ratio=max_layer_ratio, round_to=round_to,
                         exclude=exclude)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner.step()
    return model.eval()


def channel_table(before: nn.Module, after: nn.Module) -> list[dict[str, Any]]:
    """Per Conv2d/Linear layer: output channels and params before and after pruning."""
    after_modules = dict(after.named_modules())
    rows = []
    for name, m in before.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name in after_modules:
            a = after_modules[name]
            out_b = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            out_a = a.out_channels if isinstance(a, nn.Conv2d) else a.out_features
            rows.append({"layer": name, "op": type(m).__name__, "out_before": out_b, "out_after": out_a,
                         "params_before": count_params(m), "params_after": count_params(a)})
    return rows
