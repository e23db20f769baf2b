"""The `edgecnn` command: a thin typer layer over the public API, printing with rich."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from edgecnn.cli_args import csv_list, hints_option, json_option, options_error, ratios_option, without_nproc
from edgecnn.cli_boundary import RUN_DIR, GuardedGroup, fail, say
from edgecnn.cli_data import data_command
from edgecnn.cli_tools import tools_app
from edgecnn.compress.options import LowbitConfig, PruneConfig, QuantizeConfig
from edgecnn.errors import EdgeCNNError
from edgecnn.export.options import ExportConfig
from edgecnn.train.options import DistillConfig, TrainConfig

app = typer.Typer(help="edgecnn: CNN classifiers from data to edge/FPGA artefacts, with measured costs.",
                  no_args_is_help=False, pretty_exceptions_enable=False, add_completion=False, cls=GuardedGroup)
app.add_typer(tools_app, name="tools")  # `edgecnn tools install finn` (cli_tools.py)
app.command("data")(data_command)  # `edgecnn data DIR`: check an image folder before training (cli_data.py)
console = Console()


def _default(model, name: str):
    """The default of an options field: CLI defaults are read from the option models, never copied."""
    return model.model_fields[name].get_default(call_default_factory=True)


def _setup_logging(verbose: bool) -> None:
    # Libraries (onnxscript, torch.export) log chatty INFO lines; only edgecnn's own progress is shown.
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)])
    logging.getLogger("edgecnn").setLevel(logging.INFO if verbose else logging.WARNING)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context,
         verbose: bool = typer.Option(True, "--verbose/--quiet", help="Log stage progress."),
         debug: bool = typer.Option(False, "--debug", help="Print an internal error's traceback (not to a file).")
         ) -> None:
    _setup_logging(verbose)
    if ctx.invoked_subcommand is None:  # `edgecnn` alone shows help
        console.print(ctx.get_help())


@app.command()
def run(ctx: typer.Context,
        config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the bundled quickstart)."),
        data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder to use instead of data.root."),
        name: Optional[str] = typer.Option(None, "--name", help="Run name (folder under output)."),
        output: Optional[Path] = typer.Option(None, "--output", help="Parent folder of run directories."),
        weights: Optional[str] = typer.Option(None, "--weights",
                                              help="Pretrained weights: a local file or a torchvision weight name."),
        fresh: bool = typer.Option(False, "--fresh", help="Start a new run (the old folder is renamed, not deleted)."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted training."),
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Validate the config, print what would run, run nothing.")) -> None:
    """Run the whole pipeline: data, train, evaluate, results table, HTML report."""
    from edgecnn.config import describe, load_config
    from edgecnn.pipeline import run as run_pipeline
    from edgecnn.train.distributed import launched_by_torchrun

    if launched_by_torchrun():
        fail(EdgeCNNError("edgecnn run is one process; train with `edgecnn train CONFIG --nproc K` (or torchrun "
                          "... -m edgecnn train), then `edgecnn run CONFIG` reuses the trained model"))

    try:
        overrides = {k: v for k, v in {"data.root": str(data) if data else None, "name": name, "model.weights": weights,
                                        "output": str(output) if output else None}.items() if v is not None}
        cfg = load_config(config, overrides)
        ctx.meta[RUN_DIR] = Path(cfg.output) / cfg.name
        if dry_run:
            console.print(f"config OK: {config or 'bundled quickstart'}\n{describe(cfg)}", highlight=False)
            return
        outcome = run_pipeline(cfg, fresh=fresh, resume=resume)
    except EdgeCNNError as exc:
        fail(exc)
    _print_results(outcome.results)
    if outcome.skipped_stages:
        console.print(f"[dim]skipped (inputs unchanged): {', '.join(outcome.skipped_stages)}[/]")
    console.print(f"run directory: [bold]{outcome.run_dir}[/]  report: [bold]{outcome.report_path}[/]")


@app.command()
def train(ctx: typer.Context,
          config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the bundled quickstart)."),
          data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder to use instead of data.root."),
          name: Optional[str] = typer.Option(None, "--name"),
          weights: Optional[str] = typer.Option(None, "--weights",
                                                help="Pretrained weights: a local file or a torchvision weight name."),
          resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted training."),
          nproc: int = typer.Option(1, "--nproc", min=1,
                                    help="Data-parallel processes (DDP, launched with torchrun; one per GPU on a GPU "
                                         "machine, 1 thread each on CPUs).")) -> None:
    """Train the experiment's model only (same code path and run directory as `edgecnn run`)."""
    from edgecnn.config import load_config
    from edgecnn.pipeline import train as train_api

    if nproc > 1:
        from edgecnn.train.launch import launch_torchrun, launched_by_torchrun

        if not launched_by_torchrun():
            code, message = launch_torchrun(nproc, without_nproc(sys.argv[1:]))
            if message:
                say(message, "[bold red]error:[/] ")
            raise typer.Exit(code)
    try:
        overrides = {k: v for k, v in {"data.root": str(data) if data else None, "name": name,
                                        "model.weights": weights}.items() if v}
        cfg = load_config(config, overrides)
        ctx.meta[RUN_DIR] = Path(cfg.output) / cfg.name
        fit = train_api(cfg, resume=resume)
    except EdgeCNNError as exc:
        fail(exc)
    if int(os.environ.get("RANK", "0")) > 0:  # a data-parallel rank other than 0: rank 0 reports
        return
    console.print(f"best val accuracy {fit.best_val_acc:.4f} at epoch {fit.best_epoch}; "
                  f"checkpoint [bold]{fit.best_checkpoint}[/]")


