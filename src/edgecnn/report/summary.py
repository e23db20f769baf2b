"""What a report leads with: the best deployable variant, the Pareto fronts, and per-class changes vs fp32."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from edgecnn import columns as col

T = TypeVar("T")

#: Latency columns in order of preference: the deployable file's runtime first.
LATENCY_RUNTIMES = ("onnxruntime", "torch")


def latency_of(row: dict[str, Any]) -> tuple[float | None, str | None]:
    """The batch-1 latency of a variant (ms) and the runtime it was measured on."""
    for runtime in LATENCY_RUNTIMES:
        value = row.get(col.latency(runtime, 1))
        if isinstance(value, (int, float)) and value > 0:
            return float(value), runtime
    return None, None


@dataclass
class Best:
    """The variant a user would deploy: the fastest whose accuracy is within ``tolerance`` of fp32's."""

    row: dict[str, Any]
    latency_ms: float | None
    runtime: str | None
    speedup: float | None  # fp32's latency on the same runtime / this variant's
    size_ratio: float | None
    accuracy_drop_points: float
    tolerance_points: float


def best_variant(rows: list[dict[str, Any]], tolerance: float = 0.01) -> Best | None:
    """The fastest variant (batch-1 latency, ORT before torch) within ``tolerance`` of the fp32 reference's
    accuracy; the smallest file breaks ties and stands in when nothing was timed. None without rows."""
    if not rows:
        return None
    reference = next((r for r in rows if r.get("precision") == "fp32"), rows[0])
    ref_acc = float(reference.get("accuracy") or 0)
    eligible = [r for r in rows if isinstance(r.get("accuracy"), (int, float)) and r["accuracy"] >= ref_acc - tolerance]

    def key(r: dict[str, Any]) -> tuple[float, float]:
        latency, _ = latency_of(r)
        return (latency if latency is not None else float("inf"), r.get("size_bytes") or float("inf"))

    row = min(eligible or [reference], key=key)
    latency, runtime = latency_of(row)
    ref_latency = reference.get(col.latency(runtime, 1)) if runtime else None
    speedup = round(ref_latency / latency, 2) if latency and isinstance(ref_latency, (int, float)) else None
    size_ratio = (round(row["size_bytes"] / reference["size_bytes"], 3)
                  if row.get("size_bytes") and reference.get("size_bytes") else None)
    return Best(row, latency, runtime, speedup, size_ratio, round(100 * (ref_acc - float(row["accuracy"])), 2),
                100 * tolerance)


def best_per_target(rows: list[dict[str, Any]], tolerance: float = 0.01) -> list[tuple[str, str, float]]:
    """(target, variant, estimated FPS) of the fastest variant within ``tolerance`` of fp32's accuracy on each
    hardware target the rows were estimated on (targets no such variant runs on are left out)."""
    reference = next((r for r in rows if r.get("precision") == "fp32"), rows[0] if rows else {})
    floor = float(reference.get("accuracy") or 0) - tolerance
    eligible = [r for r in rows if isinstance(r.get("accuracy"), (int, float)) and r["accuracy"] >= floor]
    out = []
    for key in dict.fromkeys(k for r in rows for k in r if k.startswith("fps_")):
        timed = [r for r in eligible if isinstance(r.get(key), (int, float))]
        if timed:
            top = max(timed, key=lambda r: r[key])
            out.append((key[4:], top["variant"], float(top[key])))
    return out


def front(items: Iterable[T], cost: Callable[[T], float], accuracy: Callable[[T], float], *,
          higher_cost_is_better: bool = False) -> list[T]:
    """The items no other item beats on both accuracy (higher is better) and ``cost``, best cost first. Items equal
    on both stay together (neither beats the other). The one Pareto rule of the results table, the low-bit sweep
    and the search page."""
    sign = -1.0 if higher_cost_is_better else 1.0
    out: list[T] = []
    best, last = -math.inf, None
    for item in sorted(items, key=lambda i: (sign * cost(i), -accuracy(i))):
        acc, c = accuracy(item), cost(item)
        if acc > best or (out and acc == best and c == last):
            out.append(item)
            best, last = acc, c
    return out


def pareto_front(rows: list[dict[str, Any]], cost: str) -> list[str]:
    """Variants no other variant beats on both accuracy (higher) and ``cost`` (lower), cheapest first."""
    measured = [r for r in rows
                if isinstance(r.get(cost), (int, float)) and isinstance(r.get("accuracy"), (int, float))]
    return [r["variant"] for r in front(measured, lambda r: float(r[cost]), lambda r: float(r["accuracy"]))]


def per_class_deltas(reports: dict[str, dict[str, Any]], reference: str) -> tuple[list[str], list[list[str]]]:
    """F1 per class of ``reference`` and the change of every other variant (points): (headers, rows)."""
    ref = reports[reference]
    others = [name for name in reports if name != reference]
    headers = ["class", f"{reference} F1", *(f"{name} ΔF1" for name in others)]
    rows = []
    for i, cls in enumerate(ref["classes"]):
        base = ref["f1"][i]
        rows.append([cls, f"{base:.3f}", *(f"{100 * (reports[n]['f1'][i] - base):+.1f}" for n in others)])
    return headers, rows


def hardware_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per (variant, target) the variant runs on: estimated FPS, latency, energy, FPGA resources and the
    layers left to the host CPU. (headers, rows) for the report."""
    targets = col.targets_in(rows)
    headers = ["variant", "target", "FPS (est.)", "latency ms", "energy mJ/image", "LUT", "BRAM36", "DSP", "fits",
               "layers on the host CPU"]
    out = []
    for r in rows:
        for t in targets:
            if not isinstance(r.get(col.fps(t)), (int, float)):
                continue
            cells = [r["variant"], t, f"{r[col.fps(t)]:,.0f}"]
            for key, fmt in (("latency_ms", "{:.3f}"), ("energy_mj", "{:.3f}"), ("lut", "{:,.0f}"),
                             ("bram", "{:,.1f}"), ("dsp", "{:,.0f}")):
                value = r.get(col.hw(key, t))
                cells.append(fmt.format(value) if isinstance(value, (int, float)) else "–")
            fits = r.get(col.fits(t))
            cells.append("–" if fits is None else ("yes" if fits else "no"))
            unmapped = r.get(col.hw(col.UNMAPPED, t)) or []
            cells.append("none" if not unmapped else f"{len(unmapped)}: {'; '.join(unmapped[:3])}"
                         + (" ..." if len(unmapped) > 3 else ""))
            out.append(cells)
    return headers, out
