"""Run an experiment: data -> train -> evaluate -> results table -> report, inside ``runs/<name>/``.

Every stage is skipped when its inputs are unchanged (content hash), and an interrupted training resumes
from its last checkpoint, so rerunning the same command after a crash loses at most one epoch.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from edgecnn.config import ExperimentConfig
from edgecnn.data.prepare import PreparedData, prepare_data
from edgecnn.results import Result, Variant, write_results
from edgecnn.stages import Stage, file_hash

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_dir: Path
    results: list[dict[str, Any]]
    fit: dict[str, Any]
    data_report: dict[str, Any]
    report_path: Path | None = None
    skipped_stages: list[str] = field(default_factory=list)


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("edgecnn").addHandler(handler)
    logging.getLogger("edgecnn").setLevel(logging.INFO)
    return handler


def checkpoint_meta(cfg: ExperimentConfig, data: PreparedData) -> dict[str, Any]:
    """What a checkpoint needs to rebuild and use the model with nothing else."""
    return {"arch": cfg.model.name, "arch_args": cfg.model.args, "classes": data.classes,
            "input_size": data.image_size, "normalization": {"mean": list(data.normalization.mean),
                                                              "std": list(data.normalization.std)},
            "pretrained": cfg.model.weights, "experiment": cfg.name}


def train_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, resume: bool = True,
                show_progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Train (or skip / resume) the base model; returns (fit outputs, skipped)."""
    from edgecnn.models import create_model
    from edgecnn.train.trainer import fit

    inputs = {"model": cfg.model.model_dump(), "train": cfg.train.model_dump(exclude={"threads"}),
              "data": cfg.data.model_dump(exclude={"cache_dir"}, mode="json"), "seed": cfg.seed,
              "split": file_hash(run_dir / "split.json"), "torch": torch.__version__.split("+")[0]}
    stage = Stage(run_dir, "train", inputs)
    if (done := stage.cached()) is not None and Path(done["best_checkpoint"]).exists():
        return done, True
    resuming = resume and stage.interrupted() and (stage.dir / "last.safetensors").exists()
    stage.begin(keep_partial=resuming)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, num_classes=len(data.classes), input_size=data.image_size,
                         **cfg.model.args, **({"weights": cfg.model.weights} if cfg.model.weights else {}))
    result = fit(model, data, cfg.train, stage.dir, seed=cfg.seed, meta=checkpoint_meta(cfg, data),
                 resume=resuming, show_progress=show_progress)
    from edgecnn.report.plots import plot_training_curves

    plot_training_curves(result.history, stage.dir / "curves.png")
    return stage.finish(result.to_dict()), False


def precision_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, precision: str, checkpoint: Path,
                    fp32: dict[str, Any] | None) -> tuple[Result, bool]:
    """Build and measure one precision variant of the trained model (skipped when its inputs are unchanged)."""
    import numpy as np

    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.variants import build_artefact, measure_precision

    variant = Variant(name=precision, base_model=cfg.model.name,
                      recipe=["train"] + ([precision] if precision != "fp32" else []), precision=precision,
                      lineage_extra={"arch_args": cfg.model.args})
    inputs = {"checkpoint": file_hash(checkpoint), "precision": precision, "evaluate": cfg.evaluate.model_dump(),
              "export": cfg.export.model_dump(), "split": file_hash(run_dir / "split.json"),
              "quantize": cfg.quantize.model_dump() if precision.startswith("int8") else None,
              "recipe": _recipe_version(precision)}
    stage = Stage(run_dir / "variants", variant.id, inputs)
    if (done := stage.cached()) is not None and Path(done["artefact"]).exists():
        variant.artefact = done["artefact"]
        return Result(variant, done["metrics"]), True
    stage.begin(keep_partial=False)
    model, meta = load_checkpoint(checkpoint)
    meta = {k: v for k, v in meta.items() if k in ("arch", "arch_args", "classes", "input_size", "normalization")}
    artefact = build_artefact(precision, model, meta, data, cfg, stage.dir, fp32["onnx"] if fp32 else None)
    variant.artefact = str(artefact)
    fp32_preds = None if fp32 is None else fp32["predictions"]
    metrics, preds = measure_precision(precision, model, artefact, data, cfg, stage.dir, fp32_preds)
    metrics["checkpoint_bytes"] = Path(checkpoint).stat().st_size
    np.save(stage.dir / "predictions.npy", preds.numpy())
    stage.finish({"artefact": str(artefact), "metrics": metrics})
    return Result(variant, metrics), False