@app.command()
def search(ctx: typer.Context,
           config: Optional[Path] = typer.Argument(None, help="Experiment YAML with a search: section."),
           trials: Optional[int] = typer.Option(None, "--trials", help="Trials of the study in total (a rerun "
                                                                      "continues it up to this number)."),
           timeout: Optional[str] = typer.Option(None, "--timeout", help="Stop starting trials after e.g. 2h, 30m."),
           storage: Optional[str] = typer.Option(None, "--storage",
                                                 help="Optuna storage URL (default: sqlite in the run directory; "
                                                      "postgresql://user@host/db lets workers on many machines "
                                                      "join)."),
           study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the experiment name)."),
           workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes on the storage."),
           retrain_best: Optional[int] = typer.Option(None, "--retrain-best",
                                                      help="Retrain the K best trials (Pareto front) with the full "
                                                           "budget through the whole pipeline."),
           export_best: Optional[Path] = typer.Option(None, "--export-best",
                                                      help="Write the best candidate (for several objectives: the "
                                                           "Pareto front's best on the first) as an experiment YAML "
                                                           "for `edgecnn run`.")) -> None:
    """Hardware-aware search (architecture, training, bit widths) on Optuna; the study is a normal Optuna study."""
    from edgecnn.config import load_config
    from edgecnn.search_runner import search as run_search

    try:
        cfg = load_config(config)
        ctx.meta[RUN_DIR] = Path(cfg.output) / cfg.name
        if trials is not None and trials < 1:
            raise EdgeCNNError(f"--trials {trials}: give 1 or more trials")
        if workers is not None and workers < 1:
            raise EdgeCNNError(f"--workers {workers}: give 1 or more worker processes")
        outcome = run_search(cfg, trials=trials, timeout=timeout, storage=storage, study=study, workers=workers,
                             retrain_best=retrain_best, export_best=export_best)
    except EdgeCNNError as exc:
        fail(exc)
    counts = ", ".join(f"{v} {k.lower()}" for k, v in outcome.counts.items() if v)
    console.print(f"study [bold]{outcome.study}[/] in {outcome.storage}: {counts}")
    for row in outcome.best:
        console.print(f"  trial {row['number']}: {row['values']}  {row['params']}", highlight=False)
    console.print(f"summary: [bold]{outcome.summary_path}[/]")
    if outcome.report_path is not None:
        console.print(f"report: [bold]{outcome.report_path}[/]")
    if outcome.exported is not None:
        console.print(f"best candidate: [bold]{outcome.exported}[/] (edgecnn run {outcome.exported})")
    for run_dir in outcome.retrained:
        console.print(f"retrained: [bold]{run_dir}[/]")
    if outcome.lost_workers:  # the study is usable, but the user must know a worker died
        say(f"{'; '.join(outcome.lost_workers)}; rerun the same command to finish the study", "[bold red]error:[/] ")
        raise typer.Exit(1)


