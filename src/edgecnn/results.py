"""Variant and Result records, and the results table of a run (results.csv + results.json)."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Columns every row has, in table order; measurements of later stages (other backends, hardware
#: targets) are appended after these as extra columns.
BASE_COLUMNS = [
    "variant_id", "variant", "base_model", "recipe", "precision", "accuracy", "macro_f1", "params", "macs",
    "size_bytes", "latency_ms_torch_b1", "throughput_torch_b64", "artefact",
]


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
    path = Path(run_dir) / "results.json"
    return json.loads(path.read_text())["rows"] if path.exists() else []
