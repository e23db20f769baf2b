"""Validation of the estimators on published measurements: rebuild each network, predict, compare, per error class.

The DPU constants are fitted on one board's figures (the calibration set) and every other figure is held out;
the error of each class of network (hw.graph.network_groups) is reported as the mean absolute relative
error (MAE) and the worst case, with every figure kept, including those the model explains badly.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecnn.hw.graph import LayerGraph, network_groups
from edgecnn.hw.validation.calibrate import Observation, fit, predict
from edgecnn.hw.validation.networks import network_graph
from edgecnn.hw.validation.published import DataflowFigure, DPUFigure, dataflow_figures, dpu_figures

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

    @property
    def known_error(self) -> float:
        """The error of a point that has a prediction (the summaries keep only those)."""
        if self.error is None:
            raise ValueError(f"{self.key} has no prediction")
        return self.error

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
        key = (build, (input_hw[0], input_hw[1]))
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
    from edgecnn.hw.estimators.dpu import CALIBRATION

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
        worst = max(pts, key=lambda p: abs(p.known_error))
        out[name] = {"n": len(pts), "mae": round(statistics.fmean(abs(p.known_error) for p in pts), 4),
                     "worst": round(worst.known_error, 4), "worst_figure": f"{worst.key} ({worst.mode})"}
    return out


# ------------------------------------------------------------------------------------------------ dataflow

#: The dataflow calibration set: designs measured with the finn-examples driver (one board); BNN-PYNQ is held out.
DATAFLOW_CALIBRATION_PREFIX = "finn-examples-"
DATAFLOW_MAE_TARGET, LUT_TARGET = 0.10, 0.25


def measured_rate(fps: float, batch: int | None, call_ms: float) -> float:
    """What a driver measures when it times calls of ``batch`` images: batch / (batch / fps + per-call overhead)."""
    n = batch or 1
    return n / (n / fps + call_ms * 1e-3)


def _dataflow_estimate(fig: DataflowFigure, cache: dict[str, Any]) -> Any:
    from edgecnn.hw.estimators.dataflow import DataflowEstimator, DataflowOptions

    if fig.design not in cache:
        if fig.build is None or fig.folding is None:
            raise ValueError(f"{fig.design} has no rebuilt network or no published folding")
        graph = network_graph(fig.build, w_bits=fig.w_bits, a_bits=fig.a_bits, in_bits=fig.in_bits, **fig.build_args)
        folding = DataflowOptions(folding=list(fig.folding))
        cache[fig.design] = DataflowEstimator().estimate(graph, fig.target(), folding)
    return cache[fig.design]


def _published_fps(fig: DataflowFigure) -> float:
    if not fig.fps_measured:
        raise ValueError(f"{fig.design} has no published FPS")
    return fig.fps_measured


def fit_call_overhead(figs: list[DataflowFigure], cache: dict[str, Any]) -> float:
    """The driver's per-call overhead (ms) that best explains the calibration designs (log error, grid search)."""
    if not figs:
        return 0.0

    def err(call_ms: float) -> float:
        return sum(math.log(measured_rate(_dataflow_estimate(f, cache).fps, f.fps_batch, call_ms) / _published_fps(f))
                   ** 2 for f in figs)
    grid = [i * 0.005 for i in range(0, 2001)]  # 0 .. 10 ms
    return min(grid, key=err)


def validate_dataflow(figures: list[DataflowFigure] | None = None) -> dict[str, Any]:
    """FPS of every measured design (driver overhead fitted on the finn-examples designs only) and LUT/BRAM of
    every design with a published utilisation report, against the estimator with the published folding."""
    figures = dataflow_figures() if figures is None else figures
    cache: dict[str, Any] = {}
    rebuilt = [f for f in figures if f.build and f.folding]
    measured = [f for f in rebuilt if f.fps_measured]
    calib = [f for f in measured if f.design.startswith(DATAFLOW_CALIBRATION_PREFIX)]
    call_ms = fit_call_overhead(calib, cache)
    fps_points = []
    for f in figures:
        if not f.fps_measured:
            continue
        row: dict[str, Any] = {"design": f.design, "board": f.board, "clock_mhz": f.clock_mhz, "batch": f.fps_batch,
                               "published_fps": f.fps_measured, "source": f.source}
        if f in rebuilt:
            est = _dataflow_estimate(f, cache)
            pred = measured_rate(est.fps, f.fps_batch, call_ms)
            row.update(role="calibration" if f in calib else "held-out", streaming_fps=round(est.fps, 1),
                       predicted_fps=round(pred, 1), error=round(pred / f.fps_measured - 1, 4),
                       bound="dma" if est.extra["dma_cycles"] > est.extra["max_cycles"] else est.bottleneck,
                       group="mlp" if f.build in ("tfc", "sfc", "lfc") else "dataflow_cnn")
        else:
            row.update(role="not rebuilt", predicted_fps=None, error=None)
        fps_points.append(row)
    res_points = []
    for f in rebuilt:
        if "lut" not in f.resources:
            continue
        est = _dataflow_estimate(f, cache)
        bram_pub = f.resources.get("bram36", 0) + f.resources.get("bram18", 0) / 2
        res_points.append({"design": f.design, "published_lut": f.resources["lut"],
                           "estimated_lut": est.resources_used["lut"],
                           "lut_error": round(est.resources_used["lut"] / f.resources["lut"] - 1, 4),
                           "published_bram36": bram_pub, "estimated_bram36": est.resources_used["bram36"],
                           "bram_error": round(est.resources_used["bram36"] / bram_pub - 1, 4) if bram_pub else None,
                           "source": f.source})
    scored = [p for p in fps_points if p["error"] is not None]
    held = [p for p in scored if p["role"] == "held-out"]
    return {
        "call_overhead_ms": call_ms, "fps": fps_points, "resources": res_points,
        "fps_mae_all": _mae(p["error"] for p in scored), "fps_mae_held_out": _mae(p["error"] for p in held),
        "fps_mae_mlp": _mae(p["error"] for p in scored if p["group"] == "mlp"),
        "fps_worst": max((p["error"] for p in scored), key=abs, default=None),
        "lut_mae": _mae(p["lut_error"] for p in res_points),
        "lut_within_target": sum(abs(p["lut_error"]) <= LUT_TARGET for p in res_points),
        "designs_scored": len(scored), "designs_not_rebuilt": len(fps_points) - len(scored),
    }


def _mae(errors: Iterable[float]) -> float | None:
    values = [abs(e) for e in errors]
    return round(statistics.fmean(values), 4) if values else None