@app.command("eval")
def evaluate(model: Path = typer.Argument(...,
                                          help="A checkpoint (.safetensors) or a deployable file: ONNX "
                                               "(fp32/fp16/INT8/power-of-two), QONNX or LiteRT .tflite."),
             data: Path = typer.Option(..., "--data", help="ImageFolder to score; classes are matched by name."),
             as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
             backend: str = typer.Option("auto", "--backend",
                                         help="Runtime for ONNX files: onnxruntime or openvino (auto: ONNX Runtime; "
                                              "QONNX and .tflite files use their own runtime)."),
             batch_size: int = typer.Option(64, "--batch-size")) -> None:
    """Score a model on every image of an ImageFolder, with the pre-processing stored in the file."""
    from edgecnn.api import evaluate_file

    try:
        report = evaluate_file(model, data, batch_size=batch_size, backend=backend)
    except EdgeCNNError as exc:
        fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    console.print(f"accuracy [bold]{report['accuracy']:.4f}[/] on {report['n']} images "
                  f"({report['skipped_files']} unreadable file(s) skipped); macro F1 {report['macro_f1']:.4f}"
                  + (f"; the file averages test-time views ({report['tta']})" if report["tta"] != "none" else ""))
    table = Table("class", "precision", "recall", "F1", "support")
    for cls, m in report["per_class"].items():
        table.add_row(cls, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)
    cm = Table("true \\ pred", *[c[:6] for c in report["classes"]], title="confusion matrix")
    for cls, row in zip(report["classes"], report["confusion"]):
        cm.add_row(cls, *map(str, row))
    console.print(cm)


@app.command()
def export(checkpoint: Path = typer.Argument(..., help="An edgecnn checkpoint (.safetensors)."),
           fmt: str = typer.Option("onnx", "--format",
                                   help="onnx (FP32/FP16 single file, dynamic batch), hls (hls4ml project from a "
                                        "low-bit checkpoint) or finn (FINN build folder from a low-bit checkpoint)."),
           target: str = typer.Option("zcu104-finn", "--target", help="finn: the dataflow target (board)."),
           fps: Optional[float] = typer.Option(None, "--fps",
                                               help="finn: fold for this FPS (default: the fastest that fits)."),
           precision: str = typer.Option("fp32", "--precision", help="fp32 or fp16."),
           opset: int = typer.Option(_default(ExportConfig, "opset"), "--opset", help="ONNX opset version."),
           out: Optional[Path] = typer.Option(None, "--out",
                                              help="Output file (default: next to the checkpoint)."),
           force: bool = typer.Option(False, "--force", help="Overwrite an existing output file.")) -> None:
    """Export a checkpoint to a deployable file."""
    from edgecnn.api import export as export_api
    from edgecnn.measure.size import human_bytes

    try:
        if fmt == "finn":
            from edgecnn.api import export_finn

            folder, report = export_finn(checkpoint, target, out, fps=fps, force=force)
            console.print(f"wrote [bold]{folder}[/]: {report.verdict()}; FINN's estimate {report.fps:,.0f} FPS. "
                          f"Bitstream: cd {folder} && finn build dataflow_build_config.json model.qonnx.onnx")
            return
        if fmt == "hls":
            from edgecnn.api import export_hls

            prj, qfile = export_hls(checkpoint, out)
            console.print(f"wrote [bold]{prj.project_dir}[/] (hls4ml {prj.config['backend']}, "
                          f"{prj.config['io_type']}, C simulation compiled) from {qfile}")
            return
        if fmt != "onnx":
            raise EdgeCNNError(f"unknown export format '{fmt}'; supported: onnx, hls, finn (a low-bit checkpoint from "
                               "`edgecnn quantize --precision wXaY`; INT8 QDQ ONNX comes from `edgecnn quantize`)")
        path = export_api(checkpoint, out, precision=precision, opset=opset, force=force)
    except EdgeCNNError as exc:
        fail(exc)
    console.print(f"wrote [bold]{path}[/] ({human_bytes(path.stat().st_size)})")


