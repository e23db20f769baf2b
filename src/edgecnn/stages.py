"""Stage bookkeeping for a run directory: a content hash of each stage's inputs, skip when unchanged.

A finished stage writes ``stage.json`` (inputs hash + outputs). On a rerun with the same hash it is skipped;
with a different hash the old folder is moved aside (``<stage>.prev-<hash>``), never deleted, so no result
already computed is lost.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Stage:
    def __init__(self, run_dir: Path, name: str, inputs: dict[str, Any]) -> None:
        self.name = name
        self.dir = run_dir / name
        self.inputs = inputs
        self.hash = content_hash(inputs)

    @property
    def record_path(self) -> Path:
        return self.dir / "stage.json"

    def cached(self) -> dict[str, Any] | None:
        """The outputs of a finished run of this stage with the same inputs, else None."""
        if not self.record_path.exists():
            return None
        record = json.loads(self.record_path.read_text())
        if record.get("hash") == self.hash and record.get("status") == "done":
            log.info("stage %s: inputs unchanged (%s), skipped", self.name, self.hash)
            return record["outputs"]
        return None

    def interrupted(self) -> bool:
        """True when an earlier run of this stage with the same inputs started but did not finish."""
        inputs_path = self.dir / "inputs.json"
        return (inputs_path.exists() and not self.record_path.exists()
                and json.loads(inputs_path.read_text()).get("hash") == self.hash)

    def begin(self, keep_partial: bool) -> None:
        """Prepare the folder; move work done for other inputs aside unless it is ours to resume."""
        inputs_path = self.dir / "inputs.json"
        if self.dir.exists() and not (keep_partial and self.interrupted()):
            old = json.loads(inputs_path.read_text()).get("hash", "unknown") if inputs_path.exists() else "unknown"
            target = self.dir.with_name(f"{self.name}.prev-{old}")
            n = 1
            while target.exists():
                target = self.dir.with_name(f"{self.name}.prev-{old}-{n}")
                n += 1
            shutil.move(str(self.dir), str(target))
            log.info("stage %s: inputs changed; previous outputs kept in %s", self.name, target)
        self.dir.mkdir(parents=True, exist_ok=True)
        inputs_path.write_text(json.dumps({"hash": self.hash, "inputs": self.inputs}, indent=1, default=str))

    def finish(self, outputs: dict[str, Any]) -> dict[str, Any]:
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hash": self.hash, "status": "done", "outputs": outputs}, indent=1, default=str))
        tmp.replace(self.record_path)
        return outputs
