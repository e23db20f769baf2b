"""Run an experiment: data -> train -> evaluate -> results table -> report, inside ``runs/<name>/``.

Every stage is skipped when its inputs are unchanged (content hash), and an interrupted training resumes
from its last checkpoint, so rerunning the same command after a crash loses at most one epoch.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from edgecnn.config import ExperimentConfig, TrainConfig
from edgecnn.data.prepare import PreparedData, prepare_data
from edgecnn.errors import EdgeCNNError
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
    from edgecnn.report.plots import plot_training_curves

    if cfg.pretrained is not None:
        from edgecnn.train.transfer import transfer

        weights = pretrained_weights(cfg)
        t = transfer(cfg.model.name, weights, data, cfg.train, cfg.pretrained, stage.dir, arch_args=cfg.model.args,
                     seed=cfg.seed, meta={"experiment": cfg.name}, resume=resuming, show_progress=show_progress)
        last = t.finetune_fit or t.head_fit
        outputs = {**last, "best_checkpoint": str(t.best_checkpoint), "history": t.history,
                   "epochs_run": len(t.history), "transfer": {k: v for k, v in t.to_dict().items() if k != "history"}}
        plot_training_curves(t.history, stage.dir / "curves.png")
        return stage.finish(outputs), False
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, num_classes=len(data.classes), input_size=data.image_size,
                         **cfg.model.args, **({"weights": cfg.model.weights} if cfg.model.weights else {}))
    result = fit(model, data, cfg.train, stage.dir, seed=cfg.seed, meta=checkpoint_meta(cfg, data),
                 resume=resuming, show_progress=show_progress)
    plot_training_curves(result.history, stage.dir / "curves.png")
    return stage.finish(result.to_dict()), False


def pretrained_weights(cfg: ExperimentConfig) -> str:
    """The weights transfer learning starts from (pretrained.weights, else model.weights)."""
    weights = cfg.pretrained.weights or cfg.model.weights
    if not weights:
        raise EdgeCNNError("pretrained: needs weights: set pretrained.weights or model.weights to a local weights "
                           "file, an edgecnn checkpoint or (online) a torchvision weight name")
    return weights


def prepare_run_data(cfg: ExperimentConfig, run_dir: Path) -> PreparedData:
    """The run's data; with ``pretrained:`` resized and normalized as the pretrained weights expect."""
    data_cfg, norm = cfg.data, None
    if cfg.pretrained is not None:
        from edgecnn.train.transfer import transfer_data

        data_cfg, norm = transfer_data(cfg.data, cfg.model.name, pretrained_weights(cfg), cfg.pretrained)
    data = prepare_data(data_cfg, cfg.seed, run_dir / "split.json")
    return replace(data, normalization=norm) if norm is not None else data


@dataclass
class Source:
    """A trained model the precision variants are built from: the base model, the distilled student, ..."""

    step: str  # train, distill, distill-control, prune
    checkpoint: Path
    base_model: str
    recipe: list[str]
    arch_args: dict[str, Any]

    def variant_name(self, precision: str) -> str:
        return precision if self.step == "train" else f"{self.step}-{precision}"


