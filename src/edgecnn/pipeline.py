"""Run an experiment inside ``runs/<name>/``: sequence the verbs (train -> distill -> prune -> precision variants ->
low-bit sweep -> results -> report) and cache each one's outputs by the content hash of its inputs.

Only sequencing and caching here: a stage is its inputs (the cache key), a call of the code that does the work
(train/, compress/, variants/) and a typed record (edgecnn.records) that it returns to its caller. A stage whose
inputs are unchanged is skipped; an interrupted training resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
import yaml

from edgecnn.config import ExperimentConfig
from edgecnn.data.prepare import PreparedData, prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.records import DistillResult, FitResult, PruneResult
from edgecnn.results import Result, Variant, add_speedups, write_results
from edgecnn.stages import RunLock, Stage, file_hash
from edgecnn.train.distributed import current as current_group
from edgecnn.train.distributed import launched_by_torchrun
from edgecnn.train.options import merge_train
from edgecnn.variants.precisions import BuildJob, PrecisionOptions, get_precision

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StageOutcome(Generic[T]):
    """What a stage gives its caller: its typed record and whether it was reused (inputs unchanged)."""

    record: T
    skipped: bool


@dataclass
class RunOutcome:
    """A finished run: its directory, results rows, the data report and the skipped stages. A single-model run
    has its training record in ``fit``; a multi-model run (``models:``) has one RunOutcome per model in ``models``
    and no ``fit`` of its own."""

    run_dir: Path
    results: list[dict[str, Any]]
    data_report: dict[str, Any]
    fit: FitResult | None = None
    report_path: Path | None = None
    skipped_stages: list[str] = field(default_factory=list)
    models: list[RunOutcome] = field(default_factory=list)


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("edgecnn").addHandler(handler)
    logging.getLogger("edgecnn").setLevel(logging.INFO)
    return handler


def _torch_version() -> str:
    return torch.__version__.split("+")[0]


def _file_or_name(ref: str | None) -> str | None:
    """A weights reference in a cache key: the content hash of a local file, else the name itself."""
    return file_hash(ref) if ref and Path(ref).is_file() else ref


def _data_key(cfg: ExperimentConfig, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """What the prepared data a model is trained on depends on: the data section, the split, and the pre-processing
    actually applied (input size and normalization, which transfer learning changes to match the weights)."""
    return {"data": cfg.data.key(), "split": file_hash(run_dir / "split.json"),
            "image_size": data.image_size, "normalization": [list(data.normalization.mean),
                                                             list(data.normalization.std)]}


def _resumable(stage: Stage, resume: bool) -> bool:
    """Begin ``stage``, keeping an interrupted training of the same inputs to resume from; returns resuming."""
    resuming = resume and stage.interrupted() and (stage.dir / "last.safetensors").exists()
    stage.begin(keep_partial=resuming)
    return resuming


def train_stage_inputs(cfg: ExperimentConfig, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    """The train stage's cache key: everything that changes the trained model."""
    return {"model": cfg.model.model_dump(), "weights": _file_or_name(cfg.model.weights),
            "pretrained": None if cfg.pretrained is None else {
                **cfg.pretrained.model_dump(), "weights": _file_or_name(cfg.pretrained.weights)},
            "train": cfg.train.key(), **_data_key(cfg, data, run_dir), "seed": cfg.seed,
            "torch": _torch_version()}


