"""Folding (PE/SIMD per FINN node): given by the user, for a target FPS, or the fastest that fits a budget.

Only legal values are ever chosen: PE divides the node's PE dimension (MH, channels) and SIMD divides its
SIMD dimension (MW, Kh*Kw, channels), as FINN requires (set_folding.py divisors; calc_wmem asserts), and an
HLS MVAU needs SIMD >= MW/1024 (matrixvectoractivation_hls.py defines). Where FINN's SetFolding raises SIMD
then PE until a cycle target is met, this optimizer picks, per node, the cheapest legal folding that meets
the target (cost = resources as fractions of the budget), and binary-searches the smallest target whose
cheapest foldings fit the budget.
"""
from __future__ import annotations

import math
from typing import Any

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.estimators.finn_formulas import HWNode, divisors
from edgecnn.hw.targets import Target

RESOURCE_KEYS = ("lut", "bram36", "dsp", "uram")


def default_budget(target: Target) -> dict[str, float]:
    """The part's resources times the catalog's utilization cap (room for the shell, FIFOs and routing)."""
    cap = target.dataflow.utilization_cap if target.dataflow else 0.85
    r = target.resources
    return {"lut": r.lut * cap, "bram36": r.bram36 * cap, "dsp": r.dsp * cap, "uram": r.uram * cap}


def _res36(res: dict[str, float]) -> dict[str, float]:
    return {"lut": res["lut"], "bram36": res["bram18"] / 2, "dsp": res["dsp"], "uram": res["uram"]}


def legal_foldings(node: HWNode) -> list[tuple[int, int]]:
    """All legal (PE, SIMD) pairs of a node."""
    simds = divisors(node.max_simd)
    if node.kind == "MVAU":
        simds = [s for s in simds if s >= node.p["mw"] / 1024] or [node.max_simd]
    return [(pe, simd) for pe in divisors(node.max_pe) for simd in simds]


class _Candidates:
    """A node's legal foldings with their cycles and resources, sorted by cycles."""

    def __init__(self, node: HWNode) -> None:
        self.node = node
        rows = []
        for pe, simd in legal_foldings(node):
            rows.append((node.cycles(pe, simd), pe, simd, _res36(node.resources(pe, simd))))
        rows.sort(key=lambda r: (r[0], r[1] * r[2]))
        self.rows = rows

    def cheapest(self, max_cycles: float, budget: dict[str, float]) -> tuple[int, int, int, dict] | None:
        best, best_key = None, None
        for row in self.rows:
            if row[0] > max_cycles:
                break
            key = (sum(row[3][k] / budget[k] for k in RESOURCE_KEYS if budget.get(k, 0) > 0)
                   + sum(1e6 * row[3][k] for k in RESOURCE_KEYS if budget.get(k, 0) <= 0), row[1] * row[2])
            if best_key is None or key < best_key:
                best, best_key = row, key
        return best

    @property
    def fastest(self) -> tuple[int, int, int, dict]:
        return self.rows[0]


def _assign(cands: list[_Candidates], max_cycles: float, budget: dict[str, float]):
    """Cheapest folding per node meeting ``max_cycles``; (choices, total resources) or None if a node cannot."""
    choices, total = [], dict.fromkeys(RESOURCE_KEYS, 0.0)
    for c in cands:
        row = c.cheapest(max_cycles, budget)
        if row is None:
            return None
        choices.append(row)
        for k in RESOURCE_KEYS:
            total[k] += row[3][k]
    return choices, total


def fits_budget(total: dict[str, float], budget: dict[str, float]) -> bool:
    """Whether ``total`` (lut, bram36, dsp, uram) stays within ``budget`` (a resource it does not name is free)."""
    return all(total[k] <= budget.get(k, math.inf) + 1e-9 for k in RESOURCE_KEYS)


def _set(cands: list[_Candidates], choices) -> None:
    for c, row in zip(cands, choices):
        c.node.pe, c.node.simd = row[1], row[2]


def fold_for_fps(nodes: list[HWNode], max_cycles: float) -> str | None:
    """Fewest resources meeting ``max_cycles`` per frame; a note when some node cannot get there."""
    cands = [_Candidates(n) for n in nodes]
    unbounded = dict.fromkeys(RESOURCE_KEYS, 1.0)
    slow = []
    for c in cands:
        row = c.cheapest(max_cycles, unbounded) or c.fastest
        if row[0] > max_cycles:
            slow.append(f"{c.node.name} ({row[0]} cycles at full parallelism)")
        c.node.pe, c.node.simd = row[1], row[2]
    if slow:
        return f"target FPS not reachable: {', '.join(slow[:3])} cannot meet {int(max_cycles)} cycles per frame"
    return None


