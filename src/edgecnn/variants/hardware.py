"""Hardware estimates of one variant's deployable file on the experiment's targets, as results columns.

Each target gets ``fps_<target>``, ``latency_ms_<target>`` and ``energy_mj_<target>`` (dataflow targets also LUT,
BRAM, DSP and whether the design fits, and with FINN installed ``finn_<target>``: "builds" or the node FINN refused
and why); a target that cannot run the variant gets ``fps_<target> = "n/a (why)"``, never a blank. The precision
registry says which kinds of target run which files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecnn import columns as col
from edgecnn.errors import EdgeCNNError
from edgecnn.variants.precisions import Precision

#: What a kind of target runs, for the "n/a" reason.
RUNS = {"dpu": "INT8 files", "systolic": "INT8 files", "dataflow": "low-bit QONNX files",
        "cpu": "float and INT8 ONNX files"}


def _file_for(precision: Precision, artefact: Path, kind: str) -> Path:
    """A dataflow target prices a low-bit variant's FINN-ready file when it has one (variants/lowbit_sweep.py)."""
    if kind == "dataflow" and precision.runtime == "qonnx":
        from edgecnn.variants.lowbit_sweep import finn_file

        if finn_file(artefact).exists():
            return finn_file(artefact)
    return artefact


def hardware_columns(precision: Precision, artefact: Path, targets: list[str]) -> dict[str, Any]:
    """The estimate columns of the file ``artefact`` of a ``precision`` variant on each of ``targets``: the one
    producer of every hardware column (estimates are cheap and follow the estimators' current code, so they are
    computed on every run, never cached with a variant)."""
    from edgecnn.hw import estimate, get_target

    row: dict[str, Any] = {}
    for name in targets:
        target = get_target(name)
        suffix = Path(artefact).suffix
        if suffix == ".tflite":
            row[col.fps(name)] = "n/a (the estimators read ONNX files: see the int8 ONNX variants of this model)"
            continue
        if suffix != ".onnx":
            row[col.fps(name)] = "n/a (a PyTorch checkpoint, no deployable file)"
            continue
        if target.kind not in precision.hw_kinds:
            row[col.fps(name)] = f"n/a ({target.kind} targets run {RUNS[target.kind]})"
            continue
        try:
            est = estimate(_file_for(precision, Path(artefact), target.kind), target)
        except EdgeCNNError as exc:  # a graph the estimator cannot read: say why, per target
            row[col.fps(name)] = f"n/a ({exc})"
            continue
        summary = est.summary_row()
        for key in col.HW_KEYS + (col.DATAFLOW_KEYS if target.kind == "dataflow" else ()):
            if summary.get(key) is not None:
                row[col.hw(key, name)] = summary[key]
        if "finn" in est.extra:  # FINN's own front end ran on the file: its verdict and its FPS
            finn = est.extra["finn"]
            row[col.hw(col.FINN, name)] = "builds" if finn["compiled"] else finn["verdict"]
            if finn.get("fps"):
                row[col.hw(col.FPS_FINN, name)] = round(finn["fps"], 1)
        # mappability: the layers the target leaves to the host CPU, and why
        row[col.hw(col.UNMAPPED, name)] = [f"{u.name} ({u.op}): {u.why}" for u in est.unmapped]
    return row