def distill_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, teacher: Path, resume: bool = True,
                  show_progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Distill the trained model (or distill.teacher, a checkpoint) into distill.student, with the control."""
    from edgecnn.models import create_model
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.train.distill import distill_model, student_meta, train_control

    opts = cfg.distill
    if opts.teacher:
        teacher = Path(opts.teacher)
        if not teacher.is_file():
            raise EdgeCNNError(f"distill.teacher: no checkpoint file {teacher}; in a run the teacher is the trained "
                               "model unless distill.teacher names an edgecnn checkpoint (.safetensors)")
    train = TrainConfig.model_validate({**cfg.train.model_dump(), **opts.train})
    # the student's training, shared by the distilled student and the control (which ignores teacher and KD options)
    seed = cfg.seed if opts.seed is None else opts.seed
    recipe = {"student": opts.student.model_dump(), "train": train.model_dump(exclude={"threads"}),
              "data": cfg.data.model_dump(exclude={"cache_dir"}, mode="json"), "split": file_hash(run_dir / "split.json"),
              "seed": seed, "torch": torch.__version__.split("+")[0]}
    stage = Stage(run_dir, "distill", {"teacher": file_hash(teacher), "distill": opts.model_dump(exclude={"seed"}),
                                       **recipe})
    if (done := stage.cached()) is not None and Path(done["checkpoint"]).exists():
        return done, True
    t_model, t_meta = load_checkpoint(teacher)
    s = opts.student
    meta = student_meta(s, data, str(teacher), cfg.name)

    def new_student() -> torch.nn.Module:  # the same initial weights for the student and the control
        torch.manual_seed(seed)
        return create_model(s.name, num_classes=len(data.classes), input_size=data.image_size, **s.args,
                            **({"weights": s.weights} if s.weights else {}))

    control = None
    if opts.control:  # its own stage: changing the teacher, T or the loss weights does not retrain it
        c_stage = Stage(run_dir, "distill-control", recipe)
        if (c_done := c_stage.cached()) is None or not Path(c_done["best_checkpoint"]).exists():
            c_resuming = resume and c_stage.interrupted() and (c_stage.dir / "last.safetensors").exists()
            c_stage.begin(keep_partial=c_resuming)
            ctrl = train_control(new_student(), data, train, c_stage.dir, seed=seed, meta=meta,
                                 resume=c_resuming, show_progress=show_progress)
            c_done = c_stage.finish(ctrl.to_dict())
        control = c_done
    resuming = resume and stage.interrupted()
    stage.begin(keep_partial=resuming)
    result = distill_model(t_model, new_student(), data, train, opts, stage.dir, teacher_meta=t_meta,
                           student_meta=meta, seed=seed, resume=resuming, show_progress=show_progress,
                           trained_control=control)
    return stage.finish(result.to_dict()), False


def prune_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Path,
                show_progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Prune the model of ``source`` (the trained or distilled checkpoint) and fine-tune it."""
    from edgecnn.compress.prune import PRUNE_RECIPE_VERSION, prune_model
    from edgecnn.train.checkpoint import load_checkpoint

    opts = cfg.prune
    train = TrainConfig.model_validate({**cfg.train.model_dump(), **opts.train})
    inputs = {"source": file_hash(source), "prune": opts.model_dump(), "train": train.model_dump(exclude={"threads"}),
              "split": file_hash(run_dir / "split.json"), "seed": cfg.seed, "recipe": PRUNE_RECIPE_VERSION}
    stage = Stage(run_dir, "prune", inputs)
    if (done := stage.cached()) is not None and Path(done["checkpoint"]).exists():
        return done, True
    stage.begin(keep_partial=False)
    model, meta = load_checkpoint(source)
    result = prune_model(model, meta, data, opts, train, stage.dir, seed=cfg.seed, show_progress=show_progress)
    return stage.finish(result.to_dict()), False


def precision_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, precision: str, source: Source | Path,
                    fp32: dict[str, Any] | None) -> tuple[Result, bool]:
    """Build and measure one precision variant of a trained model (skipped when its inputs are unchanged)."""
    import numpy as np

    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.variants import build_artefact, measure_precision

    if not isinstance(source, Source):
        source = Source("train", Path(source), cfg.model.name, ["train"], cfg.model.args)
    checkpoint = source.checkpoint
    variant = Variant(name=source.variant_name(precision), base_model=source.base_model,
                      recipe=source.recipe + ([precision] if precision != "fp32" else []), precision=precision,
                      lineage_extra={"arch_args": source.arch_args})
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
    meta = {k: v for k, v in meta.items() if k in ("arch", "arch_args", "classes", "input_size", "normalization", "pruned")}
    artefact = build_artefact(precision, model, meta, data, cfg, stage.dir, fp32["onnx"] if fp32 else None)
    variant.artefact = str(artefact)
    fp32_preds = None if fp32 is None else fp32["predictions"]
    metrics, preds = measure_precision(precision, model, artefact, data, cfg, stage.dir, fp32_preds)
    metrics["checkpoint_bytes"] = Path(checkpoint).stat().st_size
    np.save(stage.dir / "predictions.npy", preds.numpy())
    stage.finish({"artefact": str(artefact), "metrics": metrics})
    return Result(variant, metrics), False


def model_chain(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, trained: Path, skipped: list[str],
                resume: bool = True, show_progress: bool = True) -> list[Source]:
    """train -> [distill] -> [prune]: the models whose variants go into the results, in that order."""
    sources = [Source("train", trained, cfg.model.name, ["train"], cfg.model.args)]
    if cfg.distill is not None:
        out, was_skipped = distill_stage(cfg, data, run_dir, trained, resume, show_progress)
        student = cfg.distill.student
        if out.get("control_checkpoint"):
            sources.append(Source("distill-control", Path(out["control_checkpoint"]), student.name,
                                  ["train-student"], student.args))
        sources.append(Source("distill", Path(out["checkpoint"]), student.name, ["train", "distill"], student.args))
        skipped += ["distill"] if was_skipped else []
    if cfg.prune is not None:
        last = sources[-1]
        out, was_skipped = prune_stage(cfg, data, run_dir, last.checkpoint, show_progress)
        sources.append(Source("prune", Path(out["checkpoint"]), last.base_model, last.recipe + ["prune"],
                              {**last.arch_args, "pruned": cfg.prune.model_dump()}))
        skipped += ["prune"] if was_skipped else []
    return sources


