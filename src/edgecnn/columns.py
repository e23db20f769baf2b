"""Every results column name, in one place: the fixed columns, the per-runtime latency columns and the per-target
hardware columns (``fps_<target>``, ...). Producers and readers (variants, results, report, search) build names
with these functions, never with their own f-strings, so a column cannot be spelt two ways."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The estimate columns every target gets (an unmappable variant gets ``fps_<target> = "n/a (why)"``).
HW_KEYS = ("fps", "latency_ms", "energy_mj")
#: What dataflow targets add: resources and whether the design fits the device.
DATAFLOW_KEYS = ("lut", "bram", "dsp", "fits")
#: Per-target columns beside those: FINN's verdict and FPS, and the layers left to the host CPU.
FINN, FPS_FINN, UNMAPPED = "finn", "fps_finn", "unmapped"


def hw(key: str, target: str) -> str:
    """The column of estimate ``key`` (fps, latency_ms, energy_mj, lut, bram, dsp, fits, finn, ...) on ``target``."""
    return f"{key}_{target}"


def fps(target: str) -> str:
    return hw("fps", target)


def fits(target: str) -> str:
    return hw("fits", target)


def latency(runtime: str, batch: int) -> str:
    """Median latency in ms of ``runtime`` (torch, onnxruntime, openvino, ...) at batch size ``batch``."""
    return f"latency_ms_{runtime}_b{batch}"


def throughput(runtime: str, batch: int) -> str:
    return f"throughput_{runtime}_b{batch}"


def latency_p90(runtime: str, batch: int) -> str:
    return f"latency_p90_ms_{runtime}_b{batch}"


def runtime_unavailable(runtime: str) -> str:
    """Where a runtime that cannot run the variant says why ("n/a (reason)")."""
    return f"latency_{runtime}"


def torch_layout(batch: int) -> str:
    """The memory layout (contiguous / channels_last) PyTorch's eager latency was measured in (the faster one)."""
    return f"torch_layout_b{batch}"


def torch_latency_by_layout(batch: int) -> str:
    return f"latency_ms_torch_by_layout_b{batch}"


def speedup(reference: str, batch: int) -> str:
    """Latency ratio against the fp32 variant on ``reference`` (torch_fp32 or ort_fp32), measured in one run."""
    return f"speedup_vs_{reference}_b{batch}"


def hardware_keys(target: str) -> tuple[str, ...]:
    """Every column a target's estimate may write (what the hardware columns' one producer owns)."""
    return tuple(hw(k, target) for k in (*HW_KEYS, *DATAFLOW_KEYS, FINN, FPS_FINN, UNMAPPED))


def targets_in(rows: list[dict[str, Any]], key: str = "fps") -> list[str]:
    """The targets whose ``key`` column appears in ``rows``, in first-seen order."""
    prefix = f"{key}_"
    names = dict.fromkeys(k[len(prefix):] for r in rows for k in r if k.startswith(prefix))
    return [n for n in names if not n.startswith("finn_")] if key == "fps" else list(names)


@dataclass(frozen=True)
class Column:
    """One column of the results table: its key in a row, its heading and how a value is shown."""

    key: str
    label: str
    fmt: str = "{}"
    scale: float = 1.0

    def cell(self, row: dict[str, Any]) -> str:
        """The formatted value of ``row`` ('–' when missing or not a number where a number is expected)."""
        value = row.get(self.key)
        if value in (None, ""):
            return "–"
        if self.fmt == "{}":
            return str(value)
        try:
            return self.fmt.format(value * self.scale if self.scale != 1.0 else value)
        except (TypeError, ValueError):
            return str(value)


#: The summary columns, in order, shown by the CLI and the HTML report.
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("variant", "variant"),
    Column("accuracy", "accuracy %", "{:.2f}", 100),
    Column("agreement_with_fp32", "same as fp32 %", "{:.1f}", 100),
    Column("params", "params", "{:,}"),
    Column("macs", "MACs (M)", "{:.1f}", 1e-6),
    Column("size_bytes", "size (KiB)", "{:.1f}", 1 / 1024),
    Column(latency("torch", 1), "torch b1 ms", "{:.3f}"),
    Column(latency("onnxruntime", 1), "ORT b1 ms", "{:.3f}"),
    Column(throughput("onnxruntime", 64), "ORT b64 img/s", "{:.0f}"),
)

#: Columns every CSV row has, in table order; other measurements (backends, batch sizes, hardware targets) follow
#: as extra columns, sorted.
BASE_COLUMNS = [
    "variant_id", "variant", "base_model", "recipe", "precision", "accuracy", "macro_f1", "params", "macs",
    "size_bytes", latency("torch", 1), throughput("torch", 64), "artefact",
]


def estimate_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """One column per hardware target the rows were estimated on: its estimated FPS (or the n/a reason)."""
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("fps_"))
    return [Column(k, f"{k[4:]} FPS (est.)", "{:,.0f}") for k in keys]


def energy_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """One column per hardware target: the estimated energy per image (mJ), or the n/a reason."""
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("energy_mj_"))
    return [Column(k, f"{k[10:]} mJ/image (est.)", "{:.3g}") for k in keys]


def table_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The summary columns, then the estimated FPS per hardware target: the table the CLI and the report show."""
    return [*SUMMARY_COLUMNS, *estimate_columns(rows)]