@app.command()
def quantize(checkpoint: Path = typer.Argument(..., help="An edgecnn checkpoint (.safetensors)."),
             precision: str = typer.Option(..., "--precision",
                                           help="fp16, bf16, fp64, int8-ptq, int8-pow2, int8-qat, tflite-int8, "
                                                "or low-bit wXaY, binary, ternary (see the list in the error for an "
                                                "unknown name)."),
             data: Optional[Path] = typer.Option(None, "--data",
                                                 help="ImageFolder for calibration/QAT and scoring (default: the "
                                                      "run's data)."),
             calib: int = typer.Option(_default(QuantizeConfig, "calib"), "--calib",
                                       help="Calibration images (INT8 PTQ)."),
             method: str = typer.Option(_default(QuantizeConfig, "method"), "--method",
                                        help="Calibration: minmax, entropy or percentile."),
             per_channel: bool = typer.Option(_default(QuantizeConfig, "per_channel"), "--per-channel/--per-tensor"),
             symmetric: bool = typer.Option(_default(QuantizeConfig, "symmetric"), "--symmetric/--asymmetric",
                                            help="Activation quantization."),
             exclude: str = typer.Option("", "--exclude", help="Layers kept in float: first,last or names."),
             qat_epochs: float = typer.Option(_default(QuantizeConfig, "qat_epochs"), "--qat-epochs"),
             qat_lr: float = typer.Option(_default(QuantizeConfig, "qat_lr"), "--qat-lr"),
             bits: Optional[Path] = typer.Option(None, "--bits",
                                                 help="Low-bit: per-layer spec YAML (default/first/last/layer name "
                                                      "-> {w, a})."),
             epochs: int = typer.Option(_default(LowbitConfig, "epochs"), "--epochs", help="Low-bit QAT epochs."),
             lr: float = typer.Option(_default(LowbitConfig, "lr"), "--lr", help="Low-bit QAT learning rate."),
             out_dir: Optional[Path] = typer.Option(None, "--out-dir")) -> None:
    """Make a precision variant of a checkpoint and measure it on the test split.

    Every precision comes from the precision registry. Low-bit precisions (w1a1..w8a8, binary, ternary, and
    per-layer specs with --bits) are trained with Brevitas QAT from the float checkpoint and exported to QONNX."""
    from pydantic import ValidationError

    from edgecnn.api import quantize as quantize_api
    from edgecnn.variants.precisions import check_precision, get_precision

    try:
        check_precision(precision)
        low_bit = bits is not None or get_precision(precision).runtime == "qonnx"
        try:
            options = QuantizeConfig(calib=calib, method=method, per_channel=per_channel, symmetric=symmetric,
                                     exclude=csv_list(exclude, "--exclude"), qat_epochs=qat_epochs, qat_lr=qat_lr)
            lowbit = LowbitConfig(epochs=epochs, lr=lr) if low_bit else None
        except ValidationError as exc:
            raise options_error(exc) from None
        result = quantize_api(checkpoint, precision, data=data, out_dir=out_dir, options=options, lowbit=lowbit,
                              bits=bits)
    except EdgeCNNError as exc:
        fail(exc)
    m = result["metrics"]
    if lowbit is not None:
        fps = ", ".join(f"{k[4:]} {v:,.0f} FPS" for k, v in m.items() if k.startswith("fps_") and v)
        console.print(f"{result['precision']}: accuracy [bold]{100 * m['accuracy']:.2f}%[/] on {m['test_images']} "
                      f"test images, packed weights {m['packed_weight_bits'] / 8192:.1f} KiB, "
                      f"{100 * m['weight_sparsity_total']:.1f}% zero weights, QONNX vs PyTorch max |diff| "
                      f"{m.get('qonnx_max_abs_diff', float('nan')):.1e}; {fps} -> [bold]{result['artefact']}[/]")
        return
    console.print(f"{precision}: accuracy [bold]{100 * m['accuracy']:.2f}%[/] on {m['test_images']} test images, "
                  f"agreement with fp32 {100 * m.get('agreement_with_fp32', float('nan')):.2f}%, "
                  f"size {m['size_bytes'] / 1024:.0f} KiB -> [bold]{result['artefact']}[/]")


