"""The records every layer shares: CheckpointMeta (what a model file says about itself), Variant and Result, and
THE results columns (CSV, CLI and HTML report all read them from here)."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgecnn.errors import EdgeCNNError


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
    Column("latency_ms_torch_b1", "torch b1 ms", "{:.3f}"),
    Column("latency_ms_onnxruntime_b1", "ORT b1 ms", "{:.3f}"),
    Column("throughput_onnxruntime_b64", "ORT b64 img/s", "{:.0f}"),
)

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


#: Columns every CSV row has, in table order; other measurements (backends, batch sizes, hardware targets) follow
#: as extra columns, sorted.
BASE_COLUMNS = [
    "variant_id", "variant", "base_model", "recipe", "precision", "accuracy", "macro_f1", "params", "macs",
    "size_bytes", "latency_ms_torch_b1", "throughput_torch_b64", "artefact",
]

#: The meta keys that describe the model itself (what a deployable file of it must carry).
MODEL_META_KEYS = ("arch", "arch_args", "classes", "input_size", "normalization", "pruned", "tta")


@dataclass
class CheckpointMeta:
    """What a checkpoint (or deployable file) says about its model: enough to rebuild and use it with nothing else.

    Written by every stage that saves a model, read by every verb that loads one; ``extra`` holds what one kind
    of file adds (precision, dtype, low-bit spec, teacher, ...)."""

    arch: str
    classes: list[str]
    input_size: int
    normalization: dict[str, list[float]]
    arch_args: dict[str, Any] = field(default_factory=dict)
    pruned: dict[str, Any] | None = None
    pretrained: str | None = None
    experiment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS: ClassVar[tuple[str, ...]] = ("arch", "arch_args", "classes", "input_size", "normalization", "pruned",
                                         "pretrained", "experiment")

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> CheckpointMeta:
        known = {k: meta[k] for k in cls.FIELDS if k in meta}
        return cls(**known, extra={k: v for k, v in meta.items() if k not in cls.FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping stored in files (None fields left out)."""
        out = {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}
        return {**out, **self.extra}

    def model_only(self, **extra: Any) -> dict[str, Any]:
        """The keys that describe the model (MODEL_META_KEYS), plus ``extra``: the meta of a derived artefact."""
        return {**{k: v for k, v in self.to_dict().items() if k in MODEL_META_KEYS}, **extra}


@dataclass
class Variant:
    """One model artefact and its lineage; the id is a hash of the lineage, stable across reruns."""

    name: str
    base_model: str
    recipe: list[str]
    precision: str = "fp32"
    bits: dict[str, Any] | None = None
    artefact: str = ""
    lineage_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        lineage = {"base": self.base_model, "recipe": self.recipe, "precision": self.precision,
                   "bits": self.bits, **self.lineage_extra}
        return hashlib.sha256(json.dumps(lineage, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Result:
    """The measurements of one variant: one row of the results table."""

    variant: Variant
    metrics: dict[str, Any]

    def row(self) -> dict[str, Any]:
        v = self.variant
        return {"variant_id": v.id, "variant": v.name, "base_model": v.base_model, "recipe": "+".join(v.recipe),
                "precision": v.precision, "artefact": v.artefact, **self.metrics}

    def to_dict(self) -> dict[str, Any]:
        return {"variant": asdict(self.variant) | {"id": self.variant.id}, "metrics": self.metrics}


def _csv_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def write_results(results: list[Result], run_dir: str | Path) -> tuple[Path, Path]:
    """Write results.csv (flat, one row per variant) and results.json (full records)."""
    return write_rows([r.row() for r in results], run_dir, [r.to_dict() for r in results])


def write_rows(rows: list[dict[str, Any]], run_dir: str | Path, records: list[dict] | None = None) -> tuple[Path, Path]:
    """Write result rows as results.csv and results.json (base columns first, then the others sorted)."""
    run_dir = Path(run_dir)
    lead = ["model"] if any("model" in r for r in rows) else []
    extra = sorted({k for row in rows for k in row} - set(BASE_COLUMNS) - set(lead))
    columns = lead + BASE_COLUMNS + extra
    csv_path, json_path = run_dir / "results.csv", run_dir / "results.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_value(row.get(c, "")) for c in columns})
    json_path.write_text(json.dumps({"columns": columns, "rows": rows, "records": records or []}, indent=1))
    return csv_path, json_path


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The result rows of a run ([] when it has no results.json yet); an unreadable file is a one-line error."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())["rows"]
        if not isinstance(rows, list):
            raise TypeError
        return rows
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = (f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError)
                  else "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "no 'rows' list")
        raise EdgeCNNError(f"{path} is not a readable results file ({detail}), e.g. cut short by a full disk or an "
                           "interrupted run; rerun the same `edgecnn run` to write it again (finished stages are "
                           "reused)") from None


def add_speedups(results: list[Result], batches: list[int]) -> None:
    """Speed ratios measured in this run: vs PyTorch fp32 eager and vs ONNX Runtime fp32, per batch size."""
    base = results[0].metrics
    for r in results:
        for b in batches:
            ort = r.metrics.get(f"latency_ms_onnxruntime_b{b}")
            if ort:
                if base.get(f"latency_ms_torch_b{b}"):
                    r.metrics[f"speedup_vs_torch_fp32_b{b}"] = round(base[f"latency_ms_torch_b{b}"] / ort, 3)
                if base.get(f"latency_ms_onnxruntime_b{b}"):
                    r.metrics[f"speedup_vs_ort_fp32_b{b}"] = round(base[f"latency_ms_onnxruntime_b{b}"] / ort, 3)
        if r is not results[0] and base.get("size_bytes"):
            r.metrics["size_ratio_vs_fp32"] = round(r.metrics["size_bytes"] / base["size_bytes"], 4)