def train_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, resume: bool = True,
                show_progress: bool = True) -> StageOutcome[FitResult]:
    """Train (or skip / resume) the base model."""
    from edgecnn.report.plots import plot_training_curves
    from edgecnn.train.trainer import train_model

    group = current_group()
    stage = Stage(run_dir, "train", train_stage_inputs(cfg, data, run_dir))
    decision: tuple[str, Any] | None = None
    if group.main:  # under DDP rank 0 alone reads and writes the stage records; the others follow its decision
        if (done := stage.cached()) is not None and Path(done["best_checkpoint"]).exists():
            decision = ("done", done)
        else:
            decision = ("train", _resumable(stage, resume))
    kind, value = group.broadcast(decision)
    if kind == "done":
        return StageOutcome(FitResult.from_dict(value), True)
    resuming = value
    if cfg.pretrained is not None:
        from edgecnn.train.transfer import transfer

        t = transfer(cfg.model.name, cfg.transfer_weights(), data, cfg.train, cfg.pretrained, stage.dir,
                     arch_args=cfg.model.args, seed=cfg.seed, meta={"experiment": cfg.name}, resume=resuming,
                     show_progress=show_progress)
        last = t.finetune_fit or t.head_fit
        if last is None:  # transfer trains the head at least; a record without either phase is a bug
            raise RuntimeError("transfer learning finished without a training record")
        outputs = {**last, "best_checkpoint": str(t.best_checkpoint), "history": t.history,
                   "epochs_run": len(t.history), "transfer": {k: v for k, v in t.to_dict().items() if k != "history"}}
        plot_training_curves(t.history, stage.dir / "curves.png")
        return StageOutcome(FitResult.from_dict(stage.finish(outputs)), False)
    result = train_model(cfg.model, data, cfg.train, stage.dir, seed=cfg.seed, experiment=cfg.name, resume=resuming,
                         show_progress=show_progress)
    if group.main:
        plot_training_curves(result.history, stage.dir / "curves.png")
        stage.finish(result.to_dict())
    return StageOutcome(result, False)


def prepare_run_data(cfg: ExperimentConfig, run_dir: Path) -> PreparedData:
    """The run's data; with ``pretrained:`` resized and normalized as the pretrained weights expect."""
    data_cfg, norm = cfg.data, None
    if cfg.pretrained is not None:
        from edgecnn.train.transfer import transfer_data

        data_cfg, norm = transfer_data(cfg.data, cfg.model.name, cfg.transfer_weights(), cfg.pretrained)
    data = prepare_data(data_cfg, cfg.seed, run_dir / "split.json")
    return replace(data, normalization=norm) if norm is not None else data


def check_run_data(cfg: ExperimentConfig, data: PreparedData, run_dir: Path) -> None:
    """The dataset check of ``edgecnn data`` on the run's own split: data_check.json, its actions in data.json (and
    so the report), duplicates across the splits as warnings in the log (they inflate every accuracy)."""
    from edgecnn.data.check import check_prepared

    check = check_prepared(data, settings={"train.class_balance": cfg.train.class_balance,
                                           "train.select_by": cfg.train.select_by})
    (run_dir / "data_check.json").write_text(json.dumps(check.to_dict(), indent=1))
    data.report["check"] = {"actions": check.actions, "seconds": check.seconds}
    for action in check.actions:
        log.info("data check: %s", action)
    for leak in (o for o in check.duplicates.across if o.images):
        log.warning("data check: %d %s image(s) have an identical or near copy in %s: their accuracy is inflated "
                    "(data_check.json lists examples)", leak.images, leak.second, leak.first)


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
                  show_progress: bool = True) -> StageOutcome[DistillResult]:
    """Distill the trained model (or distill.teacher, a checkpoint) into distill.student, with the control."""
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.train.distill import distill_model, new_student, student_meta, train_control

    opts = cfg.distill
    if opts is None:
        raise EdgeCNNError("the experiment has no distill: section; add one (distill.student) to distill its model")
    if opts.teacher:
        teacher = Path(opts.teacher)
        if not teacher.is_file():
            raise EdgeCNNError(f"distill.teacher: no checkpoint file {teacher}; in a run the teacher is the trained "
                               "model unless distill.teacher names an edgecnn checkpoint (.safetensors)")
    train = merge_train(cfg.train, opts.train, "distill.train")
    # the student's training, shared by the distilled student and the control (which ignores teacher and KD options)
    seed = cfg.seed if opts.seed is None else opts.seed
    recipe = {"student": opts.student.model_dump(), "train": train.key(),
              "data": cfg.data.key(), "split": file_hash(run_dir / "split.json"),
              "seed": seed, "torch": _torch_version()}
    stage = Stage(run_dir, "distill", {"teacher": file_hash(teacher), "distill": opts.model_dump(exclude={"seed"}),
                                       **recipe})
    if (done := stage.cached()) is not None and Path(done["checkpoint"]).exists():
        return StageOutcome(DistillResult.from_dict(done), True)
    t_model, t_meta = load_checkpoint(teacher)
    meta = student_meta(opts.student, data, str(teacher), cfg.name)
    control = None
    if opts.control:  # its own stage: changing the teacher, T or the loss weights does not retrain it
        c_stage = Stage(run_dir, "distill-control", recipe)
        if (control := c_stage.cached()) is None or not Path(control["best_checkpoint"]).exists():
            c_resuming = _resumable(c_stage, resume)
            ctrl = train_control(new_student(opts.student, data, seed), data, train, c_stage.dir, seed=seed,
                                 meta=meta, resume=c_resuming, show_progress=show_progress)
            control = c_stage.finish(ctrl.to_dict())
    resuming = resume and stage.interrupted()
    stage.begin(keep_partial=resuming)
    result = distill_model(t_model, new_student(opts.student, data, seed), data, train, opts, stage.dir,
                           teacher_meta=t_meta, student_meta=meta, seed=seed, resume=resuming,
                           show_progress=show_progress, trained_control=control)
    stage.finish(result.to_dict())
    return StageOutcome(result, False)


