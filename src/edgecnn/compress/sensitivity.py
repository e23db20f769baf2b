"""Per-layer pruning sensitivity: validation accuracy after pruning each layer group alone at several ratios
(no fine-tuning), its plot, and per-layer ratios chosen from it to meet a params/MACs target (``ratios: auto``).

The ratios are chosen with one accuracy-drop tolerance for all layers (the classic sensitivity-analysis
recipe of Han et al. 2015 / Distiller): each layer is pruned as far as its own curve allows within the
tolerance, and the tolerance is the smallest one whose pruned model meets the target.
"""
from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgecnn.compress.pruner import check_ratio, make_pruner, metric_fn, prunable_layers
from edgecnn.data.batches import TensorSet
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.predict import predict_logits

log = logging.getLogger(__name__)


@dataclass
class Sensitivity:
    base_accuracy: float
    ratios: list[float]
    layers: dict[str, list[float]]  # root layer of each group -> accuracy at each ratio
    groups: dict[str, list[str]]  # root layer -> the layers pruned with it
    images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def drop(self, layer: str) -> list[float]:
        """Accuracy lost at each ratio, made non-decreasing (pruning more never counts as helping)."""
        out, worst = [], 0.0
        for acc in self.layers[layer]:
            worst = max(worst, self.base_accuracy - acc)
            out.append(worst)
        return out


def _subset(data: PreparedData, split: str, n: int, seed: int) -> TensorSet:
    pool = data.splits[split]
    if len(pool) == 0:
        raise EdgeCNNError(f"sensitivity analysis scores the {split} split, which is empty; "
                           f"set data.split.{split} above 0")
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorSet(pool.images[idx], pool.labels[idx])


def _accuracy(model: nn.Module, subset: TensorSet, data: PreparedData) -> float:
    logits = predict_logits(model, subset, data.normalization, channels_last=False)
    return float((logits.argmax(1) == subset.labels).float().mean())


def layer_sensitivity(model: nn.Module, data: PreparedData, *, ratios: Iterable[float] = (0.2, 0.4, 0.6, 0.8),
                      importance: str = "l2", exclude: Iterable[str] = (), max_images: int = 512, seed: int = 0,
                      split: str = "val") -> Sensitivity:
    """Accuracy on (up to ``max_images`` of) ``split`` after pruning each prunable layer group alone at each
    ratio, without fine-tuning. Taylor importance needs gradients on ``model`` (accumulate_taylor_grads)."""
    ratios = sorted(check_ratio(r, "sensitivity ratio") for r in ratios)
    size = data.image_size
    subset = _subset(data, split, max_images, seed)
    model = model.eval()
    base = _accuracy(model, subset, data)
    groups = prunable_layers(model, size, exclude)
    curves: dict[str, list[float]] = {}
    for root in groups:
        accs = []
        for r in ratios:
            trial = copy.deepcopy(model)
            pruner = make_pruner(trial, size, importance=importance, ratio=0.0, ratios={root: r}, scope="uniform",
                                 max_layer_ratio=0.99, exclude=exclude)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruner.step()
            accs.append(_accuracy(trial.eval(), subset, data))
        curves[root] = accs
        log.info("sensitivity %s: %s", root, ", ".join(f"{r:.0%}->{a:.3f}" for r, a in zip(ratios, accs)))
    return Sensitivity(base, ratios, curves, groups, len(subset))


def plot_sensitivity(sens: Sensitivity, path: str | Path) -> Path:
    """Accuracy against pruning ratio, one line per layer group."""
    from edgecnn.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for layer, accs in sens.layers.items():
        ax.plot([0.0, *sens.ratios], [sens.base_accuracy, *accs], marker="o", markersize=3, label=layer)
    ax.set_xlabel("fraction of the layer's channels pruned")
    ax.set_ylabel(f"validation accuracy ({sens.images} images, no fine-tuning)")
    ax.grid(alpha=0.3)
    if len(sens.layers) <= 24:
        ax.legend(fontsize=6, ncols=2 if len(sens.layers) > 12 else 1, loc="lower left")
    return save_figure(fig, path)


def ratios_for_tolerance(sens: Sensitivity, tolerance: float, max_ratio: float) -> dict[str, float]:
    """Per layer, the largest ratio (linear between measured points) whose accuracy drop is within ``tolerance``."""
    chosen = {}
    for layer in sens.layers:
        xs, drops = [0.0, *sens.ratios], [0.0, *sens.drop(layer)]
        ratio = 0.0
        for (x0, d0), (x1, d1) in zip(zip(xs, drops), zip(xs[1:], drops[1:])):
            if d1 <= tolerance:
                ratio = x1
                continue
            if d0 <= tolerance < d1:
                ratio = x0 + (tolerance - d0) * (x1 - x0) / (d1 - d0)
            break
        ratio = min(ratio, max_ratio)
        if ratio >= 0.01:
            chosen[layer] = round(ratio, 4)
    return chosen


def choose_ratios(model: nn.Module, input_size: int, sens: Sensitivity, target: str, target_ratio: float, *,
                  importance: str = "l2", max_layer_ratio: float = 0.9, round_to: int | None = None,
                  exclude: Iterable[str] = (), grads: Callable[[nn.Module], None] | None = None,
                  iterations: int = 14) -> dict[str, float]:
    """Per-layer ratios that bring ``target`` (params or macs) to ``target_ratio`` of the original with the
    smallest common accuracy-drop tolerance (bisection; each candidate is pruned on a copy and measured)."""
    target_ratio = check_ratio(target_ratio, "target_ratio")
    metric = metric_fn(target, input_size)
    goal = target_ratio * metric(model)

    def measure(ratios: dict[str, float]) -> float:
        if not ratios:
            return metric(model)
        trial = copy.deepcopy(model)
        if grads is not None:
            grads(trial)
        pruner = make_pruner(trial, input_size, importance=importance, ratio=0.0, ratios=ratios, scope="uniform",
                             max_layer_ratio=0.99, round_to=round_to, exclude=exclude)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner.step()
        return metric(trial.eval())

    lo, hi = 0.0, 1.0
    best = ratios_for_tolerance(sens, hi, max_layer_ratio)
    if measure(best) > goal:
        raise EdgeCNNError(f"per-layer ratios up to {min(max_layer_ratio, sens.ratios[-1]):.0%} cannot bring "
                           f"{target} to {target_ratio:.0%}; add larger sensitivity_ratios, raise max_layer_ratio "
                           "or use a global ratio")
    for _ in range(iterations):
        mid = (lo + hi) / 2
        candidate = ratios_for_tolerance(sens, mid, max_layer_ratio)
        if measure(candidate) <= goal:
            hi, best = mid, candidate
        else:
            lo = mid
    log.info("auto ratios: accuracy-drop tolerance %.3f -> %s", hi, best)
    return best
