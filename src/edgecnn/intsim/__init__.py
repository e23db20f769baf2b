"""The integer-only reference executor: runs an INT8 QDQ / power-of-two ONNX file with integer arithmetic only
(arith: quantized tensors and kernels, model: the graph, run: run_int8 and the comparison with ONNX Runtime), so
a file the DPU would run is checked to be integer-exact. See docs/intsim.md."""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"run_int8": "edgecnn.intsim.run", "IntegerModel": "edgecnn.intsim.run",
            "compare_with_onnxruntime": "edgecnn.intsim.run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgecnn.intsim' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
