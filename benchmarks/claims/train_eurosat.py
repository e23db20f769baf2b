"""Train a CustomNet from scratch on the full EuroSAT development set and score it on its held-out test split.

Usage: python benchmarks/claims/train_eurosat.py [--data ../shared/data/eurosat] [--epochs N] [--label-smoothing 0.1]
       [--name bench-train-eurosat] [--out benchmarks/results/train_eurosat.json]
The test split is never used for model selection (best checkpoint = best validation accuracy).

Recorded runs: train_eurosat.json (the reference, label smoothing 0.1: the teacher of the other benchmarks) and
train_eurosat-ls0.json (--label-smoothing 0 --name bench-train-eurosat-ls0 --out
benchmarks/results/train_eurosat-ls0.json: a distillation teacher, since label-smoothed teachers distil worse).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, command, machine  # noqa: E402

CONFIG = {
    "name": "bench-train-eurosat",
    "seed": 0,
    "data": {"image_size": 64, "split": {"val": 0.1, "test": 0.1},
             "augment": {"hflip": True, "vflip": True, "rot90": True, "jitter": 0.1, "crop_pad": 0}},
    "model": {"name": "customnet", "args": {"stem_channels": 32, "stem_stride": 2, "channels": [64, 128, 256],
                                            "blocks": 1, "residual": True, "dropout": 0.1}},
    "train": {"epochs": 35, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05,
              "scheduler": "onecycle", "warmup_epochs": 1, "label_smoothing": 0.1, "amp": "auto",
              "channels_last": True},
    "evaluate": {"latency_batches": [1, 64]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=CONFIG["train"]["epochs"])
    ap.add_argument("--label-smoothing", type=float, default=CONFIG["train"]["label_smoothing"])
    ap.add_argument("--name", default=CONFIG["name"], help="Run name (folder under --runs).")
    ap.add_argument("--runs", default="benchmarks/runs")
    ap.add_argument("--out", default="benchmarks/results/train_eurosat.json")
    args = ap.parse_args()

    from edgecnn.config import parse_config
    from edgecnn.pipeline import run

    cfg_dict = json.loads(json.dumps(CONFIG))
    cfg_dict["data"]["root"] = args.data
    cfg_dict["train"]["epochs"] = args.epochs
    cfg_dict["train"]["label_smoothing"] = args.label_smoothing
    cfg_dict["name"] = args.name
    cfg_dict["output"] = args.runs
    cfg = parse_config(cfg_dict, "benchmarks/claims/train_eurosat.py")
    t0 = time.perf_counter()
    outcome = run(cfg, fresh=True)
    wall = time.perf_counter() - t0
    row = outcome.results[0]
    fit = outcome.fit.to_dict()
    result = {
        "benchmark": "train_eurosat",
        "command": command(),
        "machine": machine(),
        "config": cfg_dict,
        "test_accuracy": row["accuracy"],
        "test_macro_f1": row["macro_f1"],
        "best_val_accuracy": fit["best_val_acc"],
        "best_epoch": fit["best_epoch"],
        "epochs_run": fit["epochs_run"],
        "params": row["params"],
        "macs": row["macs"],
        "checkpoint_bytes": row["size_bytes"],
        "train_seconds": fit["train_seconds"],
        "wall_seconds_total": wall,
        "train_images_per_s": fit["train_images_per_s"],
        "amp": fit["amp"],
        "split_sizes": {k: sum(v.values()) for k, v in outcome.data_report["counts"].items()},
        "per_class_f1": row["per_class_f1"],
        "run_dir": str(outcome.run_dir),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("test_accuracy", "params", "macs", "train_seconds", "wall_seconds_total")},
                     indent=1))


if __name__ == "__main__":
    main()
