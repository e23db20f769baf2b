"""Run an experiment inside ``runs/<name>/``: sequence the verbs (train -> distill -> prune -> precision variants ->
low-bit sweep -> results -> report) and cache each one's outputs by the content hash of its inputs.

No domain logic here: a stage is its inputs (the cache key), a call of the code that does the work, and a record.
A stage whose inputs are unchanged is skipped; an interrupted training resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from edgecnn.config import ExperimentConfig
from edgecnn.data.prepare import PreparedData, prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.results import CheckpointMeta, Result, Variant, add_speedups, write_results
from edgecnn.stages import RunLock, Stage, file_hash
from edgecnn.train.distributed import current as current_group
from edgecnn.train.distributed import launched_by_torchrun
from edgecnn.train.options import merge_train
from edgecnn.variants.precisions import BuildJob, PrecisionOptions, get_precision

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
                show_progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Train (or skip / resume) the base model; returns (fit outputs, skipped)."""
    from edgecnn.models import create_model
    from edgecnn.report.plots import plot_training_curves
    from edgecnn.train.trainer import fit

    group = current_group()
    stage = Stage(run_dir, "train", train_stage_inputs(cfg, data, run_dir))
    decision = None
    if group.main:  # under DDP rank 0 alone reads and writes the stage records; the others follow its decision
        if (done := stage.cached()) is not None and Path(done["best_checkpoint"]).exists():
            decision = ("done", done)
        else:
            decision = ("train", _resumable(stage, resume))
    kind, value = group.broadcast(decision)
    if kind == "done":
        return value, True
    resuming = value
    if cfg.pretrained is not None:
        from edgecnn.train.transfer import transfer

        t = transfer(cfg.model.name, cfg.transfer_weights(), data, cfg.train, cfg.pretrained, stage.dir,
                     arch_args=cfg.model.args, seed=cfg.seed, meta={"experiment": cfg.name}, resume=resuming,
                     show_progress=show_progress)
        last = t.finetune_fit or t.head_fit
        outputs = {**last, "best_checkpoint": str(t.best_checkpoint), "history": t.history,
                   "epochs_run": len(t.history), "transfer": {k: v for k, v in t.to_dict().items() if k != "history"}}
        plot_training_curves(t.history, stage.dir / "curves.png")
        return stage.finish(outputs), False
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, num_classes=len(data.classes), input_size=data.image_size,
                         **cfg.model.args, **({"weights": cfg.model.weights} if cfg.model.weights else {}))
    meta = data.model_meta(cfg.model.name, cfg.model.args, pretrained=cfg.model.weights, experiment=cfg.name)
    result = fit(model, data, cfg.train, stage.dir, seed=cfg.seed, meta=meta.to_dict(), resume=resuming,
                 show_progress=show_progress)
    if not group.main:
        return result.to_dict(), False
    plot_training_curves(result.history, stage.dir / "curves.png")
    return stage.finish(result.to_dict()), False


def prepare_run_data(cfg: ExperimentConfig, run_dir: Path) -> PreparedData:
    """The run's data; with ``pretrained:`` resized and normalized as the pretrained weights expect."""
    data_cfg, norm = cfg.data, None
    if cfg.pretrained is not None:
        from edgecnn.train.transfer import transfer_data

        data_cfg, norm = transfer_data(cfg.data, cfg.model.name, cfg.transfer_weights(), cfg.pretrained)
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
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.train.distill import distill_model, new_student, student_meta, train_control

    opts = cfg.distill
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
        return done, True
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
    return stage.finish(result.to_dict()), False


def prune_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, source: Path,
                show_progress: bool = True) -> tuple[dict[str, Any], bool]:
    """Prune the model of ``source`` (the trained or distilled checkpoint) and fine-tune it."""
    from edgecnn.compress.prune import PRUNE_RECIPE_VERSION, prune_model
    from edgecnn.train.checkpoint import load_checkpoint

    opts = cfg.prune
    train = merge_train(cfg.train, opts.train, "prune.train")
    inputs = {"source": file_hash(source), "prune": opts.model_dump(), "train": train.key(),
              "split": file_hash(run_dir / "split.json"), "seed": cfg.seed, "recipe": PRUNE_RECIPE_VERSION}
    stage = Stage(run_dir, "prune", inputs)
    if (done := stage.cached()) is not None and Path(done["checkpoint"]).exists():
        return done, True
    stage.begin(keep_partial=False)
    model, meta = load_checkpoint(source)
    result = prune_model(model, meta, data, opts, train, stage.dir, seed=cfg.seed, show_progress=show_progress)
    return stage.finish(result.to_dict()), False


