"""The low-bit sweep of a trained model: per variant (w8a8, w4a4, ..., a per-layer spec), Brevitas QAT from the
float checkpoint, QONNX export checked against PyTorch with qonnx's executor, per-layer weight sparsity, packed
weight size, and FINN-style dataflow estimates (FPS, LUT, BRAM, DSP) with the folding chosen under each board's
budget; then the accuracy-vs-FPS Pareto front and the FINN benchmark's headline ratio.

Schedule: ``progressive`` trains the variants from the highest to the lowest mean weight precision, each starting
from the previous variant's latent float weights (a warm start that keeps 2- and 1-bit QAT from collapsing);
``direct`` starts every variant from the float checkpoint.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn import columns as col
from edgecnn.compress.lowbit_spec import LowBitPlan
from edgecnn.compress.options import LowbitConfig
from edgecnn.data.batches import TensorSet, iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.predict import require_finite
from edgecnn.models.profile import profile_model
from edgecnn.records import LowbitSummary
from edgecnn.results import CheckpointMeta
from edgecnn.train.options import TrainConfig

log = logging.getLogger(__name__)
LOWBIT_RECIPE_VERSION = 3  # 2: MSE-initialised activation scales, MSE ternary scales, BN re-estimation; 3: the
# FINN-ready file beside the QONNX file (finn_file), which the dataflow estimates read
FINN_SUFFIX = ".finn.qonnx.onnx"


def finn_file(qonnx_file: str | Path) -> Path:
    """The FINN-ready file written beside a low-bit variant's QONNX file (``model.qonnx.onnx`` ->
    ``model.finn.qonnx.onnx``): the same model with its global pooling on an integer grid (lowbit.finn_ready)."""
    qonnx_file = Path(qonnx_file)
    return qonnx_file.with_name(qonnx_file.name.removesuffix(".qonnx.onnx") + FINN_SUFFIX)


def mean_weight_bits(model: nn.Module, plan: LowBitPlan) -> float:
    """Weight bits averaged over the layers' weights (orders variants from high to low precision)."""
    modules = dict(model.named_modules())
    counts = {layer.name: modules[layer.name].weight.numel() for layer in plan.layers}
    return float(sum(layer.w * counts[layer.name] for layer in plan.layers) / (sum(counts.values()) or 1))


def variant_order(model: nn.Module, options: LowbitConfig, input_size: int) -> list[str]:
    """The variants from the highest to the lowest mean weight precision (the progressive schedule's order)."""
    from edgecnn.compress.lowbit import resolve_spec

    bits = {v: mean_weight_bits(model, resolve_spec(model, options.spec(v), input_size)) for v in options.variants}
    return sorted(options.variants, key=lambda v: -bits[v])


def latent_float_weights(qmodel: nn.Module | _StateHolder, float_model: nn.Module) -> nn.Module:
    """A copy of ``float_model`` carrying the latent float weights and BN statistics of a trained Brevitas model
    (module names are shared), for warm-starting the next, lower-precision variant."""
    warm = copy.deepcopy(float_model)
    own = warm.state_dict()
    q_state = qmodel.state_dict()
    update = {k: v for k, v in q_state.items() if k in own and own[k].shape == v.shape}
    warm.load_state_dict({**own, **update})
    return warm


def _logits(model: nn.Module, subset: TensorSet, data: PreparedData) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x).float() for x, _ in iterate_batches(subset, 256, data.normalization,
                                                                           channels_last=False)])
    return require_finite(logits, f"the low-bit model {getattr(model, 'lowbit_spec', '')}".rstrip())


