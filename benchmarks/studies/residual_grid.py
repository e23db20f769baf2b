"""Residual adds on one grid (FINN builds them) against two grids (edgecnn's default): accuracy and FINN's verdict.

Usage: python benchmarks/studies/residual_grid.py [--data ../shared/data/eurosat]
       [--out benchmarks/results/residual_grid.json]
Protocol (fixed before the run): the quickstart's residual CustomNet (stem 16, widths 32-64-128, one residual block
per stage) trained 6 float epochs on the EuroSAT development set (seeded split 80/10/10), then two W4A4 QAT variants
from the same float checkpoint (`schedule: direct`, 2 epochs each): `w4a4` (each input of a residual add on its own
grid) and `w4a4-shared` (`residual: shared`). Reported once: test accuracy of each (the run's test split), and, with
FINN installed, FINN's verdict on each variant's FINN-ready file and its FPS on zcu104-finn beside edgecnn's.
The run directory (benchmarks/runs/residual-grid) is reused on a rerun. About 6 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, EUROSAT_AUGMENT, RESULTS, RUNS, command, machine  # noqa: E402

CONFIG = {
    "name": "residual-grid", "seed": 0, "precisions": ["fp32"], "targets": ["zcu104-finn"],
    "data": {"image_size": 64, "split": {"val": 0.1, "test": 0.1}, "augment": EUROSAT_AUGMENT},
    "model": {"name": "customnet", "args": {"stem_channels": 16, "channels": [32, 64, 128], "blocks": 1,
                                            "residual": True}},
    "train": {"epochs": 6, "batch_size": 128, "lr": 3e-3, "scheduler": "onecycle", "amp": "off",
              "channels_last": False},
    "lowbit": {"variants": ["w4a4", "w4a4-shared"], "specs": {"w4a4-shared": {"default": "w4a4",
                                                                              "residual": "shared"}},
               "schedule": "direct", "epochs": 2, "targets": ["zcu104-finn"], "parity_images": 0},
    "evaluate": {"latency_batches": [1]},
}
KEYS = ("accuracy", "fps_zcu104-finn", "fps_finn_zcu104-finn", "finn_zcu104-finn", "lut_zcu104-finn",
        "dsp_zcu104-finn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--runs", default=str(RUNS))
    parser.add_argument("--out", default=str(RESULTS / "residual_grid.json"))
    args = parser.parse_args()
    import edgecnn
    from edgecnn.config import parse_config

    cfg = parse_config({**CONFIG, "output": args.runs, "data": {**CONFIG["data"], "root": args.data}})
    start = time.time()
    outcome = edgecnn.run(cfg, show_progress=False)
    rows = json.loads((Path(outcome.run_dir) / "results.json").read_text())
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    picked = {r["precision"]: {k: r.get(k) for k in KEYS} for r in rows if r.get("precision")}
    from edgecnn.hw import estimate
    from edgecnn.hw.finn.tool import finn_python

    for variant in CONFIG["lowbit"]["variants"]:  # FINN's verdict on each variant's FINN-ready file, when installed
        path = Path(outcome.run_dir) / "lowbit" / variant / "model.finn.qonnx.onnx"
        if finn_python() is not None and path.exists() and variant in picked:
            est = estimate(path, "zcu104-finn", finn=True)
            picked[variant]["finn_zcu104-finn"] = est.extra["finn"]["verdict"]
            picked[variant]["fps_finn_zcu104-finn"] = est.extra["finn"]["fps"]
    result = {"command": command(), "machine": machine(), "config": CONFIG,
              "run_dir": str(outcome.run_dir), "wall_s": round(time.time() - start, 1), "variants": picked}
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(picked, indent=1, default=str))


if __name__ == "__main__":
    main()
