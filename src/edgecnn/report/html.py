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
from edgecnn.report.plots import plot_accuracy_vs
from edgecnn.report.summary import best_per_target, best_variant, hardware_rows, pareto_front, per_class_deltas
from edgecnn.report.tables import html_table, results_table, summary_table
from edgecnn.results import Column, energy_columns, read_results, table_columns
from edgecnn.stages import stage_outputs


def _copy(src: Path, report_dir: Path, name: str) -> str | None:
    if not src.exists():
        return None
    shutil.copyfile(src, report_dir / name)
    return name


def _read_json(path: Path):
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
    fit = stage_outputs(run_dir, "train")
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
    fronts = {"latency": pareto_front(rows, "latency_ms_onnxruntime_b1"), "size": pareto_front(rows, "size_bytes")}
    charts = [p.name for p in (
        plot_accuracy_vs(rows, "latency_ms_onnxruntime_b1", report_dir / "accuracy-vs-latency.png",
                         "ONNX Runtime batch-1 latency (ms)", fronts["latency"]),
        plot_accuracy_vs(rows, "size_bytes", report_dir / "accuracy-vs-size.png", "size on disk (KiB)", fronts["size"],
                         scale=1 / 1024, log_x=True),
    ) if p is not None]
    targets = dict.fromkeys(k[4:] for r in rows for k in r if k.startswith("fps_"))
    hw_charts = [p.name for p in (
        plot_accuracy_vs(rows, f"latency_ms_{t}", report_dir / f"accuracy-vs-latency-{t}.png",
                         f"estimated latency on {t} (ms)", pareto_front(rows, f"latency_ms_{t}"), log_x=True)
        for t in targets) if p is not None]
    hw_headers, hw_table = hardware_rows(rows)
    counts = data.get("counts", {})
    classes = list(next(iter(counts.values()), {}).keys())
    counts_table = html_table(["class", *counts.keys()], [[c, *(str(counts[s][c]) for s in counts)] for c in classes])
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
    page = env.get_template("index.html.j2").render(
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


def _pct(v) -> str:
    return f"{100 * v:.2f}" if isinstance(v, (int, float)) else "–"


def _paired_text(paired: dict | None) -> str:
    """' (n images only the student gets right, m only the control; McNemar p = ...)' or ''."""
    if not paired:
        return ""
    return (f" ({paired['student_only_correct']} test images only the student gets right, "
            f"{paired['control_only_correct']} only the control; exact McNemar p = {paired['mcnemar_p']:.3g})")


def compression_section(run_dir: Path, report_dir: Path) -> str:
    """HTML of the distill and prune stages: teacher/student/control and before/after tables, per-layer
    channels or sparsity, the sensitivity plot."""
    parts = []
    d = stage_outputs(run_dir, "distill")
    if d:
        rows = [[name, f"{r['params']:,}", f"{r['macs'] / 1e6:.1f}", f"{r['size_bytes'] / 1024:.0f}",
                 _pct(r.get("val_accuracy")), _pct(r.get("test_accuracy"))]
                for name, r in (("teacher", d["teacher"]), ("student (distilled)", d["student"]),
                                ("student without teacher (control)", d["control"])) if r]
        o = d["options"]
        gain = d.get("gain_test_accuracy")
        parts.append("<h2>Knowledge distillation</h2>"
                     f"<p>Loss: {o['hard_weight']} x CE + {o['soft_weight']} x T² x KL at T = {o['temperature']}"
                     f"{' + hints' if o.get('hints') else ''}; teacher logits "
                     f"{'cached' if d['teacher_cached'] else 'computed per batch'}. "
                     f"Student: {100 * d['student']['params_vs_teacher']:.1f}% of the teacher's parameters"
                     + (f"; gain of distillation over the control: {100 * gain:+.2f} points (test)"
                        if gain is not None else "")
                     + _paired_text(d.get("paired_test")) + ".</p>"
                     + html_table(["model", "params", "MACs (M)", "weights (KiB)", "val acc %", "test acc %"], rows))
    p = stage_outputs(run_dir, "prune")
    if p:
        b, a = p["before"], p["after"]
        keys = [("params", "params", "{:,}"), ("macs", "MACs", "{:,}"), ("onnx_bytes", "ONNX bytes", "{:,}"),
                ("latency_ms_onnxruntime_b1", "ORT b1 latency (ms)", "{:.3f}"), ("test_accuracy", "test acc %", "pct"),
                ("val_accuracy", "val acc %", "pct")]
        def fmt(v, f):
            return ("–" if v is None else _pct(v) if f == "pct" else f.format(v))
        rows = [[label, fmt(b.get(k), f), fmt(a.get(k), f)] for k, label, f in keys if k in b or k in a]
        text = (f"<h2>Pruning ({p['method']})</h2><p>After pruning: {100 * a['params_ratio']:.1f}% of the parameters, "
                f"{100 * a['macs_ratio']:.1f}% of the MACs"
                + (f", {a['speedup_onnxruntime_b1']:.2f}x faster at batch 1 in ONNX Runtime (fp32, measured "
                   f"alternately in one run)"
                   if a.get("speedup_onnxruntime_b1") else "")
                + (f", {100 * a['sparsity']:.1f}% of the Conv/Linear weights zero" if "sparsity" in a else "")
                + ".</p>")
        text += html_table(["", "before", "after"], rows)
        if p["method"] == "unstructured":
            text += html_table(["layer", "weights", "zeros", "sparsity %"],
                               [[r["layer"], f"{r['weights']:,}", f"{r['zeros']:,}",
                                 _pct(r["sparsity"])] for r in p["layers"]])
        else:
            text += html_table(["layer", "out channels before", "after", "params before", "after"],
                               [[r["layer"], r["out_before"], r["out_after"], f"{r['params_before']:,}",
                                 f"{r['params_after']:,}"] for r in p["layers"]])
        if (img := _copy(run_dir / "prune" / "sensitivity.png", report_dir, "sensitivity.png")):
            text += f'<figure><img src="{img}" alt="pruning sensitivity"></figure>'
        parts.append(text)
    parts.append(lowbit_section(run_dir, report_dir))
    return "".join(parts)


def _parity_cell(row: dict) -> str:
    """QONNX-vs-PyTorch max |logit diff|, with PyTorch's own batch-1-vs-batched difference (its float32 noise floor)."""
    if row.get("qonnx_max_abs_diff") is None:
        return "–"
    own = row.get("torch_self_max_abs_diff")
    return f"{row['qonnx_max_abs_diff']:.1e}" + (f" ({own:.1e})" if own is not None else "")


def lowbit_section(run_dir: Path, report_dir: Path) -> str:
    """HTML of the low-bit sweep: accuracy, packed size, sparsity, QONNX parity and dataflow FPS/LUT per variant,
    the accuracy-vs-FPS plot and the headline ratio."""
    summary_path = run_dir / "lowbit" / "summary.json"
    if not summary_path.exists():
        return ""
    summary = _read_json(summary_path)
    rows = [r for r in read_results(run_dir) if str(r.get("recipe", "")).endswith("lowbit-qat")]
    h = summary["headline"]
    targets = list(h.get("boards", {})) or sorted({k[4:] for r in rows for k in r if k.startswith("fps_")})
    headers = ["variant", "accuracy %", "packed weights (KiB)", "zero weights %", "qonnx vs torch max |diff| (torch "
                                                                                  "vs itself)",
               *[f"FPS {t}" for t in targets], *[f"LUT {t}" for t in targets]]
    table = [[r["precision"], _pct(r["accuracy"]), f"{r['packed_weight_bits'] / 8192:.1f}",
              _pct(r.get("weight_sparsity_total")),
              _parity_cell(r),
              *[f"{r.get('fps_' + t):,.0f}" if r.get("fps_" + t) else "–" for t in targets],
              *[f"{r.get('lut_' + t):,.0f}" if r.get("lut_" + t) else "–" for t in targets]] for r in rows]
    text = (f"<h2>Low-bit QAT sweep ({summary['schedule']} schedule)</h2><p>Brevitas QAT from the float model, "
            "exported to QONNX and checked with qonnx's executor; FPS and resources are FINN-style dataflow estimates "
            "with the folding chosen under each board's budget.</p>" + html_table(headers, table))
    if h.get("boards"):
        ratios = ", ".join(f"{t}: {b['ratio']:.2f}x ({b['fps_chosen']:,.0f} vs {b['fps_reference']:,.0f} FPS"
                           + ("; over the board's budget even fully folded" if "fits" in b else "") + ")"
                           for t, b in h["boards"].items())
        text += (f"<p><b>Headline</b>: {h['chosen']} is the lowest precision within {h['tolerance_points']:.0f} "
                 f"point of {h['reference']} ({_pct(h['chosen_accuracy'])}% vs {_pct(h['reference_accuracy'])}%); "
                 f"its FPS over {h['reference']}'s on the same board: {ratios}.</p>")
    elif h.get("note"):
        text += f"<p>{html_escape(h['note'])}</p>"
    if (img := _copy(run_dir / "lowbit" / "accuracy-vs-fps.png", report_dir, "lowbit-accuracy-vs-fps.png")):
        text += f'<figure><img src="{img}" alt="accuracy vs FPS"></figure>'
    return text


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
               Column("speedup_vs_torch_fp32_b1", "speedup vs torch fp32 b1", "{:.2f}")]
    table = html_table([c.label for c in columns], [[c.cell(r) for c in columns] for r in rows])
    links = "".join(f'<li><a href="../{d.name}/report/index.html">{html_escape(d.name)}</a></li>' for d in sub_runs)
    imgs = "".join(f'<figure><img src="{f}" alt="{f}"></figure>' for f in figures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgecnn summary — "
            f"{html_escape(parent.name)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
            "td:first-child{text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>edgecnn summary: {html_escape(parent.name)}</h1>"
            "<p>Accuracy of every model at every precision on the same held-out test split with the same "
            "pre-processing, with the estimated FPS and energy per image of each deployable file on every target "
            "of the experiment (n/a: the target cannot run that precision). Every model shares the "
            "test split. INT8 is quantized with per-channel weights and calibrated activations (PTQ) or trained "
            "with fake quantization matching the deployed scheme (QAT), and scored as the exported ONNX file in ONNX "
            "Runtime. Per-channel weight scales matter most for depthwise filters (MobileNetV2), whose channels have "
            "very different ranges; per-tensor scales and uncalibrated ranges can cost such models 15-30 points.</p>"
            f"{table}<div>{imgs}</div><h2>Per-model "
            f"reports</h2><ul>{links}</ul></body></html>")
    path = report_dir / "index.html"
    path.write_text(page)
    return path
