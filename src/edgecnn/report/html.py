"""The run report: report/index.html with tables and plots, readable offline (images copied alongside)."""
from __future__ import annotations

import json
import shutil
import time
from html import escape as html_escape
from pathlib import Path

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from edgecnn.errors import EdgeCNNError
from edgecnn.report.plots import plot_metric_bars
from edgecnn.report.tables import html_table, per_class_table, results_table
from edgecnn.results import read_results


def _copy(src: Path, report_dir: Path, name: str) -> str | None:
    if not src.exists():
        return None
    shutil.copyfile(src, report_dir / name)
    return name


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
    fit_record = run_dir / "train" / "stage.json"
    fit = json.loads(fit_record.read_text())["outputs"] if fit_record.exists() else None
    variants = []
    for row in rows:
        vdir = run_dir / "variants" / row["variant_id"]
        metrics_path = vdir / "metrics.json"
        report = json.loads(metrics_path.read_text())["report"] if metrics_path.exists() else None
        variants.append({"name": row["variant"],
                         "per_class_table": Markup(per_class_table(report)) if report else "",
                         "confusion": _copy(vdir / "confusion.png", report_dir, f"confusion-{row['variant']}.png")})
    bars = [p.name for p in (
        plot_metric_bars(rows, "accuracy", report_dir / "accuracy.png", "test accuracy (%)", 100),
        plot_metric_bars(rows, "size_bytes", report_dir / "size.png", "size on disk (KiB)", 1 / 1024),
    ) if p is not None] if len(rows) > 1 else []
    counts = data.get("counts", {})
    classes = list(next(iter(counts.values()), {}).keys())
    counts_table = html_table(["class", *counts.keys()], [[c, *(str(counts[s][c]) for s in counts)] for c in classes])
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
    page = env.get_template("index.html.j2").render(
        name=config.get("name", run_dir.name), generated=time.strftime("%Y-%m-%d %H:%M"), run_dir=str(run_dir),
        config=config, config_yaml=yaml.safe_dump(config, sort_keys=False), data=data, fit=fit,
        results_table=Markup(results_table(rows)), bars=bars, variants=variants, counts_table=Markup(counts_table),
        curves=_copy(run_dir / "train" / "curves.png", report_dir, "curves.png"),
        test_images=rows[0].get("test_images", "?"),
    )
    path = report_dir / "index.html"
    path.write_text(page)
    return path


def write_summary_report(parent: str | Path, sub_runs: list[Path]) -> Path:
    """The report of a multi-model experiment: every model x precision row, Figures 6.2/6.3, links to sub-runs."""
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
    headers = ["model", "precision", "accuracy %", "agreement w/ fp32 %", "size (KiB)", "ORT b1 ms", "speedup vs torch fp32 b1"]
    table_rows = [[r["model"], r["precision"], f"{100 * r['accuracy']:.2f}",
                   f"{100 * r['agreement_with_fp32']:.2f}" if r.get("agreement_with_fp32") is not None else "–",
                   f"{r['size_bytes'] / 1024:.0f}", f"{r['latency_ms_onnxruntime_b1']:.3f}" if r.get("latency_ms_onnxruntime_b1") else "–",
                   f"{r['speedup_vs_torch_fp32_b1']:.2f}" if r.get("speedup_vs_torch_fp32_b1") else "–"] for r in rows]
    links = "".join(f'<li><a href="../{d.name}/report/index.html">{html_escape(d.name)}</a></li>' for d in sub_runs)
    imgs = "".join(f'<figure><img src="{f}" alt="{f}"></figure>' for f in figures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgecnn summary — {html_escape(parent.name)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
            "td:first-child{text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>edgecnn summary: {html_escape(parent.name)}</h1>"
            "<p>Accuracy of every model at every precision on the same held-out test split with the same "
            "pre-processing. INT8 is quantized with per-channel weights and calibrated activations (PTQ) or trained "
            "with fake quantization matching the deployed scheme (QAT), and scored as the exported ONNX file in ONNX "
            "Runtime. Per-tensor weight scales and uncalibrated ranges are what made the seed report lose 15-30 points "
            "on ResNet-18 and MobileNetV2 (depthwise filters have very different ranges per channel).</p>"
            f"{html_table(headers, table_rows)}<div>{imgs}</div><h2>Per-model reports</h2><ul>{links}</ul></body></html>")
    path = report_dir / "index.html"
    path.write_text(page)
    return path
