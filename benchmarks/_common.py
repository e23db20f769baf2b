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