def fold_for_budget(nodes: list[HWNode], budget: dict[str, float]) -> str | None:
    """The smallest cycles-per-frame whose cheapest foldings fit ``budget`` (binary search over candidates)."""
    budget = {k: float(budget.get(k, math.inf)) for k in RESOURCE_KEYS}
    cands = [_Candidates(n) for n in nodes]
    floor = max(c.fastest[0] for c in cands)
    targets = sorted({r[0] for c in cands for r in c.rows if r[0] >= floor})
    lo, hi, best = 0, len(targets) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        got = _assign(cands, targets[mid], budget)
        if got is not None and fits_budget(got[1], budget):
            best, hi = got, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        _set(cands, best[0])
        return None
    smallest = _assign(cands, math.inf, budget)
    _set(cands, smallest[0])
    over = [k for k in RESOURCE_KEYS if smallest[1][k] > budget.get(k, math.inf)]
    return (f"does not fit the budget even fully folded (PE=SIMD=1 where cheapest): {', '.join(over)} over — "
            "use a bigger part, fewer/lower-precision weights, or a larger budget")


def _parse_entry(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, dict):
        entry: dict[str, Any] = value
        return int(entry.get("PE", entry.get("pe", 1))), int(entry.get("SIMD", entry.get("simd", 1)))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise HardwareModelError(f"folding for {where} must be (PE, SIMD) or {{'PE': .., 'SIMD': ..}}, got {value!r}")


def apply_folding(nodes: list[HWNode], folding: dict[str, Any] | list[Any]) -> None:
    """Set the given PE/SIMD of the MVAU/VVAU nodes (by layer/node name, or a list in graph order), then fold
    the other nodes as FINN builds do: an SWG takes its consumer's SIMD (finn-examples folding configs) and
    every other node the cheapest folding that keeps it off the critical path."""
    compute = [n for n in nodes if n.kind in ("MVAU", "VVAU")]
    if isinstance(folding, (list, tuple)):
        if len(folding) != len(compute):
            raise HardwareModelError(f"folding lists {len(folding)} entries but the model has {len(compute)} "
                                     "MVAU/VVAU layers — give one (PE, SIMD) per Conv/Gemm layer")
        pairs = {n.name: _parse_entry(v, n.name) for n, v in zip(compute, folding)}
    else:
        pairs = {}
        names = {n.name: n for n in nodes} | {n.layer: n for n in compute}
        for key, value in folding.items():
            if key not in names:
                from edgecnn.hw.errors import did_you_mean
                raise HardwareModelError(f"folding names unknown layer '{key}'{did_you_mean(key, names)}")
            pairs[names[key].name] = _parse_entry(value, key)
    by_name = {n.name: n for n in nodes}
    for name, (pe, simd) in pairs.items():
        node = by_name[name]
        if not node.legal(pe, simd):
            raise HardwareModelError(
                f"illegal folding PE={pe}, SIMD={simd} for {name}: PE must divide {node.max_pe} "
                f"({divisors(node.max_pe)}) and SIMD must divide {node.max_simd} ({divisors(node.max_simd)})")
        node.pe, node.simd = pe, simd
    target = max((n.cycles() for n in compute), default=0)
    consumer_simd = {}
    for i, n in enumerate(nodes):
        if n.kind == "SWG":
            nxt = next((m for m in nodes[i + 1:] if m.layer == n.layer and m.kind in ("MVAU", "VVAU", "Pool")), None)
            if nxt is not None:
                consumer_simd[n.name] = nxt.pe if nxt.kind in ("VVAU", "Pool") else nxt.simd
    unbounded = dict.fromkeys(RESOURCE_KEYS, 1.0)
    for n in nodes:
        if n.name in pairs or n.kind in ("MVAU", "VVAU"):
            continue
        if n.name in consumer_simd:
            n.simd = max(d for d in divisors(n.max_simd) if d <= max(consumer_simd[n.name], 1))
            if n.cycles() <= target:
                continue
        row = _Candidates(n).cheapest(target, unbounded) or _Candidates(n).fastest
        n.pe, n.simd = row[1], row[2]
