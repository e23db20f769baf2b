"""Pruning, the verb: structured (channel) pruning with torch-pruning's dependency graph (compress/pruner.py), or
unstructured magnitude pruning with the seed's polynomial-decay schedule (torch.nn.utils.prune); both fine-tuned
through trainer.fit, measured before and after (params, MACs, ONNX size, accuracy, ONNX Runtime latency).

Structured targets: a ratio of channels (global, uniform or per layer, or ``ratios: auto`` from the sensitivity
analysis), or a ratio of parameters, MACs or measured latency, reached in ``steps`` rounds with fine-tuning in
between. Unstructured sparsity ramps as s(t) = s_f * (1 - (1 - t/T)^3) (Zhu & Gupta 2017, TF-MOT's PolynomialDecay)
per layer and is made permanent at the end. A structurally pruned checkpoint records its shapes in
``meta['pruned']['layout']``; ``load_checkpoint`` rebuilds it from the registry model (nothing is pickled).

Each method (a ``prune.method`` value) is a handler registered with ``@register_pruning``, as the precisions are;
``prune_model`` measures the model, runs the method and measures the result.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

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
from edgecnn.records import PruneResult
from edgecnn.registry import Registry
from edgecnn.results import CheckpointMeta
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
    weight = cast(torch.Tensor, module.weight_orig if pruned else module.weight)  # a Conv2d/Linear weight
    n = weight.numel()
    k = int(round(sparsity * n))
    scores = weight.detach().abs().flatten().float()
    if pruned:
        weight_mask = cast(torch.Tensor, module.weight_mask)  # the buffer torch.nn.utils.prune registered
        scores = scores * weight_mask.flatten().float()
    mask = torch.ones(n, dtype=weight.dtype)
    if k > 0:
        mask[torch.topk(scores, k, largest=False).indices] = 0
    mask = mask.view(weight.shape)
    if pruned:
        weight_mask.copy_(mask)
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
    from edgecnn.models.profile import input_channels

    size = meta["input_size"]
    export_onnx(copy.deepcopy(model), path, size, {**meta, "precision": "fp32"})
    threads = threads or torch.get_num_threads()
    shape = (1, input_channels(model), size, size)
    lat = file_latency(file_predictor(path, "onnxruntime", threads), shape, batch, "onnxruntime", threads,
                       repeats=repeats)
    return path, lat.median_ms


def compare_latency(paths: dict[str, Path], input_size: int, *, threads: int | None = None, repeats: int = 30,
                    rounds: int = 3, batch: int = 1, in_channels: int = 3) -> dict[str, float]:
    """Median ONNX Runtime latency (ms) of several files taking ``in_channels`` channels, measured alternately
    (fair under CPU noise)."""
    import statistics

    from edgecnn.measure.runtimes import file_latency, file_predictor

    threads = threads or torch.get_num_threads()
    predictors = {k: file_predictor(p, "onnxruntime", threads) for k, p in paths.items()}
    medians: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, predict in predictors.items():
            shape = (1, in_channels, input_size, input_size)
            medians[k].append(file_latency(predict, shape, batch, "onnxruntime", threads, repeats=repeats).median_ms)
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


# ---------------------------------------------------------------------------------------------- the methods

@dataclass
class PruneJob:
    """One pruning to run: the float model (pruned in place), its base meta, the data, the options and the
    fine-tuning recipe, where to write, and the model's measurements before pruning."""

    model: nn.Module
    desc: dict[str, Any]  # the model's base meta (arch, classes, input size, normalization)
    data: PreparedData
    options: PruneConfig
    train: TrainConfig
    out_dir: Path
    before: dict[str, Any]  # params, MACs, accuracy before pruning
    seed: int = 0
    show_progress: bool = True

    def unpruned(self) -> nn.Module:
        """The model ``desc`` describes, unpruned (random weights): the reference of a pruned layout."""
        return model_from_meta(CheckpointMeta.from_dict(self.desc))


@dataclass
class Pruned:
    """What a method did: the pruned checkpoint's meta, its fine-tuning record, and the per-layer ratios it chose
    (with the sensitivity analysis they came from)."""

    meta: dict[str, Any]
    finetune: dict[str, Any]
    ratios: dict[str, float] | None = None
    sensitivity: dict[str, Any] | None = None