def prune_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Path,
                show_progress: bool = True) -> StageOutcome[PruneResult]:
    """Prune the model of ``source`` (the trained or distilled checkpoint) and fine-tune it."""
    from edgecnn.compress.prune import PRUNE_RECIPE_VERSION, prune_model
    from edgecnn.train.checkpoint import load_checkpoint

    opts = cfg.prune
    if opts is None:
        raise EdgeCNNError("the experiment has no prune: section; add one (prune.method, prune.ratio) to prune it")
    train = merge_train(cfg.train, opts.train, "prune.train")
    inputs = {"source": file_hash(source), "prune": opts.model_dump(), "train": train.key(),
              "split": file_hash(run_dir / "split.json"), "seed": cfg.seed, "recipe": PRUNE_RECIPE_VERSION}
    stage = Stage(run_dir, "prune", inputs)
    if (done := stage.cached()) is not None and Path(done["checkpoint"]).exists():
        return StageOutcome(PruneResult.from_dict(done), True)
    stage.begin(keep_partial=False)
    model, meta = load_checkpoint(source)
    result = prune_model(model, meta, data, opts, train, stage.dir, seed=cfg.seed, show_progress=show_progress)
    stage.finish(result.to_dict())
    return StageOutcome(result, False)


def precision_options(cfg: ExperimentConfig, show_progress: bool = False) -> PrecisionOptions:
    """The options every precision handler may read, from the experiment."""
    from edgecnn.compress.options import LowbitConfig

    return PrecisionOptions(quantize=cfg.quantize, lowbit=cfg.lowbit or LowbitConfig(), opset=cfg.export.opset,
                            seed=cfg.seed, show_progress=show_progress, device=cfg.train.device)


def _export_inputs(cfg: ExperimentConfig) -> dict[str, Any]:
    """The export options a variant depends on; without test-time views the record is the one of runs made before
    export.tta existed, so their finished variants stay valid."""
    return cfg.export.model_dump(exclude={"tta"} if cfg.export.tta == "none" else None)


@dataclass
class Fp32Reference:
    """The fp32 variant of a model, the reference of its other precisions: its ONNX file (what INT8 is built from)
    and its test predictions (what agreement with fp32 is counted against)."""

    onnx: Path
    predictions: torch.Tensor | None


@dataclass
class VariantOutcome:
    """One precision variant: its results row, whether it was reused, and its test predictions."""

    result: Result
    skipped: bool
    predictions: torch.Tensor | None


def _variant_inputs(cfg: ExperimentConfig, run_dir: Path, checkpoint: Path, precision: str,
                    options: PrecisionOptions) -> dict[str, Any]:
    return {"checkpoint": file_hash(checkpoint), "precision": precision, "evaluate": cfg.evaluate.model_dump(),
            "export": _export_inputs(cfg), "split": file_hash(run_dir / "split.json"),
            **get_precision(precision).recipe(options)}


