"""Validation of the estimators on published measurements: rebuild each network, predict, compare, per error class.

The DPU constants are fitted on one board's figures (the calibration set) and every other figure is held out;
the error of each class of network (hw.networks.network_groups) is reported as the mean absolute relative
error (MAE) and the worst case, with every figure kept, including those the model explains badly.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecnn.hw.calibrate import Observation, fit, predict
from edgecnn.hw.graph import LayerGraph
from edgecnn.hw.networks import network_graph, network_groups
from edgecnn.hw.published import DPUFigure, dpu_figures

#: The calibration set: the one board whose figures may tune the DPU constants.
CALIBRATION_BOARD = ("zcu102", "Vitis AI 2.5")
#: Targets of issue-level validation (held-out): MAE per class and the worst single figure.
DPU_MAE_TARGET, DPU_WORST_TARGET = 0.10, 0.25


@dataclass
class Point:
    """One published figure against its prediction."""

    key: str
    network: str
    build: str | None
    board: str
    mode: str
    published: float
    predicted: float | None
    role: str  # "calibration" | "held-out" | "not rebuilt"
    groups: list[str] = field(default_factory=list)
    gops_published: float | None = None
    gops_built: float | None = None
    source: str = ""

    @property
    def error(self) -> float | None:
        return None if self.predicted is None else self.predicted / self.published - 1

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error"] = None if self.error is None else round(self.error, 4)
        out["predicted"] = None if self.predicted is None else round(self.predicted, 2)
        return out


class GraphCache:
    """Builds each (network, input size) once."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.graphs: dict[tuple[str, tuple[int, int]], LayerGraph] = {}
        self.progress = progress

    def get(self, build: str, input_hw: tuple[int, int]) -> LayerGraph:
        key = (build, tuple(input_hw))
        if key not in self.graphs:
            if self.progress:
                self.progress(f"building {build} at {input_hw[0]}x{input_hw[1]}")
            self.graphs[key] = network_graph(build, input_hw)
        return self.graphs[key]


def is_calibration(fig: DPUFigure) -> bool:
    return (fig.board, fig.release) == CALIBRATION_BOARD and fig.clock_mhz == 281


def _observations(figs: Iterable[DPUFigure], cache: GraphCache) -> list[tuple[DPUFigure, str, Observation]]:
    out = []
    for fig in figs:
        if not fig.build:
            continue
        graph, target = cache.get(fig.build, fig.input_hw), fig.target()
        for mode, fps in (("single", fig.fps_single), ("multi", fig.fps_multi)):
            if fps:
                out.append((fig, mode, Observation(graph, target, mode, float(fps))))
    return out


def validate_dpu(figures: list[DPUFigure] | None = None, *, refit: bool = True, cache: GraphCache | None = None,
                 calibration: dict[str, float] | None = None) -> tuple[list[Point], dict[str, float]]:
    """Predict every figure; with ``refit`` the constants are first fitted on the calibration board's figures."""
    from edgecnn.hw.dpu import CALIBRATION

    figures = dpu_figures() if figures is None else figures
    cache = cache or GraphCache()
    obs = _observations(figures, cache)
    cal = dict(calibration or CALIBRATION)
    if refit:
        cal = fit([o for f, _, o in obs if is_calibration(f)], start=cal, iterations=200)
    points = []
    for fig in figures:
        for mode, fps in (("single", fig.fps_single), ("multi", fig.fps_multi)):
            if not fps:
                continue
            role = "not rebuilt" if not fig.build else "calibration" if is_calibration(fig) else "held-out"
            pred = groups = built = None
            if fig.build:
                graph = cache.get(fig.build, fig.input_hw)
                pred = predict(Observation(graph, fig.target(), mode, float(fps)), cal)
                groups, built = network_groups(graph), round(2 * graph.total_macs / 1e9, 3)
            points.append(Point(key=fig.key, network=fig.network, build=fig.build, board=fig.board, mode=mode,
                                published=float(fps), predicted=pred, role=role, groups=groups or [],
                                gops_published=fig.gops, gops_built=built, source=fig.source))
    return points, cal


def summarize(points: list[Point], role: str = "held-out") -> dict[str, dict[str, Any]]:
    """MAE and worst case per error class (and 'all') over the points of ``role``."""
    chosen = [p for p in points if p.role == role and p.error is not None]
    classes: dict[str, list[Point]] = {"all": chosen}
    for p in chosen:
        for g in p.groups:
            classes.setdefault(g, []).append(p)
    out = {}
    for name, pts in sorted(classes.items()):
        if not pts:
            continue
        worst = max(pts, key=lambda p: abs(p.error))
        out[name] = {"n": len(pts), "mae": round(statistics.fmean(abs(p.error) for p in pts), 4),
                     "worst": round(worst.error, 4), "worst_figure": f"{worst.key} ({worst.mode})"}
    return out
