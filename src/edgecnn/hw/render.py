"""Human views of an Estimate: a rich table for the terminal and a per-layer cycles bar chart (PNG)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from edgecnn.hw.estimators.base import Estimate


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def render_estimate(est: Estimate, max_rows: int = 60):
    """A rich Table: one row per layer, then the totals in the caption (bottleneck, FPS, power, unmapped)."""
    from rich.table import Table

    table = Table(title=f"{est.model} on {est.target} ({est.kind}, {est.clock_mhz:g} MHz)", show_lines=False)
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("layer", "left"), ("op", "left"), ("in", "left"), ("out", "left"), ("MACs", "right"), ("W/A bits", "right"),
        ("cycles", "right"), ("ms", "right"), ("parallelism", "left"), ("resources", "left"))
    for col, just in columns:
        table.add_column(col, justify=just, overflow="fold")
    for row in est.layers[:max_rows]:
        mark = "[bold red]" if row.name == est.bottleneck else ""
        par = ", ".join(f"{k}={v}" for k, v in row.parallelism.items())
        res = ", ".join(f"{k}={_fmt(v)}" for k, v in row.resources.items() if v)
        table.add_row(f"{mark}{row.name}", row.op, "x".join(map(str, row.in_shape or [])) or "-",
                      "x".join(map(str, row.out_shape or [])) or "-", _fmt(row.macs), f"{row.w_bits}/{row.a_bits}",
                      _fmt(row.cycles), _fmt(row.time_ms), par, res)
    if len(est.layers) > max_rows:
        table.add_row(f"... {len(est.layers) - max_rows} more", *[""] * 9)
    used = ", ".join(f"{k} {_fmt(v)}/{_fmt(est.resources_available.get(k))}" for k, v in est.resources_used.items())
    lines = [f"bottleneck {est.bottleneck} | {est.fps:,.1f} FPS | latency {est.latency_ms:.3g} ms | "
             f"{est.power_w:g} W -> {est.energy_mj_per_image:.3g} mJ/image",
             f"resources used/available: {used or '-'}", f"power figure: {est.power_source}"]
    for u in est.unmapped:
        lines.append(f"not on {est.target}: {u.name} ({u.op}) — {u.why}; {u.cost}")
    lines += [f"note: {n}" for n in est.notes]
    table.caption = "\n".join(lines)
    table.caption_justify = "left"
    return table


def plot_layer_cycles(est: Estimate, path: str | Path, max_layers: int = 80) -> Path:
    """Bar chart of cycles (or ms where a target has no cycle count) per layer, bottleneck in red; PNG."""
    from edgecnn.report.plots import plt, save_figure  # the Agg backend, and one way to write a figure

    rows = est.layers[:max_layers]
    use_cycles = any(r.cycles for r in rows)
    values = [r.cycles if use_cycles else r.time_ms for r in rows]
    colors = ["#c0392b" if r.name == est.bottleneck else "#2e86c1" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(rows) + 2), 4.2))
    ax.bar(range(len(rows)), values, color=colors)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name[-24:] for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("cycles per image" if use_cycles else "ms per image")
    ax.set_title(f"{est.model} on {est.target}: {est.fps:,.1f} FPS, bottleneck {est.bottleneck[-30:]}", fontsize=9)
    return save_figure(fig, path, dpi=120)
