"""The Estimator abstraction, the Estimate record every hardware model returns, and the shared base of the models:
the estimator registry (one per target kind) and the host cost of a layer a target cannot run.

Hand-written models: no pip-installable library estimates DPU, FINN-dataflow or systolic-array costs
without the vendor tools (Vivado/Vitis), so each estimator implements the public formulas it cites.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecnn.hw.errors import HardwareModelError, did_you_mean
from edgecnn.hw.graph.ir import Layer, LayerGraph
from edgecnn.hw.targets import Target
from edgecnn.registry import Registry

HOST_NS_PER_ELEMENT = 10.0  # assumption: an embedded Arm core handles ~100 M simple float elements/s


@dataclass
class LayerEstimate:
    """One row of the per-layer table."""

    name: str
    op: str
    in_shape: list[int] | None
    out_shape: list[int] | None
    macs: int
    w_bits: int
    a_bits: int
    cycles: float
    time_ms: float
    parallelism: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    bound: str = "compute"
    utilization: float | None = None
    note: str = ""


@dataclass
class Unmapped:
    """A layer the target cannot run, why, and what running it elsewhere costs."""

    name: str
    op: str
    why: str
    cost: str
    cost_ms: float = 0.0


@dataclass
class Estimate:
    """What a model costs on one target: throughput, latency, resources, energy and mappability."""

    target: str
    kind: str
    model: str
    layers: list[LayerEstimate]
    bottleneck: str
    fps: float
    latency_ms: float
    resources_used: dict[str, float]
    resources_available: dict[str, float]
    power_w: float
    power_source: str
    energy_mj_per_image: float
    unmapped: list[Unmapped] = field(default_factory=list)
    clock_mhz: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (floats rounded to 6 significant digits; inf/nan become None)."""
        return _clean(asdict(self))

    def summary_row(self) -> dict[str, Any]:
        """The key numbers, flat, for one results-table row (the caller prefixes the target name)."""
        used = self.resources_used
        row = {
            "fps": _round(self.fps), "latency_ms": _round(self.latency_ms),
            "energy_mj": _round(self.energy_mj_per_image), "power_w": _round(self.power_w),
            "lut": used.get("lut"), "bram": used.get("bram36"), "dsp": used.get("dsp"),
            "uram": used.get("uram"), "bottleneck": self.bottleneck, "unmapped": len(self.unmapped),
        }
        if "fits" in self.extra:
            row["fits"] = self.extra["fits"]
        return _clean(row)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return None
        return float(f"{x:.6g}")
    return x


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars
        obj = obj.item()
    return _round(obj)


class Estimator(ABC):
    """Maps a LayerGraph onto one kind of target."""

    kind: str = ""

    @abstractmethod
    def estimate(self, graph: LayerGraph, target: Target, *, fps: float | None = None,
                 budget: dict[str, float] | None = None, threads: int | None = None,
                 **options: Any) -> Estimate:
        """Per-layer cycles, bottleneck, FPS, latency, resources, energy and unmapped layers."""


def host_cost(layer: Layer, where: str = "the host CPU") -> Unmapped:
    """An unmapped layer run on the host: elements x an assumed per-element cost, plus the stream leaving the chip."""
    elems = max(layer.in_elements, layer.out_elements)
    ms = elems * HOST_NS_PER_ELEMENT * 1e-6
    return Unmapped(layer.name, layer.op if layer.known else layer.onnx_op, "", f"runs on {where}: {elems} elements, "
                    f"~{ms * 1e3:.1f} us at an assumed {HOST_NS_PER_ELEMENT:g} ns/element, plus one transfer off the "
                    "accelerator", ms)


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator", "edgecnn.hw.list_estimators()")


def register_estimator(kind: str) -> Callable[[type[Estimator]], type[Estimator]]:
    """Class decorator: the estimator of the targets of ``kind`` (sets the class's ``kind``)."""

    def decorator(cls: type[Estimator]) -> type[Estimator]:
        ESTIMATORS.register(kind)(cls)
        cls.kind = kind
        return cls

    return decorator


def _builtin_estimators() -> None:
    from edgecnn.hw.estimators import cpu, dataflow, dpu, systolic  # noqa: F401  (registration side effects)


def list_estimators(pattern: str = "*") -> list[str]:
    """Target kinds with a registered estimator whose name matches the fnmatch ``pattern``, sorted."""
    _builtin_estimators()
    return ESTIMATORS.names(pattern)


def estimator_for(kind: str) -> Estimator:
    """An instance of the estimator registered for ``kind`` (imports the built-in models on first use)."""
    _builtin_estimators()
    if kind not in ESTIMATORS:
        raise HardwareModelError(f"no estimator for target kind '{kind}'{did_you_mean(kind, ESTIMATORS.names())}")
    return ESTIMATORS.get(kind)()