def _cached_variant(stage: Stage, precision: str) -> dict[str, Any] | None:
    """The finished record of a variant whose files are all still there (a deleted prediction file rebuilds it)."""
    done = stage.cached()
    if done is None or not Path(done["artefact"]).exists():
        return None
    needs_predictions = done.get("predictions", precision == "fp32")
    if needs_predictions and not (stage.dir / "predictions.npy").exists():
        return None
    return done


def precision_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, precision: str, source: Source | Path,
                    fp32: Fp32Reference | None) -> VariantOutcome:
    """Build and measure one precision variant of a trained model (skipped when its inputs are unchanged)."""
    import numpy as np

    from edgecnn.variants.measuring import MEASUREMENT_VERSION, load_source, make_variant, measure_variant, view_gain

    if not isinstance(source, Source):
        source = Source("train", Path(source), cfg.model.name, ["train"], cfg.model.args)
    handler, options = get_precision(precision), precision_options(cfg)
    checkpoint = source.checkpoint
    variant = Variant(name=source.variant_name(precision), base_model=source.base_model,
                      recipe=source.recipe + ([precision] if precision != "fp32" else []), precision=precision,
                      lineage_extra={"arch_args": source.arch_args})
    stage = Stage(run_dir / "variants", variant.id, _variant_inputs(cfg, run_dir, checkpoint, precision, options))
    fp32_preds = None if fp32 is None else fp32.predictions
    if (done := _cached_variant(stage, precision)) is not None:
        variant.artefact = done["artefact"]
        preds_file = stage.dir / "predictions.npy"
        remeasure = done.get("measured_with", 1) != MEASUREMENT_VERSION and preds_file.exists()
        # the stored predictions are read only where they are used: fp32's are the others' reference (a
        # re-measurement computes them again)
        wanted = precision == "fp32" and not remeasure and preds_file.exists()
        preds = torch.from_numpy(np.load(preds_file)) if wanted else None
        if remeasure:
            # the measuring code changed since (e.g. how a runtime executes the file): measure again, do not rebuild
            log.info("variant %s: measured by an earlier edgecnn; measuring its file again", variant.name)
            metrics, preds = measure_variant(handler, load_source(checkpoint, cfg.export.tta)[0],
                                             Path(done["artefact"]), data, cfg.evaluate, stage.dir, fp32_preds)
            np.save(preds_file, preds.numpy())
            done = stage.finish({**done, "metrics": {**done["metrics"], **metrics},
                                 "measured_with": MEASUREMENT_VERSION, "predictions": True})
        return VariantOutcome(Result(variant, done["metrics"]), True, preds)
    stage.begin(keep_partial=False)
    log.info("variant %s: building %s — %s", variant.name, precision, handler.description.split("\n")[0])
    model, meta = load_source(checkpoint, cfg.export.tta)
    job = BuildJob(precision, model, meta, data, stage.dir, options,
                   fp32_onnx=fp32.onnx if fp32 else None)
    artefact, metrics, preds = make_variant(job, cfg.evaluate, fp32_preds)
    if precision == "fp32" and cfg.export.tta != "none":
        metrics.update(view_gain(model, data))
    variant.artefact = str(artefact)
    metrics["checkpoint_bytes"] = Path(checkpoint).stat().st_size
    if preds is not None:  # kept with the variant: a rerun that reuses it still has fp32's reference predictions
        np.save(stage.dir / "predictions.npy", preds.numpy())
    stage.finish({"artefact": str(artefact), "metrics": metrics, "measured_with": MEASUREMENT_VERSION,
                  "predictions": preds is not None})
    return VariantOutcome(Result(variant, metrics), False, preds)