def run_variant(float_model: nn.Module, meta: CheckpointMeta, data: PreparedData, options: LowbitConfig,
                variant: str, out_dir: Path, *, start: nn.Module | None = None, seed: int = 0,
                show_progress: bool = False) -> tuple[dict[str, Any], nn.Module]:
    """QAT one variant (from ``start``'s weights, default the float model), export QONNX, measure; (metrics, model)."""
    from edgecnn.compress.lowbit import finn_ready, packed_weight_bits, qat_lowbit, weight_sparsity
    from edgecnn.export.qonnx import export_qonnx
    from edgecnn.measure.accuracy import classification_report, plot_confusion

    out_dir.mkdir(parents=True, exist_ok=True)
    size = data.image_size
    spec = options.spec(variant)
    train = TrainConfig(epochs=options.epochs, lr=options.lr, batch_size=options.batch_size, warmup_epochs=0.2,
                        weight_decay=0.0, amp="off", channels_last=False, label_smoothing=0.0)
    qmeta = meta.model_only()
    qmodel, fit = qat_lowbit(copy.deepcopy(start if start is not None else float_model), data, train, out_dir / "qat",
                             spec=spec, seed=seed, meta={**qmeta, "lowbit_variant": variant},
                             show_progress=show_progress)
    test = data.splits["test"]
    logits = _logits(qmodel, test, data)
    report = classification_report(test.labels.numpy(), logits.argmax(1).numpy(), data.classes)
    path = export_qonnx(qmodel, out_dir / "model.qonnx.onnx", size, meta={**qmeta, "lowbit_variant": variant})
    with finn_ready(qmodel):  # the file FINN builds (integer global pooling); dataflow targets are priced on it
        export_qonnx(qmodel, finn_file(path), size, meta={**qmeta, "lowbit_variant": variant})
    prof = profile_model(float_model, size)  # the low-bit model has the float model's layers
    metrics: dict[str, Any] = {"accuracy": report.accuracy, "macro_f1": report.macro_f1, "test_images": report.n,
                               "params": prof.params, "macs": prof.macs, "size_bytes": path.stat().st_size,
                               "packed_weight_bits": packed_weight_bits(qmodel),
                               "bits": qmodel.lowbit_spec.to_dict(), "qat_epochs": fit.epochs_run,
                               "qat_best_val_acc": fit.best_val_acc}
    if options.parity_images:
        n = min(options.parity_images, len(test))
        subset = TensorSet(test.images[:n], test.labels[:n])
        x = torch.cat([b for b, _ in iterate_batches(subset, 256, data.normalization, channels_last=False)])
        metrics.update(qonnx_parity(qmodel, path, x, logits[:n], size))
    sparsity = weight_sparsity(qmodel)
    metrics["weight_sparsity"] = {r["layer"]: round(r["sparsity"], 4) for r in sparsity}
    total = sum(r["weights"] for r in sparsity) or 1
    metrics["weight_sparsity_total"] = sum(r["weights"] * r["sparsity"] for r in sparsity) / total
    plot_confusion(report, out_dir / "confusion.png", f"{variant}: accuracy {report.accuracy:.2%}")
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "report": report.to_dict(),
                                                      "layers": sparsity}, indent=1, default=str))
    return metrics, qmodel


PARITY_TOLERANCE = 1e-4  # max |logit difference| the issue asks of QONNX execution vs Brevitas
PARITY_BATCH = 64  # qonnx executes node by node; a batched copy of the file is ~20x faster than one image at a time


def qonnx_parity(qmodel: nn.Module, path: Path, x: torch.Tensor, logits: torch.Tensor,
                 input_size: int) -> dict[str, Any]:
    """QONNX execution (qonnx's executor, ONNX Runtime per node) of ``path`` against the Brevitas ``logits`` for
    the normalized inputs ``x``: top-1 agreement, max |diff|, the share of images within PARITY_TOLERANCE, and the
    float32 noise floor of PyTorch itself (the same model run one image at a time vs batched, on up to 64 images):
    an activation that lands within float32 rounding of a quantization step can round either way when the
    accumulation order changes, which moves a logit by a whole quantization step of the layers after it."""
    from edgecnn.export.qonnx import export_qonnx, run_qonnx

    n = len(x)
    whole = n - n % PARITY_BATCH
    parts = []
    if whole:
        batched = path.with_name("parity-batch.qonnx.onnx")
        export_qonnx(qmodel, batched, input_size, batch=PARITY_BATCH)
        try:
            parts.append(run_qonnx(batched, x[:whole].numpy()))
        finally:
            batched.unlink(missing_ok=True)
    if whole < n:
        parts.append(run_qonnx(path, x[whole:].numpy()))
    q = torch.from_numpy(np.concatenate(parts))
    diff = (q - logits).abs().amax(1)
    k = min(n, 64)
    qmodel.eval()
    with torch.no_grad():
        single = torch.cat([qmodel(x[i:i + 1]).float() for i in range(k)])
    return {"qonnx_images": n, "qonnx_max_abs_diff": float(diff.max()),
            "qonnx_top1_agreement": float((q.argmax(1) == logits.argmax(1)).float().mean()),
            "qonnx_within_tolerance": float((diff <= PARITY_TOLERANCE).float().mean()),
            "torch_self_max_abs_diff": float((single - logits[:k]).abs().max())}