PruneFn = Callable[[PruneJob], Pruned]
#: ``layers(original, pruned) -> (per-layer rows, totals added to the after-measurements)``
LayersFn = Callable[[nn.Module, nn.Module], tuple[list[dict[str, Any]], dict[str, Any]]]


@dataclass(frozen=True)
class PruningMethod:
    """A registered pruning method (a ``prune.method`` value)."""

    name: str
    run: PruneFn
    layers: LayersFn
    description: str = ""


PRUNING: Registry[PruningMethod] = Registry("pruning method", "edgecnn prune --help")


def register_pruning(name: str, *, layers: LayersFn) -> Callable[[PruneFn], PruneFn]:
    """Register ``fn(job) -> Pruned`` as pruning method ``name``; ``layers`` makes its per-layer table."""

    def decorator(fn: PruneFn) -> PruneFn:
        PRUNING.register(name)(PruningMethod(name, fn, layers, (fn.__doc__ or "").strip()))
        return fn

    return decorator


def get_pruning(name: str) -> PruningMethod:
    """The registered pruning method ``name`` (an unknown name is an error naming the close ones)."""
    return PRUNING.get(name)


def _sparsity_layers(original: nn.Module, model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    report = sparsity_report(model)
    return report.pop("layers"), report


def _channel_layers(original: nn.Module, model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return channel_table(original, model), {}


@register_pruning("unstructured", layers=_sparsity_layers)
def prune_unstructured(job: PruneJob) -> Pruned:
    """Weights zeroed by magnitude per layer, the sparsity ramping along the polynomial schedule during the
    fine-tuning; the last epoch's weights are kept and the masks made permanent."""
    from edgecnn.train.trainer import fit

    options, train, model = job.options, job.train, job.model
    sparsity = check_ratio(options.ratio, "ratio (target sparsity)")
    layers = prunable_weights(model, options.exclude)
    ft_cfg = _finetune_cfg(train, ema=None)  # an average of masked weights would not be masked, nor the masks 0/1
    total = math.ceil(len(job.data.splits["train"]) / ft_cfg.batch_size) * ft_cfg.epochs
    schedule = SparsitySchedule(layers, sparsity, max(1, int(options.ramp * total)), options.sparsity_steps,
                                ft_cfg.label_smoothing)
    pmeta = {**job.desc, "pruned": {"method": "unstructured", "sparsity": sparsity}}
    result = fit(model, job.data, ft_cfg, job.out_dir / "finetune", seed=job.seed, meta=pmeta,
                 show_progress=job.show_progress, loss_fn=schedule)
    schedule.finish()  # the last epoch's weights are kept: the best-val epoch may predate the final sparsity
    make_permanent(model)
    return Pruned(pmeta, {"epochs": result.epochs_run, "final_val_acc": result.history[-1]["val_acc"],
                          "schedule": schedule.history})


@register_pruning("structured", layers=_channel_layers)
def prune_structured(job: PruneJob) -> Pruned:
    """Channels removed with torch-pruning's dependency graph (a smaller dense model): a ratio of the channels, per
    layer ratios (given, or chosen by the sensitivity analysis), or a params/MACs/latency target, in ``steps``
    rounds with fine-tuning between them; then fine-tuned, keeping the best validation epoch."""
    from edgecnn.train.trainer import fit

    options, model, size = job.options, job.model, job.data.image_size
    grads = None
    if options.importance == "taylor":
        def grads(m: nn.Module) -> None:
            accumulate_taylor_grads(m, job.data, seed=job.seed)

    target, target_ratio, ratios, sensitivity = _structured_plan(job, grads)
    metric, base_value = None, None
    if target is not None:
        metric = metric_fn(target, size)
        base_value = metric(model)
        ratio, layer_ratios, steps = 1.0, None, PROGRESSIVE_STEPS
    else:
        ratio, layer_ratios, steps = options.ratio or 0.0, ratios, options.steps
    pruner = make_pruner(model, size, importance=options.importance, ratio=ratio, ratios=layer_ratios,
                         scope=options.scope, steps=steps, max_layer_ratio=options.max_layer_ratio,
                         round_to=options.round_to, exclude=options.exclude)
    rounds = _structured_rounds(job, pruner, metric, base_value, target_ratio, grads)
    model.zero_grad(set_to_none=True)
    pmeta = {**job.desc, "pruned": {"method": "structured", "layout": pruned_layout(model, job.unpruned()),
                                    "importance": options.importance, "scope": options.scope}}
    result = fit(model, job.data, _finetune_cfg(job.train), job.out_dir / "finetune", seed=job.seed, meta=pmeta,
                 show_progress=job.show_progress)
    state, _, _ = read_checkpoint(result.best_checkpoint)
    model.load_state_dict(state)
    finetune = {"epochs": result.epochs_run, "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
                "rounds": rounds}
    return Pruned(pmeta, finetune, ratios, sensitivity)


def _structured_plan(job: PruneJob, grads: Callable[[nn.Module], None] | None
                     ) -> tuple[str | None, float | None, dict[str, float] | None, dict[str, Any] | None]:
    """(target, target ratio, per-layer ratios, sensitivity analysis) of a structured pruning: a latency target
    becomes the MACs ratio that meets it on this machine; ``ratios: auto`` becomes the per-layer ratios the
    sensitivity analysis chooses for the target (which they then meet: target None)."""
    from edgecnn.compress.sensitivity import choose_ratios, layer_sensitivity, plot_sensitivity

    options, model, size = job.options, job.model, job.data.image_size
    target, target_ratio, ratios, sensitivity = options.target, options.target_ratio, None, None
    if target is not None and target_ratio is None:  # validation pairs them; a config changed after it may not
        raise EdgeCNNError(f"prune.target: {target} needs prune.target_ratio (e.g. target_ratio: 0.5)")
    if isinstance(options.ratios, dict):
        layer_ratio_dict(model, size, options.ratios, options.exclude)  # clear errors before any work
    if target == "latency" and target_ratio is not None:
        target_ratio = latency_to_macs(model, job.desc, target_ratio, importance=options.importance,
                                       scope=options.scope, max_layer_ratio=options.max_layer_ratio,
                                       round_to=options.round_to, exclude=options.exclude,
                                       threads=options.latency_threads, repeats=options.latency_repeats, grads=grads)
        target = "macs"
        log.info("latency target -> %.1f%% of the MACs", 100 * target_ratio)
    if options.ratios == "auto":
        if target is None or target_ratio is None:  # validation requires a target with ratios: auto
            raise EdgeCNNError("prune.ratios: auto needs a target (e.g. target: macs, target_ratio: 0.5)")
        if grads is not None:
            grads(model)
        sens = layer_sensitivity(model, job.data, ratios=options.sensitivity_ratios, importance=options.importance,
                                 exclude=options.exclude, max_images=options.sensitivity_images, seed=job.seed)
        plot_sensitivity(sens, job.out_dir / "sensitivity.png")
        (job.out_dir / "sensitivity.json").write_text(json.dumps(sens.to_dict(), indent=1))
        ratios = choose_ratios(model, size, sens, target, target_ratio, importance=options.importance,
                               max_layer_ratio=options.max_layer_ratio, round_to=options.round_to,
                               exclude=options.exclude, grads=grads)
        sensitivity = sens.to_dict()
        target = None  # the chosen per-layer ratios meet the target
    elif isinstance(options.ratios, dict):
        ratios = dict(options.ratios)
    return target, target_ratio, ratios, sensitivity


def _structured_rounds(job: PruneJob, pruner: Any, metric: Callable[[nn.Module], float] | None,
                       base_value: float | None, target_ratio: float | None,
                       grads: Callable[[nn.Module], None] | None) -> list[dict[str, Any]]:
    """``steps`` prune rounds (each a step of the pruner, or progressive steps down to its share of the target),
    fine-tuned ``step_epochs`` between two rounds; returns each round's params and MACs."""
    from edgecnn.train.trainer import fit

    options, model, size, steps = job.options, job.model, job.data.image_size, job.options.steps
    rounds = []
    for k in range(1, steps + 1):
        if grads is not None:
            grads(model)
        if metric is not None:
            assert base_value is not None and target_ratio is not None  # a target comes with both (_structured_plan)
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
                 100 * prof.params / job.before["params"], 100 * prof.macs / job.before["macs"])
        if k < steps and options.step_epochs:
            layout = pruned_layout(model, job.unpruned())
            fit(model, job.data, _finetune_cfg(job.train, epochs=options.step_epochs, warmup_epochs=0),
                job.out_dir / f"round{k}", seed=job.seed + k,
                meta={**job.desc, "pruned": {"method": "structured", "layout": layout}},
                show_progress=job.show_progress)
    return rounds


# ---------------------------------------------------------------------------------------------- the verb

def prune_model(model: nn.Module, meta: CheckpointMeta, data: PreparedData, options: PruneConfig,
                train: TrainConfig, out_dir: str | Path, *, seed: int = 0, show_progress: bool = True,
                measure_latency: bool = True) -> PruneResult:
    """Prune ``model`` (described by checkpoint ``meta``) as ``options`` say, fine-tune it with ``train`` on
    ``data``, and write pruned.safetensors, pruned.onnx and prune.json (before/after params, MACs, ONNX size,
    accuracy, ONNX Runtime batch-1 latency, per-layer channels or sparsity) into ``out_dir``. The pruning itself is
    the registered method ``options.method`` (``register_pruning``)."""
    method = get_pruning(options.method)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if meta.input_size != data.image_size or meta.classes != data.classes:
        raise EdgeCNNError("the data does not match the model (input size or classes differ); prune with the data "
                           "the model was trained on")
    desc = base_meta(meta)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    original = copy.deepcopy(model)
    before = _measure(model, data)
    paths = {}
    if measure_latency:
        paths["base"], _ = export_and_time(model, out_dir / "base.onnx", desc, threads=options.latency_threads,
                                           repeats=3)
    pruned = method.run(PruneJob(model, desc, data, options, train, out_dir, before, seed, show_progress))
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    pmeta = pruned.meta
    pmeta["pruned"].update(base_params=before["params"], base_macs=before["macs"])
    checkpoint = save_checkpoint(model, out_dir / "pruned.safetensors", pmeta)
    after = _measure(model, data)
    onnx_path = None
    if measure_latency:
        onnx_path = _latency_before_after(model, pmeta, paths, before, after, options, out_dir, data.image_size)
    after["params_ratio"] = after["params"] / before["params"]
    after["macs_ratio"] = after["macs"] / before["macs"]
    layers, totals = method.layers(original, model)
    after.update(totals)
    res = PruneResult(checkpoint, onnx_path, options.method, before, after, layers, options.model_dump(),
                      pruned.ratios, pruned.sensitivity, pruned.finetune)
    (out_dir / "prune.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))
    return res


def _latency_before_after(model: nn.Module, pmeta: dict[str, Any], paths: dict[str, Path], before: dict[str, Any],
                          after: dict[str, Any], options: PruneConfig, out_dir: Path, size: int) -> Path:
    """Export the pruned model to pruned.onnx and time it against the base file (alternately); the latencies, file
    sizes and speed-up go into ``before``/``after``. Returns the pruned ONNX file."""
    threads = options.latency_threads
    onnx_path, _ = export_and_time(model, out_dir / "pruned.onnx", pmeta, threads=threads, repeats=3)
    paths["pruned"] = onnx_path
    ms = compare_latency(paths, size, threads=threads, repeats=options.latency_repeats,
                         in_channels=int(pmeta.get("in_channels", 3)))
    for record, key in ((before, "base"), (after, "pruned")):
        record["latency_ms_onnxruntime_b1"] = round(ms[key], 4)
        record["onnx_bytes"] = paths[key].stat().st_size
        record["onnx_gzip_bytes"] = len(gzip.compress(paths[key].read_bytes(), 6))
    after["speedup_onnxruntime_b1"] = round(ms["base"] / ms["pruned"], 3)
    return onnx_path


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
    norm = meta.normalization
    if norm:
        from edgecnn.data.batches import Normalization

        prepared = replace(prepared, normalization=Normalization(tuple(norm["mean"]), tuple(norm["std"])))
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"{checkpoint.stem}-pruned"
    return prune_model(model, meta, prepared, options, train or TrainConfig(epochs=5, lr=1e-3), out_dir, seed=seed,
                       show_progress=show_progress, measure_latency=measure_latency)
