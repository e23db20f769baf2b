"""Helpers shared by the benchmark scripts: the reference CustomNet run and reuse of its trained stage."""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat")
REFERENCE_RUN = "bench-train-eurosat"  # written by benchmarks/train_eurosat.py


def reference_config(data: str, runs: str) -> dict:
    """The config of benchmarks/train_eurosat.py (the 98% CustomNet), pointed at ``data`` and ``runs``."""
    from train_eurosat import CONFIG

    cfg = json.loads(json.dumps(CONFIG))
    cfg["data"]["root"] = data
    cfg["output"] = runs
    return cfg


def reuse_trained(runs: str, source: str, target: str) -> bool:
    """Copy the finished train stage (and split) of run ``source`` into run ``target`` so the pipeline skips
    training there (its stage hash does not include the run name). Returns True when something was copied."""
    src, dst = Path(runs) / source, Path(runs) / target
    if not (src / "train" / "stage.json").exists() or (dst / "train" / "stage.json").exists():
        return False
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "split.json", dst / "split.json")
    shutil.copytree(src / "train", dst / "train")  # its record's paths are relative to the run: valid as copied
    return True


def machine() -> dict:
    """The machine a figure was measured on: CPU model and its AVX-512/AMX flags, cores, threads, versions, so
    figures from different machines are never compared as if they were one."""
    from edgecnn.train.autotune import machine_signature

    sig = machine_signature(torch.device("cpu"))
    return {"cpu": sig["cpu"], "cpu_flags": sig["flags"], "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "processor": platform.processor() or platform.machine()}


def precision_bench():
    """benchmarks/precision.py as a module (its COMMON settings and MODELS), for scripts that reuse its trained runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("precision_bench", Path(__file__).resolve().parent / "precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished_precision_run(name: str, data_root: str, caller: str):
    """The config and directory of model ``name``'s finished run of benchmarks/precision.py / deploy.py, read as it
    is (scripts that study its files rebuild or change nothing in it)."""
    from edgecnn.config import parse_config

    bench = precision_bench()
    here = Path(__file__).resolve().parent
    spec = {**bench.COMMON, "name": f"precision-{name}", **bench.MODELS[name], "output": str(here / "runs")}
    spec["data"] = {**spec["data"], "root": data_root}
    cfg = parse_config(spec, f"{caller}:{name}")
    return cfg, here / "runs" / cfg.name


def run_rows(run_dir: Path, precisions: tuple[str, ...]) -> dict[str, tuple[dict, Path]]:
    """Each precision's result row of a finished run and its file under ``run_dir`` (the recorded path names where
    the run was made, e.g. a worktree); exits naming what is missing."""
    from edgecnn.results import read_results

    found = {}
    for row in read_results(run_dir):
        if row.get("precision") in precisions:
            recorded = Path(row["artefact"])
            found[row["precision"]] = row, run_dir / recorded.relative_to(recorded.parents[2])
    missing = [p for p in precisions if p not in found]
    if missing:
        raise SystemExit(f"{run_dir} has no {', '.join(missing)} result: run benchmarks/deploy.py first")
    return found
