"""HTML tables of a run's results (escaped, no external assets)."""
from __future__ import annotations

import html
from typing import Any

from edgecnn.columns import SUMMARY_COLUMNS, Column, table_columns


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


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The compact table: the summary columns and the estimated FPS per target, with human headings and units."""
    columns = table_columns(rows)
    cells = [[c.cell(r) for c in columns] for r in rows]
    # an estimate a target cannot make reads n/a in the table; the reasons follow it once each
    reasons = dict.fromkeys(v[5:-1] for row in cells for v in row if v.startswith("n/a ("))
    shown = [["n/a" if v.startswith("n/a") else v for v in row] for row in cells]
    table = html_table([c.label for c in columns], shown)
    notes = "; ".join(html.escape(r) for r in reasons)
    return table + (f'<p class="muted">n/a: {notes}.</p>' if notes else "")