def model_chain(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, trained: Path, resume: bool = True,
                show_progress: bool = True) -> tuple[list[Source], list[str]]:
    """train -> [distill] -> [prune]: the models whose variants go into the results, in that order, and the stages
    of the chain that were reused."""
    sources = [Source("train", trained, cfg.model.name, ["train"], cfg.model.args)]
    skipped: list[str] = []
    if cfg.distill is not None:
        distilled = distill_stage(cfg, data, run_dir, trained, resume, show_progress)
        student = cfg.distill.student
        if distilled.record.control_checkpoint:
            sources.append(Source("distill-control", distilled.record.control_checkpoint, student.name,
                                  ["train-student"], student.args))
        sources.append(Source("distill", distilled.record.checkpoint, student.name, ["train", "distill"],
                              student.args))
        skipped += ["distill"] if distilled.skipped else []
    if cfg.prune is not None:
        last = sources[-1]
        pruned = prune_stage(cfg, data, run_dir, last.checkpoint, show_progress)
        sources.append(Source("prune", pruned.record.checkpoint, last.base_model, last.recipe + ["prune"],
                              {**last.arch_args, "pruned": cfg.prune.model_dump()}))
        skipped += ["prune"] if pruned.skipped else []
    return sources, skipped


def precision_variants(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Source,
                       precisions: list[str]) -> list[VariantOutcome]:
    """Every precision variant of ``source`` (fp32 first: the reference of the others), each with its hardware
    columns on the run's targets."""
    from edgecnn.variants.hardware import hardware_columns

    outcomes: list[VariantOutcome] = []
    fp32: Fp32Reference | None = None
    for precision in precisions:
        out = precision_stage(cfg, data, run_dir, precision, source, fp32)
        out.result.metrics.update(hardware_columns(get_precision(precision), Path(out.result.variant.artefact),
                                                   cfg.targets))
        outcomes.append(out)
        if precision == "fp32":
            fp32 = Fp32Reference(Path(out.result.variant.artefact), out.predictions)
    return outcomes


def lowbit_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Source,
                 show_progress: bool = True) -> list[VariantOutcome]:
    """The low-bit sweep of the final model (variants/lowbit_sweep.py), one cached stage per variant; the sweep
    gives each variant its hardware columns on the run's targets too."""
    from edgecnn.variants.lowbit_sweep import sweep

    assert cfg.lowbit is not None
    done = sweep(source.checkpoint, data, cfg.lowbit, run_dir / "lowbit", seed=cfg.seed, show_progress=show_progress,
                 cache_key={"split": file_hash(run_dir / "split.json")}, targets=cfg.targets)
    outcomes = []
    for v in done:
        variant = Variant(name=f"lowbit-{v.name}", base_model=source.base_model, recipe=source.recipe + ["lowbit-qat"],
                          precision=v.name, bits=v.spec if isinstance(v.spec, dict) else {"precision": v.spec},
                          artefact=str(v.artefact), lineage_extra={"arch_args": source.arch_args})
        outcomes.append(VariantOutcome(Result(variant, {**v.metrics, **v.estimates}), v.skipped, None))
    return outcomes


@contextmanager
def run_directory(cfg: ExperimentConfig, fresh: bool = False) -> Iterator[Path]:
    """The run directory of ``cfg``, locked for this process while the block runs (a second run on it is a one-line
    error); ``fresh`` moves earlier work into ``<name>.old-<time>/`` first, never deleting it."""
    run_dir = Path(cfg.output) / cfg.name
    for folder, what in ((Path(cfg.output), "output"), (run_dir, "the run directory")):
        if folder.exists() and not folder.is_dir():
            raise EdgeCNNError(f"{what} {folder} is a file, not a folder; set output to a folder (each run is a "
                               "folder inside it) or choose another name")
    with RunLock(run_dir):
        earlier = [p for p in run_dir.iterdir() if p.name != ".lock"]
        if fresh and earlier:
            old = run_dir.with_name(f"{cfg.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            old.mkdir()
            for p in earlier:
                p.rename(old / p.name)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        yield run_dir


def train(cfg: ExperimentConfig, *, resume: bool = True, show_progress: bool = True) -> FitResult:
    """Run the data and train stages of ``cfg`` (the same stages, data and cache as `edgecnn run`); returns the fit
    record."""
    if launched_by_torchrun():
        return _train_data_parallel(cfg, resume=resume, show_progress=show_progress)
    with run_directory(cfg) as run_dir:
        data = prepare_run_data(cfg, run_dir)
        return train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress).record


