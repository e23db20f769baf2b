"""Pruning, the verb: structured (channel) pruning with torch-pruning's dependency graph (compress/pruner.py), or
unstructured magnitude pruning with the seed's polynomial-decay schedule (torch.nn.utils.prune); both fine-tuned
through trainer.fit, measured before and after (params, MACs, ONNX size, accuracy, ONNX Runtime latency).

Structured targets: a ratio of channels (global, uniform or per layer, or ``ratios: auto`` from the sensitivity
analysis), or a ratio of parameters, MACs or measured latency, reached in ``steps`` rounds with fine-tuning in
between. Unstructured sparsity ramps as s(t) = s_f * (1 - (1 - t/T)^3) (Zhu & Gupta 2017, TF-MOT's PolynomialDecay)
per layer and is made permanent at the end. A structurally pruned checkpoint records its shapes in
``meta['pruned']['layout']``; ``load_checkpoint`` rebuilds it from the registry model (nothing is pickled).
"""
from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

from edgecnn.compress.options import PruneConfig
from edgecnn.compress.pruner import (  # noqa: F401 (the pruner plumbing is re-exported)
    IMPORTANCES,
    PROGRESSIVE_STEPS,
    accumulate_taylor_grads,
    channel_table,
    check_ratio,
    compute_layers,
    layer_ratio_dict,
    make_pruner,
    metric_fn,
    output_layer,
    prunable_layers,
    prune_until,
    structured_prune,
)
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.models.layout import apply_layout, pruned_layout  # noqa: F401 (re-exported)
from edgecnn.models.profile import count_params, profile_model
from edgecnn.train.checkpoint import base_meta, load_checkpoint, model_from_meta, read_checkpoint, save_checkpoint
from edgecnn.train.options import TrainConfig

log = logging.getLogger(__name__)

#: Version of the pruning recipe (part of the pipeline's prune-stage hash).
PRUNE_RECIPE_VERSION = 1


# ---------------------------------------------------------------------------------------------- unstructured

def polynomial_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0, power: int = 3) -> float:
    """Sparsity at ``step`` of the polynomial-decay schedule: initial -> final over ``total_steps`` (then final)."""
    progress = min(1.0, max(0.0, step / max(1, total_steps)))
    return final + (initial - final) * (1.0 - progress) ** power


def prunable_weights(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """The Conv2d/Linear layers whose weights unstructured pruning sparsifies."""
    exclude = set(exclude)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name in exclude:
        if name not in layers:
            raise EdgeCNNError(f"prune.exclude: no Conv2d/Linear layer '{name}'{did_you_mean(name, layers)}")
    return {n: m for n, m in layers.items() if n not in exclude}


@torch.no_grad()
def set_sparsity(module: nn.Module, sparsity: float) -> None:
    """Mask the smallest-magnitude weights of ``module`` so that exactly round(sparsity * n) are zero (already
    masked weights stay masked), through torch.nn.utils.prune's reparametrization."""
    pruned = hasattr(module, "weight_orig")
    weight = module.weight_orig if pruned else module.weight
    n = weight.numel()
    k = int(round(sparsity * n))
    scores = weight.detach().abs().flatten().float()
    if pruned:
        scores = scores * module.weight_mask.flatten().float()
    mask = torch.ones(n, dtype=weight.dtype)
    if k > 0:
        mask[torch.topk(scores, k, largest=False).indices] = 0
    mask = mask.view(weight.shape)
    if pruned:
        module.weight_mask.copy_(mask)
    else:
        tprune.custom_from_mask(module, "weight", mask)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold the pruning masks into the weights (plain tensors with zeros; torch.nn.utils.prune.remove)."""
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            tprune.remove(module, "weight")
    return model


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Per Conv2d/Linear layer: weights, zeros and sparsity (the seed's Table 4.4 columns), plus totals."""
    layers, total, zeros = [], 0, 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            z = int((w == 0).sum())
            layers.append({"layer": name, "op": type(m).__name__, "weights": w.numel(), "zeros": z,
                           "nonzero": w.numel() - z, "sparsity": z / w.numel()})
            total, zeros = total + w.numel(), zeros + z
    all_params = count_params(model)
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {"layers": layers, "weights": total, "zeros": zeros, "sparsity": zeros / max(1, total),
            "params": all_params, "params_sparsity": all_zeros / max(1, all_params)}


class SparsitySchedule:
    """fit() loss hook: raises the sparsity of every layer along the polynomial schedule, then cross-entropy.

    Sparsity reaches ``final`` after ``ramp_steps`` optimizer steps in ``updates`` equal mask updates."""

    def __init__(self, layers: dict[str, nn.Module], final: float, ramp_steps: int, updates: int,
                 label_smoothing: float = 0.0) -> None:
        self.layers, self.final, self.label_smoothing = layers, final, label_smoothing
        updates = max(1, min(updates, ramp_steps))
        self.events = [round(k * ramp_steps / updates) for k in range(1, updates + 1)]
        self.ramp_steps, self.step, self.current = ramp_steps, 0, 0.0
        self.history: list[tuple[int, float]] = []

    def update(self, sparsity: float) -> None:
        for module in self.layers.values():
            set_sparsity(module, sparsity)
        self.current = sparsity
        self.history.append((self.step, sparsity))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.step += 1
        if self.events and self.step >= self.events[0]:
            while self.events and self.step >= self.events[0]:
                self.events.pop(0)
            self.update(polynomial_sparsity(self.step, self.ramp_steps, self.final))
        logits = model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), logits

    def finish(self) -> None:
        """Reach the final sparsity even when training stopped early."""
        if self.current < self.final:
            self.update(self.final)


