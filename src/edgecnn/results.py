"""The records every layer shares: CheckpointMeta (what a model file says about itself), Variant and Result, and
the results files (results.csv / results.json). Column names and headings live in edgecnn.columns."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgecnn import columns as col
from edgecnn.columns import BASE_COLUMNS
from edgecnn.errors import EdgeCNNError

#: The meta keys that describe the model itself (what a deployable file of it must carry).
MODEL_META_KEYS = ("arch", "arch_args", "classes", "input_size", "in_channels", "resize", "normalization", "pruned",
                   "tta")


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
    in_channels: int = 3  # 1 for grayscale data (data.channels); files written before it existed took RGB
    resize: str = "stretch"  # how a non-square image became square (data.resize): stretch, crop or pad
    extra: dict[str, Any] = field(default_factory=dict)

    FIELDS: ClassVar[tuple[str, ...]] = ("arch", "arch_args", "classes", "input_size", "in_channels",
                                         "resize", "normalization", "pruned", "pretrained", "experiment")

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


def write_rows(rows: list[dict[str, Any]], run_dir: str | Path, records: list[dict[str, Any]] | None = None
               ) -> tuple[Path, Path]:
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
            ort = r.metrics.get(col.latency("onnxruntime", b))
            if ort:
                if base.get(col.latency("torch", b)):
                    r.metrics[col.speedup("torch_fp32", b)] = round(base[col.latency("torch", b)] / ort, 3)
                if base.get(col.latency("onnxruntime", b)):
                    r.metrics[col.speedup("ort_fp32", b)] = round(base[col.latency("onnxruntime", b)] / ort, 3)
        if r is not results[0] and base.get("size_bytes"):
            r.metrics["size_ratio_vs_fp32"] = round(r.metrics["size_bytes"] / base["size_bytes"], 4)
