"""Fit the DPU model's unpublished constants to published FPS figures (a small pattern search, no SciPy).

Used by the validation (hw.validation): it fits on one board's figures and reports the error on every other
figure, so held-out figures never influence the constants stored in dpu.CALIBRATION.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from edgecnn.hw.estimators.dpu import CALIBRATION, DPUEstimator, DPUOptions
from edgecnn.hw.graph import LayerGraph
from edgecnn.hw.targets import Target

FITTED = ("eff_conv", "eff_dw", "eff_misc", "layer_cycles", "host_ms", "ddr_fraction")
BOUNDS = {"eff_conv": (0.05, 1.0), "eff_dw": (0.02, 1.0), "eff_misc": (0.05, 1.0), "layer_cycles": (0.0, 20000.0),
          "host_ms": (0.0, 5.0), "ddr_fraction": (0.05, 1.0)}


@dataclass(frozen=True)
class Observation:
    """A published throughput of ``graph`` on ``target``: 'single' = one thread, 'multi' = enough to fill the cores."""

    graph: LayerGraph
    target: Target
    mode: str
    fps: float


def predict(obs: Observation, calibration: dict[str, float]) -> float:
    """The DPU model's FPS for the observation's graph, target and thread mode."""
    threads = 1 if obs.mode == "single" else None
    return DPUEstimator().estimate(obs.graph, obs.target, DPUOptions(threads=threads, calibration=calibration)).fps


def log_error(observations: list[Observation], calibration: dict[str, float]) -> float:
    """Sum of squared log-ratios predicted/published."""
    return sum(math.log(predict(o, calibration) / o.fps) ** 2 for o in observations)


def fit(observations: list[Observation], start: dict[str, float] | None = None, iterations: int = 60,
        fitted: tuple[str, ...] = FITTED) -> dict[str, float]:
    """Hooke-Jeeves pattern search of the ``fitted`` constants minimising the log error on ``observations``."""
    cal = dict(start or CALIBRATION)
    best = log_error(observations, cal)
    step = {k: 0.25 * (BOUNDS[k][1] - BOUNDS[k][0]) for k in fitted}
    for _ in range(iterations):
        improved = False
        for key in fitted:
            for sign in (1, -1):
                trial = dict(cal)
                lo, hi = BOUNDS[key]
                trial[key] = min(hi, max(lo, cal[key] + sign * step[key]))
                err = log_error(observations, trial)
                if err < best - 1e-12:
                    cal, best, improved = trial, err, True
                    break
        if not improved:
            step = {k: v / 2 for k, v in step.items()}
            if max(step[k] / (BOUNDS[k][1] - BOUNDS[k][0]) for k in fitted) < 1e-4:
                break
    return {k: round(v, 4) if k in fitted else v for k, v in cal.items()}
