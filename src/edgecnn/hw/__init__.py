"""Hardware estimates without vendor tools, in rooms: graph/ (any ONNX/QONNX file or torch module as a
LayerGraph), estimators/ (DPU, FINN-style dataflow, systolic arrays, host CPU, energy, error bars), finn/ (FINN's
own compiler front end as an external tool), validation/ (published figures and the held-out error). In the hall:
targets (targets.yaml), estimation (estimate a file on a target) and render (tables and plots of an estimate).

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
    "estimate": "edgecnn.hw.estimation",
    "parse_budget": "edgecnn.hw.estimation",
    "Estimate": "edgecnn.hw.estimators.base",
    "LayerEstimate": "edgecnn.hw.estimators.base",
    "Unmapped": "edgecnn.hw.estimators.base",
    "Estimator": "edgecnn.hw.estimators.base",
    "register_estimator": "edgecnn.hw.estimators.base",
    "list_estimators": "edgecnn.hw.estimators.base",
    "render_estimate": "edgecnn.hw.render",
    "plot_layer_cycles": "edgecnn.hw.render",
    "HardwareModelError": "edgecnn.hw.errors",
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