def headline(rows: list[dict[str, Any]], targets: list[str], reference: str = "w8a8",
             tolerance: float = 0.01) -> dict[str, Any]:
    """The FINN benchmark's ratio per board: FPS of the lowest precision (fewest packed weight bits) whose accuracy
    is within ``tolerance`` of ``reference``, divided by the reference's FPS on the same board."""
    by_name = {r["precision"]: r for r in rows}
    if reference not in by_name:
        return {"note": f"{reference} is not in the sweep; add it to lowbit.variants to get the headline ratio"}
    ref = by_name[reference]
    eligible = [r for r in rows if r["accuracy"] >= ref["accuracy"] - tolerance]
    lowest = min(eligible, key=lambda r: r["packed_weight_bits"])
    out = {"reference": reference, "reference_accuracy": ref["accuracy"], "chosen": lowest["precision"],
           "chosen_accuracy": lowest["accuracy"], "tolerance_points": 100 * tolerance, "boards": {}}
    for t in targets:
        f_ref, f_low = ref.get(col.fps(t)), lowest.get(col.fps(t))
        if f_ref and f_low:
            out["boards"][t] = {"fps_reference": f_ref, "fps_chosen": f_low, "ratio": round(f_low / f_ref, 3)}
            fits = (ref.get(col.fits(t)), lowest.get(col.fits(t)))
            if False in fits:  # fully folded and still over budget: the FPS of both is a floor, not a design point
                out["boards"][t]["fits"] = {"reference": fits[0], "chosen": fits[1]}
    return out


def pareto_front(rows: list[dict[str, Any]], target: str) -> list[str]:
    """Variants not dominated in (accuracy, FPS on ``target``)."""
    from edgecnn.report.summary import front

    kept = {id(r) for r in front(rows, lambda r: r.get(col.fps(target)) or 0.0, lambda r: r["accuracy"],
                                 higher_cost_is_better=True)}
    return [r["precision"] for r in rows if id(r) in kept]