# ---------------------------------------------------------------------------------------------- measurement

def export_and_time(model: nn.Module, path: Path, meta: dict[str, Any], *, threads: int | None = None,
                    repeats: int = 30, batch: int = 1) -> tuple[Path, float]:
    """Export ``model`` to ONNX at ``path`` and time it in ONNX Runtime; (path, median ms)."""
    from edgecnn.export.onnx import export_onnx
    from edgecnn.measure.runtimes import file_latency, file_predictor

    size = meta["input_size"]
    export_onnx(copy.deepcopy(model), path, size, {**meta, "precision": "fp32"})
    threads = threads or torch.get_num_threads()
    lat = file_latency(file_predictor(path, "onnxruntime", threads), (1, 3, size, size), batch, "onnxruntime", threads,
                       repeats=repeats)
    return path, lat.median_ms


def compare_latency(paths: dict[str, Path], input_size: int, *, threads: int | None = None, repeats: int = 30,
                    rounds: int = 3, batch: int = 1) -> dict[str, float]:
    """Median ONNX Runtime latency (ms) of several files, measured alternately (fair under CPU noise)."""
    import statistics

    from edgecnn.measure.runtimes import file_latency, file_predictor

    threads = threads or torch.get_num_threads()
    predictors = {k: file_predictor(p, "onnxruntime", threads) for k, p in paths.items()}
    medians: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, predict in predictors.items():
            medians[k].append(file_latency(predict, (1, 3, input_size, input_size), batch, "onnxruntime", threads,
                                           repeats=repeats).median_ms)
    return {k: statistics.median(v) for k, v in medians.items()}


def latency_to_macs(model: nn.Module, meta: dict[str, Any], latency_ratio: float, *, importance: str = "l2",
                    scope: str = "global", max_layer_ratio: float = 0.9, round_to: int | None = None,
                    exclude: Iterable[str] = (), threads: int | None = None, repeats: int = 30,
                    grads: Callable[[nn.Module], None] | None = None) -> float:
    """The MACs ratio at which a pruned copy of ``model`` runs in ``latency_ratio`` of the original batch-1 ONNX
    Runtime latency (progressive pruning of a copy, timed every 5% of MACs)."""
    size = meta["input_size"]
    work = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format)
    if grads is not None:
        grads(work)
    metric = metric_fn("macs", size)
    base_macs = metric(work)
    pruner = make_pruner(work, size, importance=importance, ratio=1.0, scope=scope, steps=PROGRESSIVE_STEPS,
                         max_layer_ratio=max_layer_ratio, round_to=round_to, exclude=exclude)
    with tempfile.TemporaryDirectory() as tmp:
        _, base_ms = export_and_time(work, Path(tmp) / "base.onnx", meta, threads=threads, repeats=repeats)
        previous = (1.0, 1.0)
        for fraction in [1 - 0.05 * i for i in range(1, 19)]:
            reached = prune_until(pruner, work, metric, fraction * base_macs) / base_macs
            _, ms = export_and_time(work, Path(tmp) / "trial.onnx", meta, threads=threads, repeats=repeats)
            log.info("latency calibration: %.0f%% MACs -> %.0f%% latency", 100 * reached, 100 * ms / base_ms)
            if ms / base_ms <= latency_ratio:
                (m0, l0), (m1, l1) = previous, (reached, ms / base_ms)
                return m1 if l0 == l1 else m0 + (latency_ratio - l0) * (m1 - m0) / (l1 - l0)
            previous = (reached, ms / base_ms)
    raise EdgeCNNError(f"pruning to 10% of the MACs does not bring the latency to {latency_ratio:.0%} of the "
                       "original on this machine; ask for a higher target_ratio")


# ---------------------------------------------------------------------------------------------- the verb

@dataclass
class PruneResult:
    checkpoint: Path
    onnx: Path | None
    method: str
    before: dict[str, Any]
    after: dict[str, Any]
    layers: list[dict[str, Any]]
    options: dict[str, Any]
    ratios: dict[str, float] | None = None
    sensitivity: dict[str, Any] | None = None
    finetune: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint"], d["onnx"] = str(self.checkpoint), str(self.onnx) if self.onnx else None
        return d


