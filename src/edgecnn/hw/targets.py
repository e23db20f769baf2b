"""The target catalog: DPU boards, FPGA parts for dataflow, systolic arrays and this machine's CPU.

The figures live in targets.yaml (data, each with its public source); this module validates them with
pydantic so that a user's own YAML file of the same schema gets one-line errors with did-you-mean.
"""
from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgecnn.hw.errors import HardwareModelError, did_you_mean

CATALOG = Path(__file__).with_name("targets.yaml")
KINDS = ("dpu", "dataflow", "systolic", "cpu")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Power(_Strict):
    watts: float = Field(gt=0)
    source: str


class Resources(_Strict):
    lut: int = 0
    ff: int = 0
    bram36: float = 0
    uram: int = 0
    dsp: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"lut": self.lut, "ff": self.ff, "bram36": self.bram36, "uram": self.uram, "dsp": self.dsp}


class DPUConfig(_Strict):
    arch: str
    cores: int = Field(ge=1)
    pp: int = Field(ge=1)
    icp: int = Field(ge=1)
    ocp: int = Field(ge=1)
    ddr_gbps: float = Field(gt=0)
    ddr_source: str = ""

    @property
    def peak_ops_per_cycle(self) -> int:
        """PG338: peak operations per clock = PP x ICP x OCP x 2 (one MAC = 2 ops)."""
        return self.pp * self.icp * self.ocp * 2


class DataflowConfig(_Strict):
    utilization_cap: float = Field(default=0.85, gt=0, le=1)
    #: Width of the input/output DMA streams: FINN's Zynq shell inserts 64-bit IODMAs (ZynqBuild, InsertIODMA
    #: with axi_port_width=64), its Alveo shell 512-bit ones.
    dma_bits: int = Field(default=64, ge=8)
    #: What FINN's builder needs for this part: the FPGA part number, and the board name of FINN's Zynq shell
    #: (None: FINN can estimate and build IP for the part, but has no shell to make a bitstream for it)
    fpga_part: str | None = None
    finn_board: str | None = None


class SystolicConfig(_Strict):
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)
    dataflow: Literal["os", "ws", "is"] = "ws"
    sram_mb: float = Field(default=0.0, ge=0)
    dram_gbps: float = Field(gt=0)
    host_overhead_ms: float = Field(default=0.0, ge=0)


class CPUConfig(_Strict):
    gmacs: float = Field(gt=0)
    elementwise_gops: float = Field(default=1.0, gt=0)
    measured: str = ""


class Target(_Strict):
    """One catalog entry; exactly one of dpu/dataflow/systolic/cpu matches ``kind``."""

    name: str
    kind: Literal["dpu", "dataflow", "systolic", "cpu"]
    description: str = ""
    clock_mhz: float = Field(ge=0)
    power: Power
    resources: Resources = Resources()
    aliases: tuple[str, ...] = ()
    dpu: DPUConfig | None = None
    dataflow: DataflowConfig | None = None
    systolic: SystolicConfig | None = None
    cpu: CPUConfig | None = None

    @model_validator(mode="after")
    def _one_section(self) -> "Target":
        section = getattr(self, self.kind)
        if section is None:
            if self.kind == "dataflow":
                object.__setattr__(self, "dataflow", DataflowConfig())
            else:
                raise ValueError(f"kind '{self.kind}' needs a '{self.kind}:' section")
        others = [k for k in KINDS if k != self.kind and getattr(self, k) is not None]
        if others:
            raise ValueError(f"kind '{self.kind}' must not have a '{others[0]}:' section")
        if self.kind in ("dpu", "dataflow", "systolic") and self.clock_mhz <= 0:
            raise ValueError("clock_mhz must be > 0")
        return self

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _one_line(exc: ValidationError, entry: dict, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    name = entry.get("name", "?")
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        sections: dict[str, type[BaseModel]] = {"dpu": DPUConfig, "dataflow": DataflowConfig, "cpu": CPUConfig,
                                                "systolic": SystolicConfig, "power": Power, "resources": Resources}
        model = sections.get(str(err["loc"][0]) if len(err["loc"]) > 1 else "", Target)
        hint = did_you_mean(key, model.model_fields)
        return f"target '{name}' in {source}: unknown key '{loc}'{hint}"
    if err["type"] == "missing":
        return f"target '{name}' in {source}: missing required key '{loc}' — add it (see the catalog's schema header)"
    msg = err["msg"].removeprefix("Value error, ")
    return f"target '{name}' in {source}: {loc + ': ' if loc else ''}{msg}"


def _read_yaml(path: Path) -> list[dict]:
    import yaml

    if not path.is_file():
        raise HardwareModelError(f"targets file '{path}' does not exist — pass a YAML file with a 'targets:' list")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise HardwareModelError(f"targets file '{path}' is not valid YAML{where} — fix the syntax") from None
    entries = doc.get("targets") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise HardwareModelError(f"targets file '{path}' has no top-level 'targets:' list — see hw/targets.yaml")
    return entries


def parse_targets(entries: list[dict], source: str) -> list[Target]:
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise HardwareModelError(f"{source}: every item of 'targets:' must be a mapping, got {entry!r}")
        try:
            out.append(Target(**entry))
        except ValidationError as exc:
            raise HardwareModelError(_one_line(exc, entry, source)) from None
    return out


@lru_cache(maxsize=8)
def _catalog(extra: str | None, stamp: tuple[int, int] | None = None) -> tuple[Target, ...]:
    """Built-in + user targets; ``stamp`` (mtime, size of the user file) makes an edited file re-read."""
    targets = {t.name: t for t in parse_targets(_read_yaml(CATALOG), CATALOG.name)}
    if extra:
        for t in parse_targets(_read_yaml(Path(extra)), extra):
            targets[t.name] = t  # a user's entry replaces the built-in one of the same name
    return tuple(targets.values())


def list_targets(pattern: str = "*", extra_file: str | Path | None = None) -> list[Target]:
    """Catalog targets whose name (or an alias) matches the fnmatch ``pattern``."""
    extra = str(Path(extra_file).resolve()) if extra_file else None
    stamp = None
    if extra and Path(extra).is_file():
        st = Path(extra).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    return [t for t in _catalog(extra, stamp) if fnmatch.fnmatch(t.name, pattern)
            or any(fnmatch.fnmatch(a, pattern) for a in t.aliases)]


def get_target(name: str | Target, extra_file: str | Path | None = None) -> Target:
    """The target called ``name`` (or with that alias); unknown names get the close matches."""
    if isinstance(name, Target):
        return name
    targets = list_targets("*", extra_file)
    for t in targets:
        if name == t.name or name in t.aliases:
            return t
    names = [t.name for t in targets] + [a for t in targets for a in t.aliases]
    raise HardwareModelError(f"unknown target '{name}'{did_you_mean(name, names)} (see `edgecnn targets`)")
