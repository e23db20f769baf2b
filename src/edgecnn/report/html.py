"""The run report: report/index.html with tables and plots, readable offline (images copied alongside)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from edgecnn import columns as col
from edgecnn.columns import Column, energy_columns, table_columns
from edgecnn.errors import EdgeCNNError
from edgecnn.records import DistillResult, FitResult, LowbitSummary, PruneResult
from edgecnn.report.plots import plot_accuracy_vs
from edgecnn.report.summary import best_per_target, best_variant, hardware_rows, pareto_front, per_class_deltas
from edgecnn.report.tables import html_table, results_table, summary_table
from edgecnn.results import read_results
from edgecnn.stages import stage_outputs


def _copy(src: Path, report_dir: Path, name: str) -> str | None:
    if not src.exists():
        return None
    shutil.copyfile(src, report_dir / name)
    return name


def _read_json(path: Path) -> Any:
    """A results file of the run (a variant's metrics, the low-bit summary); unreadable JSON is a one-line error."""
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        where = f" (line {exc.lineno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise EdgeCNNError(f"{path} is not readable JSON{where}, e.g. cut short by a full disk or an interrupted run; "
                           "rerun the same `edgecnn run` to write it again (finished stages are reused)") from None


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report/index.html`` from the run's results, training history and metrics."""
    run_dir = Path(run_dir)
    rows = read_results(run_dir)
    if not rows:
        raise EdgeCNNError(f"no results in {run_dir}; run `edgecnn run CONFIG` first (results.json is missing)")
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    data = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").exists() else {}
    fit_record = stage_outputs(run_dir, "train")
    fit = FitResult.from_dict(fit_record) if fit_record else None
    reports = {}
    for row in rows:
        metrics_path = run_dir / "variants" / row["variant_id"] / "metrics.json"
        report = _read_json(metrics_path).get("report") if metrics_path.exists() else None
        if report:
            reports[row["variant"]] = report
    reference = next((r for r in rows if r.get("precision") == "fp32"), rows[0])
    confusion = _copy(run_dir / "variants" / reference["variant_id"] / "confusion.png", report_dir, "confusion.png")
    per_class = ""
    if reference["variant"] in reports:
        per_class = html_table(*per_class_deltas(reports, reference["variant"]))
    fronts = {"latency": pareto_front(rows, col.latency("onnxruntime", 1)), "size": pareto_front(rows, "size_bytes")}
    charts = [p.name for p in (
        plot_accuracy_vs(rows, col.latency("onnxruntime", 1), report_dir / "accuracy-vs-latency.png",
                         "ONNX Runtime batch-1 latency (ms)", fronts["latency"]),
        plot_accuracy_vs(rows, "size_bytes", report_dir / "accuracy-vs-size.png", "size on disk (KiB)", fronts["size"],
                         scale=1 / 1024, log_x=True),
    ) if p is not None]
    targets = col.targets_in(rows)
    hw_charts = [p.name for p in (
        plot_accuracy_vs(rows, col.hw("latency_ms", t), report_dir / f"accuracy-vs-latency-{t}.png",
                         f"estimated latency on {t} (ms)", pareto_front(rows, col.hw("latency_ms", t)), log_x=True)
        for t in targets) if p is not None]
    hw_headers, hw_table = hardware_rows(rows)
    counts = data.get("counts", {})
    classes = list(next(iter(counts.values()), {}).keys())
    counts_table = html_table(["class", *counts.keys()], [[c, *(str(counts[s][c]) for s in counts)] for c in classes])
    page = _environment().get_template("index.html.j2").render(
        name=config.get("name", run_dir.name), generated=time.strftime("%Y-%m-%d %H:%M"), run_dir=str(run_dir),
        config=config, config_yaml=yaml.safe_dump(config, sort_keys=False), data=data, fit=fit,
        best=best_variant(rows), per_target=best_per_target(rows), summary_table=Markup(summary_table(rows)),
        hw_charts=hw_charts, hardware_table=Markup(html_table(hw_headers, hw_table)) if hw_table else "",
        targets=list(targets),
        results_table=Markup(results_table(rows)),
        charts=charts, confusion=confusion, reference=reference["variant"], reference_row=reference,
        per_class=Markup(per_class),
        counts_table=Markup(counts_table),
        curves=_copy(run_dir / "train" / "curves.png", report_dir, "curves.png"),
        test_images=rows[0].get("test_images", "?"),
        compression=Markup(compression_section(run_dir, report_dir)),
        search_page="../search/report.html" if (run_dir / "search" / "report.html").exists() else None,
    )
    path = report_dir / "index.html"
    path.write_text(page)
    return path


def _layer_sparsity_cells(r: dict[str, Any]) -> list[str]:
    return [r["layer"], f"{r['weights']:,}", f"{r['zeros']:,}", f"{100 * r['sparsity']:.2f}"]