def _accuracy(model: nn.Module, data: PreparedData, split: str) -> float | None:
    from edgecnn.measure.predict import predict_logits

    subset = data.splits[split]
    if len(subset) == 0:
        return None
    logits = predict_logits(model, subset, data.normalization)
    return float((logits.argmax(1) == subset.labels).float().mean())


def _measure(model: nn.Module, data: PreparedData) -> dict[str, Any]:
    prof = profile_model(model, data.image_size)
    return {"params": prof.params, "macs": prof.macs, "val_accuracy": _accuracy(model, data, "val"),
            "test_accuracy": _accuracy(model, data, "test")}


def _finetune_cfg(train: TrainConfig, **updates: Any) -> TrainConfig:
    return TrainConfig.model_validate({**train.model_dump(), "early_stop_patience": None, **updates})


def prune_model(model: nn.Module, meta: dict[str, Any], data: PreparedData, options: PruneConfig,
                train: TrainConfig, out_dir: str | Path, *, seed: int = 0, show_progress: bool = True,
                measure_latency: bool = True) -> PruneResult:
    """Prune ``model`` (described by checkpoint ``meta``) as ``options`` say, fine-tune it with ``train`` on
    ``data``, and write pruned.safetensors, pruned.onnx and prune.json (before/after params, MACs, ONNX size,
    accuracy, ONNX Runtime batch-1 latency, per-layer channels or sparsity) into ``out_dir``."""
    from edgecnn.train.trainer import fit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = data.image_size
    if meta.get("input_size") != size or meta.get("classes", data.classes) != data.classes:
        raise EdgeCNNError("the data does not match the model (input size or classes differ); prune with the data "
                           "the model was trained on")
    desc = base_meta(meta)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    original = copy.deepcopy(model)
    before = _measure(model, data)
    threads = options.latency_threads
    paths = {}
    if measure_latency:
        paths["base"], _ = export_and_time(model, out_dir / "base.onnx", desc, threads=threads, repeats=3)
    grads = None
    if options.importance == "taylor" and options.method == "structured":
        def grads(m: nn.Module) -> None:
            accumulate_taylor_grads(m, data, seed=seed)

    ratios, sensitivity, finetune = None, None, {}
    ft_dir = out_dir / "finetune"
    if options.method == "unstructured":
        sparsity = check_ratio(options.ratio, "ratio (target sparsity)")
        layers = prunable_weights(model, options.exclude)
        ft_cfg = _finetune_cfg(train, ema=None)  # an average of masked weights would not be masked, nor the masks 0/1
        total = math.ceil(len(data.splits["train"]) / ft_cfg.batch_size) * ft_cfg.epochs
        schedule = SparsitySchedule(layers, sparsity, max(1, int(options.ramp * total)), options.sparsity_steps,
                                    ft_cfg.label_smoothing)
        pmeta = {**desc, "pruned": {"method": "unstructured", "sparsity": sparsity}}
        result = fit(model, data, ft_cfg, ft_dir, seed=seed, meta=pmeta, show_progress=show_progress, loss_fn=schedule)
        schedule.finish()  # the last epoch's weights are kept: the best-val epoch may predate the final sparsity
        make_permanent(model)
        finetune = {"epochs": result.epochs_run, "final_val_acc": result.history[-1]["val_acc"],
                    "schedule": schedule.history}
    else:
        from edgecnn.compress.sensitivity import (
            choose_ratios,
            layer_sensitivity,
            plot_sensitivity,
        )

        target, target_ratio = options.target, options.target_ratio
        common = dict(importance=options.importance, scope=options.scope, max_layer_ratio=options.max_layer_ratio,
                      round_to=options.round_to, exclude=options.exclude)
        if isinstance(options.ratios, dict):
            layer_ratio_dict(model, size, options.ratios, options.exclude)  # clear errors before any work
        if target == "latency":
            target_ratio = latency_to_macs(model, desc, target_ratio, threads=threads, repeats=options.latency_repeats,
                                           grads=grads, **common)
            target = "macs"
            log.info("latency target -> %.1f%% of the MACs", 100 * target_ratio)
        if options.ratios == "auto":
            if grads is not None:
                grads(model)
            sens = layer_sensitivity(model, data, ratios=options.sensitivity_ratios, importance=options.importance,
                                     exclude=options.exclude, max_images=options.sensitivity_images, seed=seed)
            plot_sensitivity(sens, out_dir / "sensitivity.png")
            (out_dir / "sensitivity.json").write_text(json.dumps(sens.to_dict(), indent=1))
            ratios = choose_ratios(model, size, sens, target, target_ratio, importance=options.importance,
                                   max_layer_ratio=options.max_layer_ratio, round_to=options.round_to,
                                   exclude=options.exclude, grads=grads)
            sensitivity = sens.to_dict()
            target = None  # the chosen per-layer ratios meet the target
        elif isinstance(options.ratios, dict):
            ratios = dict(options.ratios)
        steps = options.steps
        if target is not None:
            metric = metric_fn(target, size)
            base_value = metric(model)
            pruner = make_pruner(model, size, ratio=1.0, steps=PROGRESSIVE_STEPS, **common)
        else:
            pruner = make_pruner(model, size, ratio=options.ratio or 0.0, ratios=ratios, steps=steps, **common)
        rounds = []
        for k in range(1, steps + 1):
            if grads is not None:
                grads(model)
            if target is not None:
                goal = base_value * (1 - (1 - target_ratio) * k / steps)
                prune_until(pruner, model, metric, goal)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pruner.step()
            model.eval()
            prof = profile_model(model, size)
            rounds.append({"round": k, "params": prof.params, "macs": prof.macs})
            log.info("prune round %d/%d: %.1f%% params, %.1f%% MACs", k, steps,
                     100 * prof.params / before["params"], 100 * prof.macs / before["macs"])
            if k < steps and options.step_epochs:
                layout = pruned_layout(model, model_from_meta(desc))
                fit(model, data, _finetune_cfg(train, epochs=options.step_epochs, warmup_epochs=0),
                    out_dir / f"round{k}", seed=seed + k,
                    meta={**desc, "pruned": {"method": "structured", "layout": layout}}, show_progress=show_progress)
        model.zero_grad(set_to_none=True)
        pmeta = {**desc, "pruned": {"method": "structured", "layout": pruned_layout(model, model_from_meta(desc)),
                                    "importance": options.importance, "scope": options.scope}}
        result = fit(model, data, _finetune_cfg(train), ft_dir, seed=seed, meta=pmeta, show_progress=show_progress)
        state, _, _ = read_checkpoint(result.best_checkpoint)
        model.load_state_dict(state)
        finetune = {"epochs": result.epochs_run, "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
                    "rounds": rounds}
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    pmeta["pruned"].update(base_params=before["params"], base_macs=before["macs"])
    checkpoint = save_checkpoint(model, out_dir / "pruned.safetensors", pmeta)
    after = _measure(model, data)
    onnx_path = None
    if measure_latency:
        onnx_path, _ = export_and_time(model, out_dir / "pruned.onnx", pmeta, threads=threads, repeats=3)
        paths["pruned"] = onnx_path
        ms = compare_latency(paths, size, threads=threads, repeats=options.latency_repeats)
        for record, key in ((before, "base"), (after, "pruned")):
            record["latency_ms_onnxruntime_b1"] = round(ms[key], 4)
            record["onnx_bytes"] = paths[key].stat().st_size
            record["onnx_gzip_bytes"] = len(gzip.compress(paths[key].read_bytes(), 6))
        after["speedup_onnxruntime_b1"] = round(ms["base"] / ms["pruned"], 3)
    after["params_ratio"] = after["params"] / before["params"]
    after["macs_ratio"] = after["macs"] / before["macs"]
    if options.method == "unstructured":
        report = sparsity_report(model)
        layers = report.pop("layers")
        after.update(report)
    else:
        layers = channel_table(original, model)
    res = PruneResult(checkpoint, onnx_path, options.method, before, after, layers, options.model_dump(), ratios,
                      sensitivity, finetune)
    (out_dir / "prune.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))
    return res


def prune(checkpoint: str | Path, options: PruneConfig | None = None, *, data: str | Path | PreparedData | None = None,
          train: TrainConfig | None = None, out_dir: str | Path | None = None, seed: int = 0,
          show_progress: bool = True, measure_latency: bool = True) -> PruneResult:
    """Prune an edgecnn checkpoint (see ``prune_model``); ``data`` is the run's data by default (its split.json),
    else an ImageFolder or a PreparedData; results go to ``<checkpoint stem>-pruned/`` next to it by default."""
    from edgecnn.data.for_model import data_for_checkpoint

    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    options = options or PruneConfig(target="macs", target_ratio=0.5)
    if isinstance(data, PreparedData):
        prepared = data
    else:
        prepared = data_for_checkpoint(checkpoint, meta, Path(data) if data else None, seed)
    norm = meta.get("normalization")
    if norm:
        from edgecnn.data.batches import Normalization

        prepared = replace(prepared, normalization=Normalization(tuple(norm["mean"]), tuple(norm["std"])))
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"{checkpoint.stem}-pruned"
    return prune_model(model, meta, prepared, options, train or TrainConfig(epochs=5, lr=1e-3), out_dir, seed=seed,
                       show_progress=show_progress, measure_latency=measure_latency)
