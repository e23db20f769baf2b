"""Published hardware measurements (published.yaml) as typed records: what the estimators are validated against.

Every record carries its source. DPU figures are Vitis AI model-zoo end-to-end throughputs (single- and multi-
thread); dataflow figures are FINN / BNN-PYNQ designs measured on boards, with their folding and resources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.targets import DPUConfig, Target, get_target

PUBLISHED = Path(__file__).with_name("published.yaml")
#: DPUCZDX8G geometry by architecture name (AMD PG338: PP x ICP x OCP). "B4096F" is the KV260's B4096 build.
DPU_GEOMETRY = {"B512": (4, 8, 8), "B800": (4, 10, 10), "B1024": (8, 8, 8), "B1152": (4, 12, 12),
                "B1600": (8, 10, 10), "B2304": (8, 12, 12), "B3136": (8, 14, 14), "B4096": (8, 16, 16),
                "B4096F": (8, 16, 16)}


@dataclass(frozen=True)
class DPUFigure:
    """One model-zoo row: a network at an input size on a board's DPU, end-to-end FPS with 1 and many threads."""

    network: str
    build: str | None
    zoo_name: str
    input_hw: tuple[int, int]
    gops: float | None
    board: str
    arch: str
    cores: int
    clock_mhz: float
    fps_single: float | None
    fps_multi: float | None
    latency_ms: float | None
    release: str
    source: str

    @property
    def key(self) -> str:
        return f"{self.board}@{self.clock_mhz:g}/{self.release.split(' (')[0]}/{self.zoo_name}"

    def target(self) -> Target:
        """The board's catalog target with this figure's DPU size, core count and clock."""
        base = get_target(self.board)
        if base.dpu is None:  # a board with both kinds (ultra96) names its DPU setup '<board>-dpu'
            base = get_target(f"{self.board}-dpu")
        if base.dpu is None:
            raise HardwareModelError(f"target '{self.board}' is not a DPU board")
        pp, icp, ocp = DPU_GEOMETRY[self.arch]
        dpu = DPUConfig(**{**base.dpu.model_dump(), "arch": self.arch.rstrip("F"), "cores": self.cores,
                           "pp": pp, "icp": icp, "ocp": ocp})
        return base.model_copy(update={"dpu": dpu, "clock_mhz": self.clock_mhz,
                                       "name": f"{self.board}-{self.cores}x{self.arch}@{self.clock_mhz:g}"})


@dataclass(frozen=True)
class DataflowFigure:
    """One FINN-style design measured on a board: its network, bits, folding, FPS and resources."""

    design: str
    network: str
    build: str | None
    w_bits: int
    a_bits: int
    in_bits: int | None
    board: str
    clock_mhz: float | None
    folding: tuple[tuple[int, ...], ...] | None  # (PE, SIMD) per MVAU/VVAU
    fps_measured: float | None
    fps_batch: int | None
    resources: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    folding_source: str = ""
    build_args: dict[str, Any] = field(default_factory=dict)

    def target(self) -> Target:
        """The board's dataflow target at this design's clock."""
        base = get_target(self.board)
        return base.model_copy(update={"clock_mhz": self.clock_mhz or base.clock_mhz,
                                       "name": f"{self.board}@{self.clock_mhz or base.clock_mhz:g}"})


def _dpu(row: dict[str, Any]) -> DPUFigure:
    d = row["dpu"]
    return DPUFigure(network=row["network"], build=row.get("build"), zoo_name=row["zoo_name"],
                     input_hw=tuple(row["input_hw"]), gops=row.get("gops"), board=row["board"], arch=str(d["arch"]),
                     cores=int(d["cores"]), clock_mhz=float(d["clock_mhz"]), fps_single=row.get("fps_single"),
                     fps_multi=row.get("fps_multi"), latency_ms=row.get("latency_ms"), release=row["release"],
                     source=row["source"])


def _dataflow(row: dict[str, Any]) -> DataflowFigure:
    folding = row.get("folding")
    return DataflowFigure(design=row["design"], network=row["network"], build=row.get("build"),
                          w_bits=int(row["w_bits"]), a_bits=int(row["a_bits"]), in_bits=row.get("in_bits"),
                          board=row["board"], clock_mhz=row.get("clock_mhz"),
                          folding=tuple(tuple(int(v) for v in f) for f in folding) if folding else None,
                          fps_measured=row.get("fps_measured"), fps_batch=row.get("fps_measured_batch"),
                          resources={k: v for k, v in (row.get("resources") or {}).items() if v is not None},
                          source=row.get("source", ""), folding_source=row.get("folding_source", "") or "",
                          build_args=dict(row.get("build_args") or {}))


@lru_cache(maxsize=2)
def _load(path: str) -> dict[str, list[dict[str, Any]]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise HardwareModelError(f"{path}: expected a mapping with 'dpu:' and 'dataflow:' lists")
    return data


def dpu_figures(path: str | Path = PUBLISHED) -> list[DPUFigure]:
    """Every published DPU figure (rebuildable or not)."""
    return [_dpu(r) for r in _load(str(path)).get("dpu", [])]


def dataflow_figures(path: str | Path = PUBLISHED) -> list[DataflowFigure]:
    """Every published dataflow design."""
    return [_dataflow(r) for r in _load(str(path)).get("dataflow", [])]
