"""Helpers shared by the benchmark scripts: where results and runs go, the machine and command records every result
carries, the reference CustomNet run and reuse of its trained stage.

The scripts live in benchmarks/<kind>/ (claims, perf, studies) and start with
``sys.path.insert(0, str(Path(__file__).resolve().parents[1]))`` so that ``from _common import ...`` finds this file;
importing it makes every kind folder importable too, so a script reuses another's functions by module name
(``from deploy import ...``) wherever either of them lives. torch is imported only where a function needs it, so that
``--help`` stays fast.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent  # benchmarks/
ROOT = BENCH.parent  # the repository
RESULTS = BENCH / "results"  # every result JSON, flat, whatever the script's kind
RUNS = BENCH / "runs"  # the scripts' edgecnn run directories (not in git)
KINDS = ("claims", "perf", "studies")
DEFAULT_DATA = str(ROOT.parent / "shared" / "data" / "eurosat")
#: EuroSAT's augmentation (aerial patches look the same flipped or turned): edgecnn's defaults before they became
#: safe for any dataset (all off); every EuroSAT benchmark sets it, so its recorded figures stay reproducible.
EUROSAT_AUGMENT = {"hflip": True, "vflip": True, "rot90": True, "jitter": 0.1, "crop_pad": 0}
REFERENCE_RUN = "bench-train-eurosat"  # written by benchmarks/claims/train_eurosat.py

for _kind in KINDS:
    if str(BENCH / _kind) not in sys.path:
        sys.path.insert(1, str(BENCH / _kind))


def command() -> str:
    """The command that is running, as typed from the repository root (``python benchmarks/<kind>/<name>.py ...``),
    for the ``"command"`` key every result JSON carries next to its machine record."""
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    return shlex.join(["python", shown, *sys.argv[1:]])


def reference_config(data: str, runs: str) -> dict:
    """The config of benchmarks/claims/train_eurosat.py (the 98% CustomNet), pointed at ``data`` and ``runs``."""
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
    import torch

    from edgecnn.train.autotune import machine_signature

    sig = machine_signature(torch.device("cpu"))
    return {"cpu": sig["cpu"], "cpu_flags": sig["flags"], "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "processor": platform.processor() or platform.machine()}


def precision_bench():
    """benchmarks/claims/precision.py as a module (its COMMON settings and MODELS), for scripts that reuse its trained
    runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("precision_bench", BENCH / "claims" / "precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished_precision_run(name: str, data_root: str, caller: str):
    """The config and directory of model ``name``'s finished run of benchmarks/claims/precision.py / deploy.py, read as
    it is (scripts that study its files rebuild or change nothing in it)."""
    from edgecnn.config import parse_config

    bench = precision_bench()
    spec = {**bench.COMMON, "name": f"precision-{name}", **bench.MODELS[name], "output": str(RUNS)}
    spec["data"] = {**spec["data"], "root": data_root}
    cfg = parse_config(spec, f"{caller}:{name}")
    return cfg, RUNS / cfg.name


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
        raise SystemExit(f"{run_dir} has no {', '.join(missing)} result: run benchmarks/claims/deploy.py first")
    return found