def _layer_channel_cells(r: dict[str, Any]) -> list[str]:
    return [r["layer"], r["out_before"], r["out_after"], f"{r['params_before']:,}", f"{r['params_after']:,}"]


def _environment() -> Environment:
    """The report's Jinja environment (templates beside this module, autoescaped)."""
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(
        enabled_extensions=("html", "j2"), default_for_string=True))
    env.filters.update(layer_sparsity_cells=_layer_sparsity_cells, layer_channel_cells=_layer_channel_cells)
    return env


def compression_section(run_dir: Path, report_dir: Path) -> str:
    """HTML of the distill and prune stages (their typed records) and of the low-bit sweep."""
    env, parts = _environment(), []
    if (d := stage_outputs(run_dir, "distill")):
        parts.append(env.get_template("_distill.html.j2").render(d=DistillResult.from_dict(d)))
    if (p := stage_outputs(run_dir, "prune")):
        sensitivity = _copy(run_dir / "prune" / "sensitivity.png", report_dir, "sensitivity.png")
        parts.append(env.get_template("_prune.html.j2").render(p=PruneResult.from_dict(p), sensitivity=sensitivity))
    parts.append(lowbit_section(run_dir, report_dir))
    return "".join(parts)


def _parity_cell(row: dict[str, Any]) -> str:
    """QONNX-vs-PyTorch max |logit diff|, with PyTorch's own batch-1-vs-batched difference (its float32 noise floor)."""
    if row.get("qonnx_max_abs_diff") is None:
        return "–"
    own = row.get("torch_self_max_abs_diff")
    return f"{row['qonnx_max_abs_diff']:.1e}" + (f" ({own:.1e})" if own is not None else "")


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}" if isinstance(v, (int, float)) else "–"


def _number(v: Any) -> str:
    """A count with thousands separators; an estimate that is text (``n/a (why)``) as it is."""
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if v else "–"


def lowbit_section(run_dir: Path, report_dir: Path) -> str:
    """HTML of the low-bit sweep: accuracy, packed size, sparsity, QONNX parity and dataflow FPS/LUT per variant,
    the accuracy-vs-FPS plot and the headline ratio."""
    summary_path = run_dir / "lowbit" / "summary.json"
    if not summary_path.exists():
        return ""
    summary = LowbitSummary.from_dict(_read_json(summary_path))
    rows = [r for r in read_results(run_dir) if str(r.get("recipe", "")).endswith("lowbit-qat")]
    headline = summary.headline
    targets = list(headline.get("boards", {})) or sorted(col.targets_in(rows))
    headers = ["variant", "accuracy %", "packed weights (KiB)", "zero weights %",
               "qonnx vs torch max |diff| (torch vs itself)", *[f"FPS {t}" for t in targets],
               *[f"LUT {t}" for t in targets]]
    table = [[r["precision"], _pct(r["accuracy"]), f"{r['packed_weight_bits'] / 8192:.1f}",
              _pct(r.get("weight_sparsity_total")), _parity_cell(r),
              *[_number(r.get(col.fps(t))) for t in targets], *[_number(r.get(col.hw("lut", t))) for t in targets]]
             for r in rows]
    plot = _copy(run_dir / "lowbit" / "accuracy-vs-fps.png", report_dir, "lowbit-accuracy-vs-fps.png")
    return _environment().get_template("_lowbit.html.j2").render(
        schedule=summary.schedule, headers=headers, rows=table, headline=headline, plot=plot)


def write_summary_report(parent: str | Path, sub_runs: list[Path]) -> Path:
    """The report of a multi-model experiment: every model x precision row, accuracy and size per precision, links
    to the sub-runs' reports."""
    from edgecnn.report.plots import plot_grouped_bars

    parent = Path(parent)
    rows = read_results(parent)
    report_dir = parent / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    figures = [p.name for p in (
        plot_grouped_bars(rows, "accuracy", report_dir / "accuracy-per-precision.png", "test accuracy (%)", scale=100),
        plot_grouped_bars(rows, "size_bytes", report_dir / "size-per-precision.png", "size on disk (MiB)",
                          scale=1 / 2**20, log_scale=True),
    ) if p is not None]
    columns = [Column("model", "model"), Column("precision", "precision"),
               *(c for c in table_columns(rows) if c.key != "variant"), *energy_columns(rows),
               Column(col.speedup("torch_fp32", 1), "speedup vs torch fp32 b1", "{:.2f}")]
    table = html_table([c.label for c in columns], [[c.cell(r) for c in columns] for r in rows])
    page = _environment().get_template("summary.html.j2").render(
        name=parent.name, table=Markup(table), figures=figures, sub_runs=[d.name for d in sub_runs])
    path = report_dir / "index.html"
    path.write_text(page)
    return path
