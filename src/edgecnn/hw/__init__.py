"""Hardware estimates without vendor tools: layer graph, DPU, FINN-style dataflow, systolic arrays, energy,
and an integer-only reference executor.

Imported lazily (onnx, numpy, matplotlib and rich load on first use), so `import edgecnn.hw` is cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_graph": "edgecnn.hw.graph",
    "LayerGraph": "edgecnn.hw.graph",
    "Layer": "edgecnn.hw.graph",
    "list_targets": "edgecnn.hw.targets",
    "get_target": "edgecnn.hw.targets",
    "Target": "edgecnn.hw.targets",
    "estimate": "edgecnn.hw.api",
    "parse_budget": "edgecnn.hw.api",
    "Estimate": "edgecnn.hw.estimator",
    "LayerEstimate": "edgecnn.hw.estimator",
    "Unmapped": "edgecnn.hw.estimator",
    "Estimator": "edgecnn.hw.estimator",
    "register_estimator": "edgecnn.hw.estimator",
    "list_estimators": "edgecnn.hw.estimator",
    "render_estimate": "edgecnn.hw.render",
    "plot_layer_cycles": "edgecnn.hw.render",
    "HardwareModelError": "edgecnn.hw.errors",
    "run_int8": "edgecnn.hw.intsim",
    "IntegerModel": "edgecnn.hw.intsim",
    "compare_with_onnxruntime": "edgecnn.hw.intsim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgecnn.hw' has no attribute '{name}'")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
