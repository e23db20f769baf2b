"""Fit the DPU model's unpublished constants to published FPS figures (a small pattern search, no SciPy).

Used by benchmarks/estimators.py: it fits on one board's figures and reports the error on the held-out
boards, so the validation figures never influence the constants stored in dpu.CALIBRATION.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from edgecnn.hw.dpu import CALIBRATION, DPUEstimator
from edgecnn.hw.graph import LayerGraph
from edgecnn.hw.targets import Target

FITTED = ("eff_conv", "eff_dw", "host_ms", "ddr_fraction")
BOUNDS = {"eff_conv": (0.05, 1.0), "eff_dw": (0.02, 1.0), "host_ms": (0.0, 5.0), "ddr_fraction": (0.05, 1.0)}


@dataclass(frozen=True)
class Figure:
    """A published throughput: model, board, threads ('single' = 1, 'multi' = enough to fill every core), FPS."""

    model: str
    target: str
    mode: str
    fps: float
    source: str = "Vitis AI model zoo v2.5"


def predict(fig: Figure, graph: LayerGraph, target: Target, calibration: dict[str, float]) -> float:
    est = DPUEstimator().estimate(graph, target, threads=1 if fig.mode == "single" else 4 * target.dpu.cores,
                                  calibration=calibration)
    return est.fps


def log_error(figs: list[Figure], graphs: dict[str, LayerGraph], targets: dict[str, Target],
              calibration: dict[str, float]) -> float:
    """Sum of squared log-ratios predicted/published."""
    return sum(math.log(predict(f, graphs[f.model], targets[f.target], calibration) / f.fps) ** 2 for f in figs)


def fit(figs: list[Figure], graphs: dict[str, LayerGraph], targets: dict[str, Target],
        start: dict[str, float] | None = None, iterations: int = 60) -> dict[str, float]:
    """Hooke-Jeeves pattern search of FITTED constants minimising the log error on ``figs``."""
    cal = dict(start or CALIBRATION)
    best = log_error(figs, graphs, targets, cal)
    step = {k: 0.25 * (BOUNDS[k][1] - BOUNDS[k][0]) for k in FITTED}
    for _ in range(iterations):
        improved = False
        for key in FITTED:
            for sign in (1, -1):
                trial = dict(cal)
                lo, hi = BOUNDS[key]
                trial[key] = min(hi, max(lo, cal[key] + sign * step[key]))
                err = log_error(figs, graphs, targets, trial)
                if err < best - 1e-12:
                    cal, best, improved = trial, err, True
                    break
        if not improved:
            step = {k: v / 2 for k, v in step.items()}
            if max(step[k] / (BOUNDS[k][1] - BOUNDS[k][0]) for k in FITTED) < 1e-4:
                break
    return {k: round(v, 4) if k in FITTED else v for k, v in cal.items()}