def precision_options(cfg: ExperimentConfig, show_progress: bool = False) -> PrecisionOptions:
    """The options every precision handler may read, from the experiment."""
    from edgecnn.compress.options import LowbitConfig

    return PrecisionOptions(quantize=cfg.quantize, lowbit=cfg.lowbit or LowbitConfig(), opset=cfg.export.opset,
                            seed=cfg.seed, show_progress=show_progress, device=cfg.train.device)


def _export_inputs(cfg: ExperimentConfig) -> dict[str, Any]:
    """The export options a variant depends on; without test-time views the record is the one of runs made before
    export.tta existed, so their finished variants stay valid."""
    return cfg.export.model_dump(exclude={"tta"} if cfg.export.tta == "none" else None)


def precision_stage(cfg: ExperimentConfig, data: PreparedData, run_dir: Path, precision: str, source: Source | Path,
                    fp32: dict[str, Any] | None) -> tuple[Result, bool]:
    """Build and measure one precision variant of a trained model (skipped when its inputs are unchanged)."""
    import numpy as np

    from edgecnn.models.views import with_views
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.variants.measuring import MEASUREMENT_VERSION, make_variant, measure_variant, view_gain

    if not isinstance(source, Source):
        source = Source("train", Path(source), cfg.model.name, ["train"], cfg.model.args)
    handler, options = get_precision(precision), precision_options(cfg)
    checkpoint = source.checkpoint
    variant = Variant(name=source.variant_name(precision), base_model=source.base_model,
                      recipe=source.recipe + ([precision] if precision != "fp32" else []), precision=precision,
                      lineage_extra={"arch_args": source.arch_args})
    inputs = {"checkpoint": file_hash(checkpoint), "precision": precision, "evaluate": cfg.evaluate.model_dump(),
              "export": _export_inputs(cfg), "split": file_hash(run_dir / "split.json"),
              **handler.recipe(options)}
    stage = Stage(run_dir / "variants", variant.id, inputs)

    def source_model():
        model, meta = load_checkpoint(checkpoint)
        if cfg.export.tta != "none":  # the views are part of every file; the checkpoint stays the single-view network
            model, meta = with_views(model, cfg.export.tta), {**meta, "tta": cfg.export.tta}
        return model, meta

    fp32_preds = None if fp32 is None else fp32["predictions"]
    if (done := stage.cached()) is not None and Path(done["artefact"]).exists():
        variant.artefact = done["artefact"]
        if done.get("measured_with", 1) != MEASUREMENT_VERSION and (stage.dir / "predictions.npy").exists():
            # the measuring code changed since (e.g. how a runtime executes the file): measure again, do not rebuild
            log.info("variant %s: measured by an earlier edgecnn; measuring its file again", variant.name)
            metrics, preds = measure_variant(handler, source_model()[0], Path(done["artefact"]), data, cfg.evaluate,
                                             stage.dir, fp32_preds)
            np.save(stage.dir / "predictions.npy", preds.numpy())
            done = stage.finish({**done, "metrics": {**done["metrics"], **metrics},
                                 "measured_with": MEASUREMENT_VERSION})
        return Result(variant, done["metrics"]), True
    stage.begin(keep_partial=False)
    log.info("variant %s: building %s — %s", variant.name, precision, handler.description.split("\n")[0])
    model, meta = source_model()
    job = BuildJob(precision, model, CheckpointMeta.from_dict(meta), data, stage.dir, options,
                   fp32_onnx=fp32["onnx"] if fp32 else None)
    artefact, metrics, preds = make_variant(job, cfg.evaluate, fp32_preds)
    if precision == "fp32" and cfg.export.tta != "none":
        metrics.update(view_gain(model, data))
    variant.artefact = str(artefact)
    metrics["checkpoint_bytes"] = Path(checkpoint).stat().st_size
    if preds is not None:
        np.save(stage.dir / "predictions.npy", preds.numpy())
    stage.finish({"artefact": str(artefact), "metrics": metrics, "measured_with": MEASUREMENT_VERSION})
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

    from edgecnn.variants.hardware import hardware_columns

    results, fp32 = [], None
    for precision in precisions:  # fp32 first: the reference of the others
        result, was_skipped = precision_stage(cfg, data, run_dir, precision, source, fp32)
        # estimates are cheap and follow the estimators' current code: computed on every run, not cached
        result.metrics.update(hardware_columns(get_precision(precision), Path(result.variant.artefact), cfg.targets))
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
    """The low-bit sweep of the final model (variants/lowbit_sweep.py), one cached stage per variant."""
    from edgecnn.variants.hardware import hardware_columns
    from edgecnn.variants.lowbit_sweep import sweep

    done = sweep(source.checkpoint, data, cfg.lowbit, run_dir / "lowbit", seed=cfg.seed, show_progress=show_progress,
                 cache_key={"split": file_hash(run_dir / "split.json")})
    results = []
    for v in done:
        variant = Variant(name=f"lowbit-{v.name}", base_model=source.base_model, recipe=source.recipe + ["lowbit-qat"],
                          precision=v.name, bits=v.spec if isinstance(v.spec, dict) else {"precision": v.spec},
                          artefact=str(v.artefact), lineage_extra={"arch_args": source.arch_args})
        estimates = hardware_columns(get_precision("wXaY"), v.artefact, [t for t in cfg.targets
                                                                          if f"fps_{t}" not in v.metrics])
        results.append(Result(variant, {**v.metrics, **estimates}))
        skipped += [variant.name] if v.skipped else []
    return results


