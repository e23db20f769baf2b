"""The validation run: every estimator against the published figures it can be checked on, and the summary
(validation_summary.json beside the estimators) whose per-class errors every estimate quotes.

Sections: cnv (FINN's BNN-PYNQ CNV with the finn-examples folding: per-layer MVAU cycles and FPS), dpu (every
published DPU figure, constants refitted on one board and release, the rest held out), dataflow (published FINN
builds: FPS and LUT/BRAM). `python -m edgecnn.hw.validation` runs it and rewrites the summary.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecnn.hw.estimation import estimate
from edgecnn.hw.estimators.dpu import CALIBRATION
from edgecnn.hw.estimators.error_bars import SUMMARY
from edgecnn.hw.validation.heldout import (
    DPU_MAE_TARGET,
    DPU_WORST_TARGET,
    GraphCache,
    summarize,
    validate_dataflow,
    validate_dpu,
)
from edgecnn.hw.validation.reference_nets import CNV_FOLDING, cnv_qonnx

#: finn-examples folding -> FINN's per-layer MVAU cycles and FPS at 100 MHz (BNN-PYNQ CNV).
CNV_PUBLISHED = {
    "w1a1": {"cycles": [32400, 28224, 20736, 28800, 20736, 18432, 32768, 32768, 1024], "fps": 3052},
    "w2a2": {"cycles": [64800, 112896, 82944, 115200, 82944, 73728, 65536, 65536, 1024], "fps": 868},
}


def validate_cnv() -> dict[str, Any]:
    """CNV W1A1 / W2A2 at the published folding: MVAU cycles and FPS against FINN's, plus the folding optimizer."""
    out: dict[str, Any] = {}
    for key, bits in (("w1a1", (1, 1)), ("w2a2", (2, 2))):
        model = cnv_qonnx(*bits)
        est = estimate(model, "pynq-z1", folding=CNV_FOLDING[bits])
        cycles = [int(r.cycles) for r in est.layers if r.op.endswith("/MVAU")]
        pub = CNV_PUBLISHED[key]
        auto = estimate(model, "pynq-z1")  # the folding optimizer within the Pynq-Z1's default budget
        out[key] = {
            "folding": [list(f) for f in CNV_FOLDING[bits]],
            "mvau_cycles": cycles, "published_cycles": pub["cycles"], "cycles_exact": cycles == pub["cycles"],
            "fps_mvau_only": est.extra["fps_compute_only"], "fps_whole_graph": est.fps,
            "published_fps": pub["fps"], "fps_matches": round(est.extra["fps_compute_only"]) == pub["fps"],
            "whole_graph_bottleneck": est.bottleneck,
            "slowest_non_mvau": max((r.cycles for r in est.layers if not r.op.endswith("/MVAU")), default=0),
            "latency_ms": est.latency_ms, "resources": est.resources_used,
            "optimizer_pynq_z1": {"fps": auto.fps, "resources": auto.resources_used, "fits": auto.fits,
                                  "budget": auto.extra["budget"]},
        }
    out["note"] = ("fps_mvau_only = 100 MHz / slowest MVAU (FINN's published figure); fps_whole_graph includes the "
                   "sliding-window generators (SIMD = their MVAU's SIMD, as in the finn-examples folding configs), "
                   "StreamingMaxPool and FMPadding nodes: none is slower than the slowest MVAU, so both agree.")
    return out


def validate_dpu_figures(cache: GraphCache) -> dict[str, Any]:
    """Every published DPU figure: constants refitted on the calibration board only, errors per class."""
    t0 = time.time()
    points, fitted = validate_dpu(cache=cache, refit=True)
    shipped, _ = validate_dpu(cache=cache, refit=False)
    return {
        "calibration_set": "ZCU102 3xB4096 @281 MHz, Vitis AI 2.5 model zoo (every rebuilt network)",
        "held_out": "ZCU104, KV260 (Vitis AI 2.5 and 2.0), ZCU102 Vitis AI 2.0 (Caffe models), Ultra96 B1600 and "
                    "ZCU102 @287 MHz (AI SDK v2.0.4)",
        "constants_refitted_here": fitted, "constants_shipped": dict(CALIBRATION),
        "refit_matches_shipped": all(abs(fitted[k] - CALIBRATION[k]) <= 1e-3 * max(1.0, abs(CALIBRATION[k]))
                                     for k in fitted),
        "figures_total": len(points), "figures_not_rebuilt": sum(p.role == "not rebuilt" for p in points),
        "summary_held_out": summarize(shipped, "held-out"), "summary_calibration": summarize(shipped, "calibration"),
        "targets": {"held_out_mae": DPU_MAE_TARGET, "worst": DPU_WORST_TARGET},
        "within_25pct_held_out": sum(1 for p in shipped
                                     if p.role == "held-out" and abs(p.known_error) <= DPU_WORST_TARGET),
        "points": [p.as_dict() for p in shipped],
        "seconds": round(time.time() - t0, 1),
    }


def run_validation(progress: Callable[[str], None] | None = None,
                   cache: GraphCache | None = None) -> dict[str, Any]:
    """The cnv, dpu and dataflow sections (a few minutes: the DPU section rebuilds every published network)."""
    cache = cache or GraphCache(progress=progress)
    return {"cnv": validate_cnv(), "dpu": validate_dpu_figures(cache), "dataflow": validate_dataflow()}


def summary_of(result: dict[str, Any], source: str) -> dict[str, Any]:
    """The per-class errors every estimate quotes, from a validation run's sections."""
    dpu, df = result["dpu"], result["dataflow"]
    return {
        "source": source,
        "dpu": {"calibration_set": dpu["calibration_set"], "held_out_figures": dpu["summary_held_out"]["all"]["n"],
                "classes": {k: {"mae": v["mae"], "worst": v["worst"], "n": v["n"]}
                            for k, v in dpu["summary_held_out"].items()}},
        "dataflow": {"fps_mae_all": df["fps_mae_all"], "fps_mae_mlp": df["fps_mae_mlp"],
                     "fps_mae_cnn": _mae_of(df["fps"], "dataflow_cnn"), "designs": df["designs_scored"],
                     "lut_mae": df["lut_mae"], "lut_designs": len(df["resources"])},
    }


def write_summary(result: dict[str, Any], source: str, path: Path = SUMMARY) -> Path:
    """Write the summary the estimators read (the package's validation_summary.json unless told otherwise)."""
    path.write_text(json.dumps(summary_of(result, source), indent=2) + "\n")
    return path


def _mae_of(points: list[dict[str, Any]], group: str) -> float | None:
    errs = [abs(p["error"]) for p in points if p.get("group") == group and p.get("error") is not None]
    return round(sum(errs) / len(errs), 4) if errs else None
