"""The `edgecnn` command: a thin typer layer over the public API, printing with rich."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from edgecnn.errors import EdgeCNNError

app = typer.Typer(help="edgecnn: CNN classifiers from data to edge/FPGA artefacts, with measured costs.",
                  no_args_is_help=False, pretty_exceptions_enable=False, add_completion=False)
console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)])
    logging.getLogger("edgecnn").setLevel(logging.INFO)


def _fail(exc: EdgeCNNError) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context, verbose: bool = typer.Option(True, "--verbose/--quiet", help="Log stage progress.")) -> None:
    _setup_logging(verbose)
    if ctx.invoked_subcommand is None:  # `edgecnn` alone shows help
        console.print(ctx.get_help())


@app.command()
def run(config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the bundled quickstart)."),
        data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder to use instead of data.root."),
        name: Optional[str] = typer.Option(None, "--name", help="Run name (folder under output)."),
        output: Optional[Path] = typer.Option(None, "--output", help="Parent folder of run directories."),
        fresh: bool = typer.Option(False, "--fresh", help="Start a new run (the old folder is renamed, not deleted)."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted training.")) -> None:
    """Run the whole pipeline: data, train, evaluate, results table, HTML report."""
    from edgecnn.config import load_config
    from edgecnn.pipeline import run as run_pipeline

    try:
        overrides = {k: v for k, v in {"data.root": str(data) if data else None, "name": name,
                                        "output": str(output) if output else None}.items() if v is not None}
        cfg = load_config(config, overrides)
        outcome = run_pipeline(cfg, fresh=fresh, resume=resume)
    except EdgeCNNError as exc:
        _fail(exc)
    _print_results(outcome.results)
    if outcome.skipped_stages:
        console.print(f"[dim]skipped (inputs unchanged): {', '.join(outcome.skipped_stages)}[/]")
    console.print(f"run directory: [bold]{outcome.run_dir}[/]  report: [bold]{outcome.report_path}[/]")


@app.command()
def train(config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the bundled quickstart)."),
          data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder to use instead of data.root."),
          name: Optional[str] = typer.Option(None, "--name"),
          resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue an interrupted training.")) -> None:
    """Train the experiment's model only (same code path and run directory as `edgecnn run`)."""
    from edgecnn import train as train_api
    from edgecnn.config import load_config

    try:
        overrides = {k: v for k, v in {"data.root": str(data) if data else None, "name": name}.items() if v}
        fit = train_api(load_config(config, overrides), resume=resume)
    except EdgeCNNError as exc:
        _fail(exc)
    console.print(f"best val accuracy {fit['best_val_acc']:.4f} at epoch {fit['best_epoch']}; "
                  f"checkpoint [bold]{fit['best_checkpoint']}[/]")


@app.command("eval")
def evaluate(checkpoint: Path = typer.Argument(..., help="A checkpoint (.safetensors) written by edgecnn."),
             data: Path = typer.Option(..., "--data", help="ImageFolder to score; classes are matched by name."),
             as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON only."),
             batch_size: int = typer.Option(256, "--batch-size")) -> None:
    """Score a trained model on every image of an ImageFolder."""
    from edgecnn.api import evaluate_folder

    try:
        report = evaluate_folder(checkpoint, data, batch_size=batch_size)
    except EdgeCNNError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    console.print(f"accuracy [bold]{report['accuracy']:.4f}[/] on {report['n']} images "
                  f"({report['skipped_files']} unreadable file(s) skipped); macro F1 {report['macro_f1']:.4f}")
    table = Table("class", "precision", "recall", "F1", "support")
    for cls, m in report["per_class"].items():
        table.add_row(cls, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)
    cm = Table("true \\ pred", *[c[:6] for c in report["classes"]], title="confusion matrix")
    for cls, row in zip(report["classes"], report["confusion"]):
        cm.add_row(cls, *map(str, row))
    console.print(cm)


@app.command()
def models(pattern: str = typer.Argument("*", help="fnmatch filter, e.g. 'resnet*'."),
           input_size: int = typer.Option(64, "--input-size", help="Square input size for params/MACs."),
           num_classes: int = typer.Option(10, "--num-classes")) -> None:
    """List the registered models with params and MACs at an input size."""
    from edgecnn.models import create_model, list_models, profile_model

    names = list_models(pattern)
    if not names:
        _fail(EdgeCNNError(f"no model matches '{pattern}'; run `edgecnn models` to see them all"))
    table = Table("model", "params", f"MACs @{input_size}px", title=f"{len(names)} models")
    for name in names:
        try:
            prof = profile_model(create_model(name, num_classes=num_classes, input_size=input_size), input_size)
            table.add_row(name, f"{prof.params:,}", f"{prof.macs / 1e6:,.1f} M")
        except EdgeCNNError as exc:
            table.add_row(name, "–", f"[red]{exc}[/]")
    console.print(table)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory (runs/NAME).")) -> None:
    """Re-render the HTML report of a run from its results."""
    from edgecnn.report.html import write_report

    try:
        path = write_report(run_dir)
    except EdgeCNNError as exc:
        _fail(exc)
    console.print(f"report: [bold]{path}[/]")


def _print_results(rows: list[dict]) -> None:
    table = Table("variant", "accuracy", "macro F1", "params", "MACs", "size", "b1 ms", "b64 img/s", title="results")
    for r in rows:
        table.add_row(r["variant"], f"{100 * r['accuracy']:.2f}%", f"{r['macro_f1']:.4f}", f"{r['params']:,}",
                      f"{r['macs'] / 1e6:.1f} M", f"{r['size_bytes'] / 1024:.0f} KiB",
                      f"{r.get('latency_ms_torch_b1', float('nan')):.2f}",
                      f"{r.get('throughput_torch_b64', float('nan')):.0f}")
    console.print(table)


if __name__ == "__main__":
    app()