@app.command()
def prune(checkpoint: Path = typer.Argument(..., help="An edgecnn checkpoint (.safetensors)."),
          method: str = typer.Option(_default(PruneConfig, "method"), "--method",
                                     help="structured (removes channels) or unstructured (zeros weights)."),
          target: Optional[str] = typer.Option(None, "--target",
                                               help="Structured: params, macs or latency (with --target-ratio)."),
          target_ratio: Optional[float] = typer.Option(None, "--target-ratio",
                                                       help="Pruned / original of --target, e.g. 0.5."),
          ratio: Optional[float] = typer.Option(None, "--ratio",
                                                help="Structured: fraction of channels removed; unstructured: target "
                                                     "sparsity."),
          ratios: Optional[str] = typer.Option(None, "--ratios",
                                               help="Per-layer channel ratios: auto (sensitivity analysis) or "
                                                    "layer=r,..."),
          importance: str = typer.Option(_default(PruneConfig, "importance"), "--importance",
                                         help="l1, l2, bn or taylor."),
          scope: str = typer.Option(_default(PruneConfig, "scope"), "--scope",
                                    help="global (one ranking) or uniform (same ratio per layer)."),
          steps: int = typer.Option(_default(PruneConfig, "steps"), "--steps",
                                    help="Prune rounds, fine-tuned in between."),
          epochs: int = typer.Option(5, "--epochs", help="Fine-tuning epochs after pruning."),
          lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate."),
          exclude: str = typer.Option("", "--exclude", help="Layers left unpruned (comma-separated names)."),
          data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder (default: the run's data and split)."),
          out_dir: Optional[Path] = typer.Option(None, "--out-dir")) -> None:
    """Prune a checkpoint (structured: a smaller dense model; unstructured: sparse weights), fine-tune, measure."""
    from pydantic import ValidationError

    from edgecnn.api import prune as prune_api

    try:
        try:
            options = PruneConfig(method=method, target=target, target_ratio=target_ratio, ratio=ratio,
                                  ratios=ratios_option(ratios), importance=importance, scope=scope, steps=steps,
                                  exclude=csv_list(exclude, "--exclude"))
            train = TrainConfig(epochs=epochs, lr=lr)
        except ValidationError as exc:
            raise options_error(exc) from None
        result = prune_api(checkpoint, options, data=data, train=train, out_dir=out_dir)
    except EdgeCNNError as exc:
        fail(exc)
    b, a = result.before, result.after
    table = Table("", "before", "after")
    for key, label in [("params", "params"), ("macs", "MACs"), ("onnx_bytes", "ONNX bytes"),
                       ("latency_ms_onnxruntime_b1", "ORT b1 ms"), ("test_accuracy", "test accuracy")]:
        if key in b or key in a:
            table.add_row(label, *(_prune_cell(key, r[key]) if r.get(key) is not None else "–" for r in (b, a)))
    console.print(table)
    extra = f", {a['speedup_onnxruntime_b1']:.2f}x faster (ORT b1)" if a.get("speedup_onnxruntime_b1") else ""
    if "sparsity" in a:
        extra += f", {100 * a['sparsity']:.1f}% of the weights zero"
    console.print(f"pruned: {100 * a['params_ratio']:.1f}% params, {100 * a['macs_ratio']:.1f}% MACs{extra} -> "
                  f"[bold]{result.checkpoint}[/]")


def _prune_cell(key: str, value) -> str:
    if key == "test_accuracy":
        return f"{100 * value:.2f}%"
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"


@app.command()
def distill(teacher: str = typer.Argument(...,
                                          help="Teacher: an edgecnn checkpoint, or a registry model trained first."),
            student: str = typer.Option(..., "--student", help="Student registry model, e.g. customnet."),
            student_args: str = typer.Option("{}", "--student-args", help='Student constructor arguments as JSON, '
                                                                          'e.g. \'{"channels": [16, 32, 64]}\'.'),
            temperature: float = typer.Option(_default(DistillConfig, "temperature"), "--temperature", "-T"),
            soft_weight: float = typer.Option(_default(DistillConfig, "soft_weight"), "--soft-weight",
                                              help="Weight of T^2 * KL(teacher || student)."),
            hard_weight: float = typer.Option(_default(DistillConfig, "hard_weight"), "--hard-weight",
                                              help="Weight of the cross-entropy with the labels."),
            mixup: float = typer.Option(_default(DistillConfig, "mixup"), "--mixup",
                                        help="Function matching: mix each batch with Beta(a, a) weights; teacher and "
                                             "student see the same mixed images (0 = off)."),
            hint: Optional[list[str]] = typer.Option(None, "--hint",
                                                     help="Feature hint student_layer:teacher_layer[:weight] "
                                                          "(repeatable)."),
            epochs: int = typer.Option(_default(TrainConfig, "epochs"), "--epochs"),
            lr: float = typer.Option(_default(TrainConfig, "lr"), "--lr"),
            control: bool = typer.Option(_default(DistillConfig, "control"), "--control/--no-control",
                                         help="Also train the student without the teacher."),
            seed: Optional[int] = typer.Option(None, "--seed",
                                               help="Seed of the student's (and control's) weights and training; the "
                                                    "split keeps the teacher run's."),
            data: Optional[Path] = typer.Option(None, "--data",
                                                help="ImageFolder (default: the teacher run's data and split)."),
            out_dir: Optional[Path] = typer.Option(None, "--out-dir")) -> None:
    """Train a small student from a teacher's soft targets (KD), with the no-teacher control as the baseline."""
    from pydantic import ValidationError

    from edgecnn.api import distill as distill_api
    from edgecnn.models.options import ModelConfig

    try:
        args, hints = json_option(student_args, "--student-args"), hints_option(hint)
        try:
            model = ModelConfig(name=student, args=args if isinstance(args, dict) else {})
            options = DistillConfig(teacher=teacher, student=model, temperature=temperature, soft_weight=soft_weight,
                                    hard_weight=hard_weight, hints=hints, control=control, seed=seed,
                                    mixup=mixup)
            train = TrainConfig(epochs=epochs, lr=lr)
        except ValidationError as exc:
            raise options_error(exc) from None
        result = distill_api(teacher, model, data=data, options=options, train=train, out_dir=out_dir)
    except EdgeCNNError as exc:
        fail(exc)
    _print_distill(result)


def _print_distill(result) -> None:
    """The teacher, the distilled student and the control side by side, and the student's gain."""
    table = Table("model", "params", "MACs", "test accuracy")
    for label, r in (("teacher", result.teacher), ("student (distilled)", result.student), ("student (control)",
                                                                                            result.control)):
        if r:
            table.add_row(label, f"{r['params']:,}", f"{r['macs']:,}",
                          f"{100 * r['test_accuracy']:.2f}%" if r.get("test_accuracy") is not None else "–")
    console.print(table)
    gain = ""
    if result.gain_test_accuracy is not None:
        gain = f"; gain over the control {100 * result.gain_test_accuracy:+.2f} points"
    if result.paired_test:
        pt = result.paired_test
        gain += (f" ({pt['student_only_correct']} vs {pt['control_only_correct']} test images only one of them gets "
                 f"right, McNemar p = {pt['mcnemar_p']:.3g})")
    console.print(f"student: {100 * result.student['params_vs_teacher']:.1f}% of the teacher's params{gain} -> "
                  f"[bold]{result.checkpoint}[/]")


@app.command()
def bench(model: Path = typer.Argument(..., help="An ONNX file (any) or an edgecnn checkpoint."),
          backend: str = typer.Option("onnxruntime", "--backend",
                                      help="Comma-separated: torch, torch-cuda(-fp16, -bf16) for checkpoints; "
                                           "onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, openvino for ONNX; "
                                           "litert for .tflite. A runtime this machine lacks gives an n/a row."),
          batch: str = typer.Option("1,8,64", "--batch", help="Comma-separated batch sizes."),
          threads: Optional[int] = typer.Option(None, "--threads"),
          repeats: int = typer.Option(20, "--repeats"),
          warmup: int = typer.Option(5, "--warmup"),
          input_size: Optional[int] = typer.Option(None, "--input-size",
                                                   help="Needed for ONNX files with a dynamic image size."),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Write the measurements as JSON."),
          plot: Optional[Path] = typer.Option(None, "--plot", help="Write a throughput-vs-batch PNG.")) -> None:
    """Latency and throughput per batch size (median, p90) on a runtime."""
    from edgecnn.api import bench as bench_api

    try:
        backends = csv_list(backend, "--backend")
        results = [r for name in backends
                   for r in bench_api(model, name, csv_list(batch, "--batch", int), threads=threads,
                                      repeats=repeats, warmup=warmup, input_size=input_size)]
    except EdgeCNNError as exc:
        fail(exc)
    table = Table("backend", "batch", "threads", "median ms", "p90 ms", "images/s", title=str(model))
    for r in results:
        if r.unavailable:
            table.add_row(r.backend, str(r.batch), "-", f"n/a ({r.unavailable})", "", "")
            continue
        backend_name = f"{r.backend} ({r.layout})" if r.layout else r.backend
        table.add_row(backend_name, str(r.batch), str(r.threads), f"{r.median_ms:.3f}", f"{r.p90_ms:.3f}",
                      f"{r.images_per_s:.1f}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"model": str(model), "results": [r.to_dict() for r in results]}, indent=1))
    if plot:
        from edgecnn.report.plots import plot_throughput_curve

        curves = {name: [(r.batch, r.images_per_s) for r in results if r.backend == name and not r.unavailable]
                  for name in backends}
        plot_throughput_curve({k: v for k, v in curves.items() if v}, plot, str(model.name))


@app.command()
def estimate(model: Path = typer.Argument(..., help="Any ONNX / INT8 QDQ / QONNX file."),
             target: str = typer.Option(..., "--target", help="Catalog name (see `edgecnn targets`)."),
             fps: Optional[float] = typer.Option(None, "--fps", help="Dataflow: cheapest folding reaching this FPS."),
             budget: Optional[str] = typer.Option(None, "--budget",
                                                  help="Dataflow resource budget, e.g. lut=15000,bram=50,dsp=80."),
             threads: Optional[int] = typer.Option(None, "--threads", help="DPU runtime threads."),
             targets_file: Optional[Path] = typer.Option(None, "--targets-file",
                                                         help="Extra user-defined targets (YAML)."),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full estimate as JSON."),
             plot: Optional[Path] = typer.Option(None, "--plot",
                                                 help="Write a per-layer cycles bar chart (PNG)."),
             finn: Optional[bool] = typer.Option(None, "--finn/--no-finn",
                                                 help="Dataflow: also run FINN's own front end on the file (default: "
                                                      "when `edgecnn tools install finn` has been run).")) -> None:
    """Estimate FPS, latency, resources and energy of a model on a hardware target (no vendor tools)."""
    from edgecnn.hw import estimate as estimate_api
    from edgecnn.hw import plot_layer_cycles, render_estimate

    try:
        est = estimate_api(model, target, fps=fps, budget=budget, threads=threads, targets_file=targets_file,
                           finn=finn)
    except EdgeCNNError as exc:
        fail(exc)
    console.print(render_estimate(est))
    if json_out:
        json_out.write_text(json.dumps(est.to_dict(), indent=1))
    if plot:
        plot_layer_cycles(est, plot)


@app.command()
def targets(pattern: str = typer.Argument("*", help="fnmatch filter, e.g. 'zcu*'."),
            targets_file: Optional[Path] = typer.Option(None, "--targets-file",
                                                        help="Extra user-defined targets (YAML).")) -> None:
    """List the hardware target catalog."""
    from edgecnn.hw import list_targets

    try:
        found = list_targets(pattern, targets_file)
    except EdgeCNNError as exc:
        fail(exc)
    table = Table("target", "kind", "clock MHz", "power W", "description", title=f"{len(found)} targets")
    for t in found:
        table.add_row(t.name, t.kind, f"{t.clock_mhz:g}", f"{t.power.watts:g}", t.description)
    console.print(table)


@app.command()
def models(pattern: str = typer.Argument("*", help="fnmatch filter, e.g. 'resnet*'."),
           input_size: int = typer.Option(64, "--input-size", help="Square input size for params/MACs."),
           num_classes: int = typer.Option(10, "--num-classes")) -> None:
    """List the registered models with params and MACs at an input size."""
    from edgecnn.models import create_model, list_models, profile_model

    names = list_models(pattern)
    if not names:
        fail(EdgeCNNError(f"no model matches '{pattern}'; run `edgecnn models` to see them all"))
    table = Table("model", "params", f"MACs @{input_size}px", title=f"{len(names)} models")
    for name in names:
        try:
            prof = profile_model(create_model(name, num_classes=num_classes, input_size=input_size), input_size)
            table.add_row(name, f"{prof.params:,}", f"{prof.macs / 1e6:,.1f} M")
        except EdgeCNNError as exc:
            table.add_row(name, "–", f"[red]{exc}[/]")
    console.print(table)


@app.command()
def report(ctx: typer.Context, run_dir: Path = typer.Argument(..., help="A run directory (runs/NAME).")) -> None:
    """Re-render the HTML report of a run from its results."""
    from edgecnn.report.html import write_report

    ctx.meta[RUN_DIR] = run_dir
    try:
        path = write_report(run_dir)
    except EdgeCNNError as exc:
        fail(exc)
    console.print(f"report: [bold]{path}[/]")


def _print_results(rows: list[dict]) -> None:
    from edgecnn.columns import table_columns

    multi = bool(rows) and "model" in rows[0]
    # an n/a reason would make the column as wide as a sentence: the terminal shows n/a, the CSV and report the reason
    columns = table_columns(rows)
    table = Table(*(["model"] if multi else []), *(c.label for c in columns), title="results")
    for r in rows:
        cells = [c.cell(r) for c in columns]
        table.add_row(*([r["model"]] if multi else []), *("n/a" if v.startswith("n/a") else v for v in cells))
    if console.is_terminal:
        console.print(table)
        return
    wide = Console(width=console.measure(table, options=console.options.update(max_width=1000)).maximum)
    wide.print(table)


if __name__ == "__main__":
    app()
