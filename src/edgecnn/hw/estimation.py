"""Public verbs of the hardware models: estimate a model on a target, parse a resource budget."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgecnn.errors import EdgeCNNError
from edgecnn.hw.errors import HardwareModelError, did_you_mean
from edgecnn.hw.estimators.base import Estimate, estimator_for
from edgecnn.hw.graph import LayerGraph, load_graph
from edgecnn.hw.targets import Target, get_target

#: Budget keys accepted by parse_budget and estimate, and what they mean (BRAM is counted in 36 Kb blocks).
BUDGET_KEYS = {"lut": "lut", "luts": "lut", "bram": "bram36", "bram36": "bram36", "bram18": "bram18", "dsp": "dsp",
               "dsps": "dsp", "uram": "uram"}


def parse_budget(text: str) -> dict[str, float]:
    """'lut=10000,bram=50,dsp=80' -> {'lut': 10000.0, 'bram36': 50.0, 'dsp': 80.0} (bram18=N counts N/2 BRAM36)."""
    out: dict[str, float] = {}
    if not isinstance(text, str) or not text.strip():
        raise HardwareModelError("empty budget — write it as lut=10000,bram=50,dsp=80")
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise HardwareModelError(f"budget item '{item}' has no '=' — write it as lut=10000,bram=50,dsp=80")
        if key not in BUDGET_KEYS:
            raise HardwareModelError(f"unknown budget resource '{key}'{did_you_mean(key, BUDGET_KEYS)} "
                                     "(use lut=, bram=, dsp=, uram=)")
        try:
            number = float(value)
        except ValueError:
            raise HardwareModelError(f"budget value for '{key}' must be a number, got '{value.strip()}'") from None
        if number < 0 or math.isnan(number):
            raise HardwareModelError(f"budget value for '{key}' must be >= 0, got {value.strip()}")
        name = BUDGET_KEYS[key]
        if name == "bram18":
            name, number = "bram36", number / 2
        out[name] = number
    return out


def _check_budget(budget: dict[str, float] | str | None, target: Target) -> dict[str, float] | None:
    if budget is None:
        return None
    if isinstance(budget, str):
        budget = parse_budget(budget)
    clean = {}
    for key, value in budget.items():
        name = BUDGET_KEYS.get(str(key).lower())
        if name is None:
            raise HardwareModelError(f"unknown budget resource '{key}'{did_you_mean(str(key), BUDGET_KEYS)}")
        if name == "bram18":
            name, value = "bram36", value / 2
        clean[name] = float(value)
    if target.kind == "dataflow":  # unspecified resources keep the part's default budget
        from edgecnn.hw.estimators.folding import default_budget

        return {**default_budget(target), **clean}
    return clean


def estimate(model: str | Path | LayerGraph | Any, target: str | Target, *, fps: float | None = None,
             budget: dict[str, float] | str | None = None, threads: int | None = None, batch: int = 1,
             targets_file: str | Path | None = None, finn: bool | None = None, **options: Any) -> Estimate:
    """Estimate ``model`` (ONNX/QONNX path, ModelProto or LayerGraph) on ``target`` (catalog name or Target).

    ``fps`` asks a dataflow target for the cheapest folding reaching it; ``budget`` (dict or 'lut=..,bram=..')
    bounds a dataflow target's resources (default: the part times its utilization cap); ``threads`` sets the
    DPU runtime threads (default: two per core, the throughput setting). Options, one typed model per target
    kind (its estimator's ``options_type``; an unknown name is a one-line error naming the known ones):
    ``folding`` (DataflowOptions: a list of (PE, SIMD) per Conv/Gemm or a dict by layer name), ``dataflow``
    (SystolicOptions: os/ws/is), ``calibration`` (DPUOptions: constants overriding dpu.CALIBRATION). ``finn``: on a
    dataflow target, also run FINN's own front end on the file at this folding (its verdict and estimates beside
    edgecnn's; hw/finn/tool.py); None runs it when FINN's environment is installed, True requires it, False skips it.
    """
    tgt = get_target(target, targets_file)
    if fps is not None and (not isinstance(fps, (int, float)) or fps <= 0 or math.isnan(fps)):
        raise HardwareModelError(f"target FPS must be a positive number, got {fps!r}")
    estimator = estimator_for(tgt.kind)
    chosen = estimator.options(**options)  # unknown option names fail here, before the model is read
    graph = model if isinstance(model, LayerGraph) else load_graph(model, batch=batch)
    limit = _check_budget(budget, tgt)
    est = estimator.estimate(graph, tgt, replace(chosen, fps=fps, budget=limit, threads=threads))
    if budget is not None and tgt.kind != "dataflow":
        est.notes.append(f"a resource budget applies to dataflow targets only; '{tgt.name}' is a {tgt.kind} target")
    for note in graph.notes:
        est.notes.append(note)
    if tgt.kind == "dataflow" and finn is not False and isinstance(model, (str, Path)):
        from edgecnn.hw.finn.tool import attach_finn, finn_python

        if finn or finn_python() is not None:
            try:
                attach_finn(est, model, tgt)
            except EdgeCNNError as exc:  # FINN itself failed: edgecnn's own estimate stands, unless FINN was required
                if finn:
                    raise
                est.notes.append(f"FINN's check did not run: {exc}")
    return est