def _recipe_version(precision: str) -> int:
    """Version of the code that builds a precision's artefact (part of the stage hash)."""
    if precision == "int8-qat":
        from edgecnn.compress.qat import QAT_RECIPE_VERSION

        return QAT_RECIPE_VERSION
    return 1


def _add_speedups(results: list[Result], batches: list[int]) -> None:
    """Speed ratios measured in this run: vs PyTorch fp32 eager and vs ONNX Runtime fp32, per batch size."""
    base = results[0].metrics
    for r in results:
        for b in batches:
            ort = r.metrics.get(f"latency_ms_onnxruntime_b{b}")
            if ort:
                if base.get(f"latency_ms_torch_b{b}"):
                    r.metrics[f"speedup_vs_torch_fp32_b{b}"] = round(base[f"latency_ms_torch_b{b}"] / ort, 3)
                if base.get(f"latency_ms_onnxruntime_b{b}"):
                    r.metrics[f"speedup_vs_ort_fp32_b{b}"] = round(base[f"latency_ms_onnxruntime_b{b}"] / ort, 3)
        if r is not results[0] and base.get("size_bytes"):
            r.metrics["size_ratio_vs_fp32"] = round(r.metrics["size_bytes"] / base["size_bytes"], 4)


def prepare_run_dir(cfg: ExperimentConfig, fresh: bool = False) -> Path:
    run_dir = Path(cfg.output) / cfg.name
    if fresh and run_dir.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir.rename(run_dir.with_name(f"{cfg.name}.old-{stamp}"))  # keep, never delete, earlier work
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return run_dir


def run(cfg: ExperimentConfig, *, fresh: bool = False, resume: bool = True, show_progress: bool = True) -> RunOutcome:
    """Run the whole experiment; returns the run directory and the results rows.

    With ``models:`` in the config each model runs as a sub-run (``runs/NAME/<model>/``) and the parent folder
    gets the combined results table (a ``model`` column) and a summary report.
    """
    if not cfg.models:
        return _run_single(cfg, fresh=fresh, resume=resume, show_progress=show_progress)
    parent = prepare_run_dir(cfg, fresh)
    outcomes = []
    for sub in cfg.per_model():
        log.info("model %s", sub.name)
        outcomes.append(_run_single(sub, resume=resume, show_progress=show_progress))
    rows = [{"model": o.run_dir.name, **row} for o in outcomes for row in o.results]
    from edgecnn.report.html import write_summary_report
    from edgecnn.results import write_rows

    write_rows(rows, parent)
    report_path = write_summary_report(parent, [o.run_dir for o in outcomes])
    return RunOutcome(parent, rows, {o.run_dir.name: o.fit for o in outcomes}, outcomes[0].data_report, report_path,
                      [f"{o.run_dir.name}:{s}" for o in outcomes for s in o.skipped_stages])


def _run_single(cfg: ExperimentConfig, *, fresh: bool = False, resume: bool = True, show_progress: bool = True) -> RunOutcome:
    run_dir = prepare_run_dir(cfg, fresh)
    handler = _attach_log_file(run_dir)
    try:
        data = prepare_data(cfg.data, cfg.seed, run_dir / "split.json")
        (run_dir / "data.json").write_text(json.dumps(data.report, indent=1))
        fit_out, train_skipped = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
        import numpy as np

        checkpoint = Path(fit_out["best_checkpoint"])
        results: list[Result] = []
        skipped = ["train"] if train_skipped else []
        fp32 = None
        for precision in cfg.precisions:  # fp32 first: the reference of the others
            result, was_skipped = precision_stage(cfg, data, run_dir, precision, checkpoint, fp32)
            results.append(result)
            if was_skipped:
                skipped.append(precision)
            if precision == "fp32":
                vdir = run_dir / "variants" / result.variant.id
                fp32 = {"onnx": Path(result.variant.artefact),
                        "predictions": torch.from_numpy(np.load(vdir / "predictions.npy"))}
        _add_speedups(results, cfg.evaluate.latency_batches)
        write_results(results, run_dir)
        from edgecnn.report.html import write_report

        report_path = write_report(run_dir)
        return RunOutcome(run_dir, [r.row() for r in results], fit_out, data.report, report_path, skipped)
    finally:
        logging.getLogger("edgecnn").removeHandler(handler)
        handler.close()
