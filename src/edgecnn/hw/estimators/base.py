"""The Estimator abstraction, the Estimate record every hardware model returns, and the shared base of the models:
the estimator registry (one per target kind) and the host cost of a layer a target cannot run.

Hand-written models: no pip-installable library estimates DPU, FINN-dataflow or systolic-array costs
without the vendor tools (Vivado/Vitis), so each estimator implements the public formulas it cites.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

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


@dataclass(frozen=True)
class FabricResources:
    """FPGA fabric resources, typed: LUTs, BRAM in 36 Kb blocks, DSP slices, UltraRAM blocks and flip-flops (None:
    the estimate does not count that resource)."""

    lut: float | None = None
    bram36: float | None = None
    dsp: float | None = None
    uram: float | None = None
    ff: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> FabricResources | None:
        """The fabric resources among ``values`` (keys lut, bram36 or bram18, dsp, uram, ff; values as they are);
        None when it names none of them."""
        bram: float | None = values.get("bram36")
        if bram is None and "bram18" in values:
            bram = values["bram18"] / 2
        found = cls(lut=values.get("lut"), bram36=bram, dsp=values.get("dsp"), uram=values.get("uram"),
                    ff=values.get("ff"))
        return None if found == cls() else found


@dataclass
class Estimate:
    """What a model costs on one target: throughput, latency, resources, energy and mappability.

    ``fits`` says whether the design fits the resource budget (dataflow targets; None where no budget applies);
    ``resources`` is the typed view of the fabric resources in ``resources_used``; ``extra`` holds what one
    estimator adds (folding, calibration, threads, FINN's verdict, ...)."""

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
    fits: bool | None = None

    @property
    def resources(self) -> FabricResources | None:
        """The fabric resources the design uses (from ``resources_used``); None when the estimate counts none."""
        return FabricResources.from_mapping(self.resources_used)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (floats rounded to 6 significant digits; inf/nan become None); ``fits`` is
        written in ``extra``, where readers of the JSON have always found it (after ``folding_mode``: the same
        file as before it was a field)."""
        record = asdict(self)
        fits = record.pop("fits")
        if fits is not None:
            items = list(record["extra"].items())
            at = next((i + 1 for i, (k, _) in enumerate(items) if k == "folding_mode"), 0)
            record["extra"] = dict(items[:at] + [("fits", fits)] + items[at:])
        return _clean_record(record)

    def summary_row(self) -> dict[str, Any]:
        """The key numbers, flat, for one results-table row (the caller prefixes the target name)."""
        used = self.resources or FabricResources()
        row: dict[str, Any] = {
            "fps": _round(self.fps), "latency_ms": _round(self.latency_ms),
            "energy_mj": _round(self.energy_mj_per_image), "power_w": _round(self.power_w),
            "lut": used.lut, "bram": used.bram36, "dsp": used.dsp,
            "uram": used.uram, "bottleneck": self.bottleneck, "unmapped": len(self.unmapped),
        }
        if self.fits is not None:
            row["fits"] = self.fits
        return _clean_record(row)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return None
        return float(f"{x:.6g}")
    return x


def _clean_record(record: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = _clean(record)
    return cleaned


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars
        obj = obj.item()
    return _round(obj)


OptionsT = TypeVar("OptionsT", bound="EstimatorOptions")


@dataclass(frozen=True)
class EstimatorOptions:
    """The options every estimator takes; each kind's estimator has its own subclass with what it adds.

    ``fps``: a frame-rate goal (dataflow: the cheapest folding reaching it; others: a note when it is not
    reached); ``budget``: a dataflow resource budget in resource keys (lut, bram36, dsp, uram); ``threads``:
    DPU runtime threads."""

    fps: float | None = None
    budget: dict[str, float] | None = None
    threads: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, sorted."""
        return tuple(sorted(f.name for f in fields(cls)))

    @classmethod
    def parse(cls: type[OptionsT], kind: str, **values: Any) -> OptionsT:
        """The options of a ``kind`` target from keyword values; an unknown name is a one-line error that names
        the known ones."""
        known = cls.names()
        for name in values:
            if name not in known:
                raise HardwareModelError(f"unknown option '{name}' for a {kind} target{did_you_mean(name, known)} "
                                         f"(known options: {', '.join(known)})")
        return cls(**values)


class Estimator(ABC, Generic[OptionsT]):
    """Maps a LayerGraph onto one kind of target; ``options_type`` is the typed options its ``estimate`` takes."""

    kind: ClassVar[str] = ""
    options_type: type[OptionsT]

    def options(self, **values: Any) -> OptionsT:
        """This estimator's typed options from keyword values (unknown names are a one-line error)."""
        return self.options_type.parse(self.kind or type(self).__name__, **values)

    @abstractmethod
    def estimate(self, graph: LayerGraph, target: Target, options: OptionsT | None = None) -> Estimate:
        """Per-layer cycles, bottleneck, FPS, latency, resources, energy and unmapped layers."""


def host_cost(layer: Layer, where: str = "the host CPU") -> Unmapped:
    """An unmapped layer run on the host: elements x an assumed per-element cost, plus the stream leaving the chip."""
    elems = max(layer.in_elements, layer.out_elements)
    ms = elems * HOST_NS_PER_ELEMENT * 1e-6
    return Unmapped(layer.name, layer.op if layer.known else layer.onnx_op, "", f"runs on {where}: {elems} elements, "
                    f"~{ms * 1e3:.1f} us at an assumed {HOST_NS_PER_ELEMENT:g} ns/element, plus one transfer off the "
                    "accelerator", ms)


ESTIMATORS: Registry[type[Estimator[Any]]] = Registry("estimator", "edgecnn.hw.list_estimators()")
EstimatorT = TypeVar("EstimatorT", bound=type[Estimator[Any]])


def register_estimator(kind: str) -> Callable[[EstimatorT], EstimatorT]:
    """Class decorator: the estimator of the targets of ``kind`` (sets the class's ``kind``)."""

    def decorator(cls: EstimatorT) -> EstimatorT:
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


def estimator_for(kind: str) -> Estimator[Any]:
    """An instance of the estimator registered for ``kind`` (imports the built-in models on first use)."""
    _builtin_estimators()
    if kind not in ESTIMATORS:
        raise HardwareModelError(f"no estimator for target kind '{kind}'{did_you_mean(kind, ESTIMATORS.names())}")
    return ESTIMATORS.get(kind)()