@contextmanager
def run_directory(cfg: ExperimentConfig, fresh: bool = False) -> Iterator[Path]:
    """The run directory of ``cfg``, locked for this process while the block runs (a second run on it is a one-line
    error); ``fresh`` moves earlier work into ``<name>.old-<time>/`` first, never deleting it."""
    run_dir = Path(cfg.output) / cfg.name
    with RunLock(run_dir):
        earlier = [p for p in run_dir.iterdir() if p.name != ".lock"]
        if fresh and earlier:
            old = run_dir.with_name(f"{cfg.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            old.mkdir()
            for p in earlier:
                p.rename(old / p.name)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        yield run_dir


def train(cfg: ExperimentConfig, *, resume: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Run the data and train stages of ``cfg`` (the same stages, data and cache as `edgecnn run`); returns the fit
    record."""
    if launched_by_torchrun():
        return _train_data_parallel(cfg, resume=resume, show_progress=show_progress)
    with run_directory(cfg) as run_dir:
        data = prepare_run_data(cfg, run_dir)
        fit, _ = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
    return fit


def _train_data_parallel(cfg: ExperimentConfig, *, resume: bool, show_progress: bool) -> dict[str, Any]:
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
                fit, _ = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
        else:
            run_dir = Path(cfg.output) / cfg.name
            group.barrier()
            data = prepare_run_data(cfg, run_dir)
            fit, _ = train_stage(cfg, data, run_dir, resume=resume, show_progress=False)
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
    return RunOutcome(parent, rows, {o.run_dir.name: o.fit for o in outcomes}, outcomes[0].data_report, report_path,
                      [f"{o.run_dir.name}:{s}" for o in outcomes for s in o.skipped_stages])


def _run_single(cfg: ExperimentConfig, *, fresh: bool = False, resume: bool = True,
                show_progress: bool = True) -> RunOutcome:
    with run_directory(cfg, fresh) as run_dir:
        return _run_stages(cfg, run_dir, resume=resume, show_progress=show_progress)


def _run_stages(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, show_progress: bool) -> RunOutcome:
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
        add_speedups(results, cfg.evaluate.latency_batches)
        write_results(results, run_dir)
        from edgecnn.report.html import write_report

        report_path = write_report(run_dir)
        return RunOutcome(run_dir, [r.row() for r in results], fit_out, data.report, report_path, skipped)
    finally:
        logging.getLogger("edgecnn").removeHandler(handler)
        handler.close()