def _train_data_parallel(cfg: ExperimentConfig, *, resume: bool, show_progress: bool) -> FitResult:
    """One rank of ``torchrun -m edgecnn train``: rank 0 holds the run directory (lock, split, stage records,
    checkpoints); every rank trains on its share of each batch. Returns this rank's fit record."""
    from edgecnn.devices import resolve_device
    from edgecnn.train.distributed import start, stop

    if cfg.pretrained is not None:
        raise EdgeCNNError("multi-process training covers models trained from scratch; fine-tune pretrained weights "
                           "with one process (drop --nproc), on a GPU where you have one")
    group = start(resolve_device(cfg.train.device))
    if not group.main:  # rank 0 speaks for the group
        logging.getLogger("edgecnn").setLevel(logging.WARNING)
    try:
        if group.main:
            with run_directory(cfg) as run_dir:
                data = prepare_run_data(cfg, run_dir)
                group.barrier()  # the split file exists: the other ranks may read it
                fit = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress).record
        else:
            run_dir = Path(cfg.output) / cfg.name
            group.barrier()
            data = prepare_run_data(cfg, run_dir)
            fit = train_stage(cfg, data, run_dir, resume=resume, show_progress=False).record
        group.barrier()  # rank 0 has recorded the stage before any rank reports success
        return fit
    finally:
        stop()


def run(cfg: ExperimentConfig, *, fresh: bool = False, resume: bool = True, show_progress: bool = True) -> RunOutcome:
    """Run the whole experiment; returns the run directory and the results rows.

    With ``models:`` in the config each model runs as a sub-run (``runs/NAME/<model>/``) and the parent folder
    gets the combined results table (a ``model`` column) and a summary report.
    """
    if not cfg.models:
        return _run_single(cfg, fresh=fresh, resume=resume, show_progress=show_progress)
    from edgecnn.report.html import write_summary_report
    from edgecnn.results import write_rows

    with run_directory(cfg, fresh) as parent:
        outcomes = []
        for sub in cfg.per_model():
            log.info("model %s", sub.name)
            outcomes.append(_run_single(sub, resume=resume, show_progress=show_progress))
        rows = [{"model": o.run_dir.name, **row} for o in outcomes for row in o.results]
        write_rows(rows, parent)
        report_path = write_summary_report(parent, [o.run_dir for o in outcomes])
    return RunOutcome(parent, rows, outcomes[0].data_report, report_path=report_path,
                      skipped_stages=[f"{o.run_dir.name}:{s}" for o in outcomes for s in o.skipped_stages],
                      models=outcomes)


def _run_single(cfg: ExperimentConfig, *, fresh: bool = False, resume: bool = True,
                show_progress: bool = True) -> RunOutcome:
    with run_directory(cfg, fresh) as run_dir:
        return _run_stages(cfg, run_dir, resume=resume, show_progress=show_progress)


def _run_stages(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, show_progress: bool) -> RunOutcome:
    handler = _attach_log_file(run_dir)
    try:
        data = prepare_run_data(cfg, run_dir)
        if cfg.data.check:
            check_run_data(cfg, data, run_dir)
        (run_dir / "data.json").write_text(json.dumps(data.report, indent=1))
        trained = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
        sources, skipped = model_chain(cfg, data, run_dir, trained.record.best_checkpoint, resume, show_progress)
        skipped = (["train"] if trained.skipped else []) + skipped
        variants: list[VariantOutcome] = []
        for source in sources:
            # the last model of the chain gets every precision; the models before it are reported in fp32
            precisions = cfg.precisions if source is sources[-1] else ["fp32"]
            variants += precision_variants(cfg, data, run_dir, source, precisions)
        if cfg.lowbit is not None:
            variants += lowbit_stage(cfg, data, run_dir, sources[-1], show_progress)
        results = [v.result for v in variants]
        skipped += [v.result.variant.name for v in variants if v.skipped]
        add_speedups(results, cfg.evaluate.latency_batches)
        write_results(results, run_dir)
        from edgecnn.report.html import write_report

        report_path = write_report(run_dir)
        return RunOutcome(run_dir, [r.row() for r in results], data.report, trained.record, report_path, skipped)
    finally:
        logging.getLogger("edgecnn").removeHandler(handler)
        handler.close()