def plot_accuracy_vs_fps(rows: list[dict[str, Any]], targets: list[str], path: Path) -> Path | None:
    """Accuracy against estimated FPS, one marker series per board, Pareto front drawn."""
    from edgecnn.report.plots import plt, save_figure

    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for t in targets:
        pts = sorted((r.get(col.fps(t)) or np.nan, 100 * r["accuracy"], r["precision"]) for r in rows)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=t, s=22)
        front = set(pareto_front(rows, t))
        fp = [p for p in pts if p[2] in front]
        ax.plot([p[0] for p in fp], [p[1] for p in fp], alpha=0.5)
        for f, a, n in pts:
            ax.annotate(n, (f, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("estimated FPS (FINN-style dataflow, folding under the board's budget)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def check_available() -> None:
    try:
        import brevitas  # noqa: F401
        import qonnx  # noqa: F401
    except ImportError as exc:
        raise EdgeCNNError(f"low-bit QAT needs brevitas and qonnx ({exc.name} is missing); "
                           "pip install 'edgecnn[lowbit]'") from None


@dataclass
class SweepVariant:
    """One finished variant of the sweep: its QONNX file, its measurements (cached with it), its hardware columns
    (computed on every run by variants.hardware, never cached) and whether it was reused."""

    name: str
    spec: Any
    artefact: Path
    metrics: dict[str, Any]
    skipped: bool
    estimates: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"precision": self.name, **self.metrics, **self.estimates}


def _measured_only(metrics: dict[str, Any]) -> dict[str, Any]:
    """A cached record without the hardware columns a sweep of an earlier edgecnn stored in it: the estimates are
    computed afresh (one producer, today's estimators)."""
    from edgecnn.hw.targets import list_targets

    names = [n for t in list_targets() for n in (t.name, *t.aliases)]
    stale = {k for name in names for k in col.hardware_keys(name)}
    return {k: v for k, v in metrics.items() if k not in stale}


def sweep(float_checkpoint: Path, data: PreparedData, options: LowbitConfig, out_root: Path, *,
          cache_key: dict[str, Any], seed: int = 0, show_progress: bool = False,
          targets: list[str] | None = None) -> list[SweepVariant]:
    """Run every variant of ``options`` on the model of ``float_checkpoint``, each in its own cached stage under
    ``out_root`` (skipped when its inputs, ``cache_key`` included, are unchanged). The progressive schedule starts
    each variant from the previous one's latent float weights; then each variant's hardware columns on the sweep's
    boards and ``targets`` (the run's), the Pareto plot and summary.json."""
    from edgecnn.compress.lowbit import LowBitSpec
    from edgecnn.stages import Stage, file_hash
    from edgecnn.train.checkpoint import load_checkpoint, read_checkpoint
    from edgecnn.variants.hardware import hardware_columns
    from edgecnn.variants.precisions import get_precision

    check_available()
    float_model, meta = load_checkpoint(float_checkpoint)
    progressive = options.schedule == "progressive"
    order = variant_order(float_model, options, data.image_size) if progressive else options.variants
    done: list[SweepVariant] = []
    start_hash, previous = None, None
    for variant in order:
        spec = options.spec(variant)
        inputs = {**cache_key, "checkpoint": file_hash(float_checkpoint), "variant": variant, "spec": spec,
                  "options": options.model_dump(exclude={"variants", "specs"}), "start": start_hash, "seed": seed,
                  "recipe": LOWBIT_RECIPE_VERSION}
        stage = Stage(out_root, variant, inputs)
        artefact = stage.dir / "model.qonnx.onnx"
        if (cached := stage.cached()) is not None and Path(cached["artefact"]).exists():
            done.append(SweepVariant(variant, spec, artefact, _measured_only(cached["metrics"]), True))
        else:
            stage.begin(keep_partial=False)
            start = None
            if previous is not None:
                state, _, _ = read_checkpoint(previous)
                start = latent_float_weights(_StateHolder(state), float_model)
            metrics, _ = run_variant(float_model, meta, data, options, variant, stage.dir, start=start, seed=seed,
                                     show_progress=show_progress)
            metrics["warm_start"] = previous.parent.parent.name if previous is not None else "float"
            stage.finish({"artefact": str(artefact), "metrics": metrics})
            done.append(SweepVariant(variant, spec, artefact, metrics, False))
        if progressive and not LowBitSpec.parse(spec).fold_bn:
            # a BN-folded variant's weights are not the float model's layout: it is never a warm start
            best = stage.dir / "qat" / "best.safetensors"
            previous, start_hash = best, file_hash(best)
    boards = list(dict.fromkeys([*options.targets, *(targets or [])]))
    wxay = get_precision("wXaY")
    for v in done:
        v.estimates = hardware_columns(wxay, v.artefact, boards)
    rows = [v.row() for v in done]
    summary = LowbitSummary(order=list(order), schedule=options.schedule, headline=headline(rows, options.targets),
                            pareto={t: pareto_front(rows, t) for t in options.targets})
    (out_root / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    plot_accuracy_vs_fps(rows, options.targets, out_root / "accuracy-vs-fps.png")
    return done


class _StateHolder:
    """Gives a plain state dict the ``state_dict()`` method latent_float_weights reads."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state
