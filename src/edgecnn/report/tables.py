"""HTML tables of a run's results (escaped, no external assets)."""
from __future__ import annotations

import html
from typing import Any

#: Columns shown in the report's main table, with their headings and formats.
REPORT_COLUMNS: list[tuple[str, str, str]] = [
    ("variant", "variant", "{}"),
    ("precision", "precision", "{}"),
    ("accuracy", "accuracy %", "pct"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("macs", "MACs (M)", "mega"),
    ("size_bytes", "size (KiB)", "kib"),
    ("latency_ms_torch_b1", "torch b1 latency (ms)", "{:.3f}"),
    ("throughput_torch_b64", "torch b64 (img/s)", "{:.0f}"),
]


def _fmt(value: Any, fmt: str) -> str:
    if value in (None, ""):
        return "–"
    try:
        if fmt == "pct":
            return f"{100 * float(value):.2f}"
        if fmt == "mega":
            return f"{float(value) / 1e6:.1f}"
        if fmt == "kib":
            return f"{float(value) / 1024:.1f}"
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def results_table(rows: list[dict[str, Any]]) -> str:
    known = {c for c, _, _ in REPORT_COLUMNS}
    extra = [c for c in (rows[0] if rows else {}) if c not in known and isinstance(rows[0].get(c), (int, float))
             and not c.startswith(("latency_p90", "torch_threads", "test_images"))]
    columns = REPORT_COLUMNS + [(c, c, "{:.4g}") for c in extra]
    return html_table([h for _, h, _ in columns], [[_fmt(r.get(c), f) for c, _, f in columns] for r in rows])


def per_class_table(report: dict[str, Any]) -> str:
    rows = [[c, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(s)]
            for c, p, r, f, s in zip(report["classes"], report["precision"], report["recall"], report["f1"],
                                     report["support"])]
    return html_table(["class", "precision", "recall", "F1", "support"], rows)