def _precision_variants(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Source,
                        precisions: list[str], skipped: list[str]) -> list[Result]:
    import numpy as np

    results, fp32 = [], None
    for precision in precisions:  # fp32 first: the reference of the others
        result, was_skipped = precision_stage(cfg, data, run_dir, precision, source, fp32)
        results.append(result)
        if was_skipped:
            skipped.append(result.variant.name)
        if precision == "fp32":
            vdir = run_dir / "variants" / result.variant.id
            fp32 = {"onnx": Path(result.variant.artefact),
                    "predictions": torch.from_numpy(np.load(vdir / "predictions.npy"))}
    return results


def lowbit_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Source, skipped: list[str],
                 show_progress: bool = True) -> list[Result]:
    """The low-bit sweep of the final model: one stage per variant (QAT, QONNX, parity, sparsity, dataflow
    estimates), then the Pareto plot and the headline FPS ratio in lowbit/summary.json."""
    from edgecnn.compress.lowbit_sweep import (LOWBIT_RECIPE_VERSION, check_available, headline,
                                               latent_float_weights, pareto_front, plot_accuracy_vs_fps,
                                               run_variant, variant_order)
    from edgecnn.compress.lowbit import LowBitSpec
    from edgecnn.train.checkpoint import load_checkpoint, read_checkpoint

    check_available()
    opts = cfg.lowbit
    float_model, meta = load_checkpoint(source.checkpoint)
    order = variant_order(float_model, opts, data.image_size) if opts.schedule == "progressive" else opts.variants
    results, start_hash, previous = [], None, None
    for variant in order:
        spec = opts.spec(variant)
        v = Variant(name=f"lowbit-{variant}", base_model=source.base_model, recipe=source.recipe + ["lowbit-qat"],
                    precision=variant, bits=spec if isinstance(spec, dict) else {"precision": spec},
                    lineage_extra={"arch_args": source.arch_args})
        inputs = {"checkpoint": file_hash(source.checkpoint), "variant": variant, "spec": spec,
                  "options": opts.model_dump(exclude={"variants", "specs"}), "start": start_hash,
                  "split": file_hash(run_dir / "split.json"), "seed": cfg.seed, "recipe": LOWBIT_RECIPE_VERSION}
        stage = Stage(run_dir / "lowbit", variant, inputs)
        best = stage.dir / "qat" / "best.safetensors"
        if (done := stage.cached()) is not None and Path(done["artefact"]).exists():
            metrics, was_skipped = done["metrics"], True
        else:
            stage.begin(keep_partial=False)
            start = None
            if previous is not None:
                state, _, _ = read_checkpoint(previous)
                start = latent_float_weights(_StateHolder(state), float_model)
            metrics, _ = run_variant(float_model, meta, data, opts, variant, stage.dir, start=start, seed=cfg.seed,
                                     show_progress=show_progress)
            metrics["warm_start"] = previous.parent.parent.name if previous is not None else "float"
            stage.finish({"artefact": str(stage.dir / "model.qonnx.onnx"), "metrics": metrics})
            was_skipped = False
        v.artefact = str(stage.dir / "model.qonnx.onnx")
        results.append(Result(v, metrics))
        if was_skipped:
            skipped.append(v.name)
        if opts.schedule == "progressive" and not LowBitSpec.parse(spec).fold_bn:
            # a BN-folded variant's weights are not the float model's layout: it is never a warm start
            previous, start_hash = best, file_hash(best)
    rows = [{"precision": r.variant.precision, **r.metrics} for r in results]
    summary = {"order": order, "schedule": opts.schedule, "headline": headline(rows, opts.targets),
               "pareto": {t: pareto_front(rows, t) for t in opts.targets}}
    (run_dir / "lowbit" / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_accuracy_vs_fps(rows, opts.targets, run_dir / "lowbit" / "accuracy-vs-fps.png")
    return results


class _StateHolder:
    """Gives a plain state dict the ``state_dict()`` method latent_float_weights reads."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


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
        data = prepare_run_data(cfg, run_dir)
        (run_dir / "data.json").write_text(json.dumps(data.report, indent=1))
        fit_out, train_skipped = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
        skipped = ["train"] if train_skipped else []
        sources = model_chain(cfg, data, run_dir, Path(fit_out["best_checkpoint"]), skipped, resume, show_progress)
        results: list[Result] = []
        for source in sources:
            # the last model of the chain gets every precision; the models before it are reported in fp32
            precisions = cfg.precisions if source is sources[-1] else ["fp32"]
            results += _precision_variants(cfg, data, run_dir, source, precisions, skipped)
        if cfg.lowbit is not None:
            results += lowbit_stage(cfg, data, run_dir, sources[-1], skipped, show_progress)
        _add_speedups(results, cfg.evaluate.latency_batches)
        write_results(results, run_dir)
        from edgecnn.report.html import write_report

        report_path = write_report(run_dir)
        return RunOutcome(run_dir, [r.row() for r in results], fit_out, data.report, report_path, skipped)
    finally:
        logging.getLogger("edgecnn").removeHandler(handler)
        handler.close()
