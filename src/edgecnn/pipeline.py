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


def evaluate_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, variant: Variant) -> tuple[dict[str, Any], bool]:
    from edgecnn.measure.evaluate import measure_model
    from edgecnn.train.checkpoint import load_checkpoint

    inputs = {"artefact": file_hash(variant.artefact), "evaluate": cfg.evaluate.model_dump(),
              "split": file_hash(run_dir / "split.json")}
    stage = Stage(run_dir / "variants", variant.id, inputs)
    if (done := stage.cached()) is not None:
        return done, True
    stage.begin(keep_partial=False)
    model, meta = load_checkpoint(variant.artefact)
    metrics = measure_model(model, data.splits["test"], data.normalization, data.classes, meta["input_size"],
                            Path(variant.artefact), cfg.evaluate, stage.dir, title=f"{variant.name}")
    return stage.finish(metrics), False


def prepare_run_dir(cfg: ExperimentConfig, fresh: bool = False) -> Path:
    run_dir = Path(cfg.output) / cfg.name
    if fresh and run_dir.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir.rename(run_dir.with_name(f"{cfg.name}.old-{stamp}"))  # keep, never delete, earlier work
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return run_dir


def run(cfg: ExperimentConfig, *, fresh: bool = False, resume: bool = True, show_progress: bool = True) -> RunOutcome:
    """Run the whole experiment; returns the run directory and the results rows."""
    run_dir = prepare_run_dir(cfg, fresh)
    handler = _attach_log_file(run_dir)
    try:
        data = prepare_data(cfg.data, cfg.seed, run_dir / "split.json")
        (run_dir / "data.json").write_text(json.dumps(data.report, indent=1))
        fit_out, train_skipped = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
        base = Variant(name="fp32", base_model=cfg.model.name, recipe=["train"], precision="fp32",
                       artefact=fit_out["best_checkpoint"], lineage_extra={"arch_args": cfg.model.args})
        metrics, eval_skipped = evaluate_stage(cfg, data, run_dir, base)
        results = [Result(base, metrics)]
        write_results(results, run_dir)
        from edgecnn.report.html import write_report

        report_path = write_report(run_dir)
        skipped = [name for name, s in (("train", train_skipped), ("evaluate", eval_skipped)) if s]
        return RunOutcome(run_dir, [r.row() for r in results], fit_out, data.report, report_path, skipped)
    finally:
        logging.getLogger("edgecnn").removeHandler(handler)
        handler.close()
