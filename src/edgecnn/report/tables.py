"""HTML tables of a run's results (escaped, no external assets)."""
from __future__ import annotations

import html
from typing import Any

from edgecnn.results import SUMMARY_COLUMNS, Column


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def results_table(rows: list[dict[str, Any]]) -> str:
    """The summary columns, then every other numeric column of the rows."""
    known = {c.key for c in SUMMARY_COLUMNS}
    extra = [c for c in (rows[0] if rows else {}) if c not in known and isinstance(rows[0].get(c), (int, float))
             and not c.startswith(("latency_p90", "torch_threads", "test_images"))]
    columns = [*SUMMARY_COLUMNS, *(Column(c, c, "{:.4g}") for c in extra)]
    return html_table([c.label for c in columns], [[c.cell(r) for c in columns] for r in rows])


def per_class_table(report: dict[str, Any]) -> str:
    rows = [[c, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(s)]
            for c, p, r, f, s in zip(report["classes"], report["precision"], report["recall"], report["f1"],
                                     report["support"])]
    return html_table(["class", "precision", "recall", "F1", "support"], rows)
