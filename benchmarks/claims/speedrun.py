"""Time to accuracy on EuroSAT from a cold start: `edgecnn run CONFIG` with an empty image and numerics cache (decode
and the trainer's format measurement included), wall time of the whole command and the test accuracy of its results.

Each seed is one run; ``--ablate NAME=KEY:VALUE[,KEY:VALUE]`` adds runs of the same config with the given keys
changed (one seed each, the first), for the table of what each ingredient buys. The recipe is chosen on validation
accuracy; the test split is only read by the run's final evaluation.

Usage: python benchmarks/claims/speedrun.py [--config examples/speedrun-97.yaml] [--seeds 0,1,2] [--row fp32]
                                     [--ablate no-smoothing=train.label_smoothing:0] [--out ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, ROOT, command, machine  # noqa: E402


def run_once(config: Path, data: str, seed: int, overrides: dict, work: Path, name: str, row: str = "fp32") -> dict:
    """One cold-start `edgecnn run`; returns wall seconds, the test accuracy of the ``row`` precision (and of every
    precision the config builds) and the training record."""
    cfg = yaml.safe_load(config.read_text())
    cfg.update({"seed": seed, "name": name, "output": str(work / "runs")})
    cfg["data"]["root"] = data
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cache = work / f"cache-{name}"
    env = {**os.environ, "EDGECNN_CACHE": str(cache)}  # cold: decode and numerics measured inside the timing
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgecnn", "--quiet", "run", str(path)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr[-3000:]}")
    run_dir = work / "runs" / name
    from edgecnn.results import read_results

    rows = {r["precision"]: r for r in read_results(run_dir) if r.get("precision") and "accuracy" in r}
    if row not in rows:
        raise SystemExit(f"{name}: no {row} row in the results (the config builds {sorted(rows)})")
    train = json.loads((run_dir / "train" / "stage.json").read_text())["outputs"]
    return {"seed": seed, "overrides": overrides, "wall_seconds": round(wall, 1),
            "train_seconds": round(train["train_seconds"], 1), "epochs_run": train["epochs_run"],
            "best_val_acc": train["best_val_acc"], "test_accuracy": rows[row]["accuracy"], "row": row,
            "test_accuracy_by_precision": {p: r["accuracy"] for p, r in rows.items()},
            "numerics": train["numerics"].get("label"), "train_images_per_s": round(train["train_images_per_s"], 1),
            # with export.tta: validation accuracy with and without the views (the evidence for keeping them)
            **{k: rows["fp32"][k] for k in ("val_accuracy", "val_accuracy_one_view") if k in rows.get("fp32", {})}}


def parse_ablation(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    overrides = {}
    for item in spec.split(","):
        key, _, value = item.partition(":")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "examples" / "speedrun-97.yaml"))
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ablate", action="append", default=[])
    ap.add_argument("--row", default="fp32", help="the precision whose test accuracy is held to --target "
                                                    "(int8-ptq: the deployable INT8 file)")
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--budget-s", type=float, default=600)
    ap.add_argument("--baseline", default=None,
                    help="an earlier speedrun JSON whose first run stands for the unchanged recipe: run only the "
                         "ablations (with its seed)")
    ap.add_argument("--keep", default=None,
                    help="an earlier JSON of the same config (same text): its runs are kept and their seeds not rerun")
    ap.add_argument("--out", default=str(RESULTS / "speedrun.json"))
    args = ap.parse_args()
    config = Path(args.config)
    work = Path(tempfile.mkdtemp(prefix="edgecnn-speedrun-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    if args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
        runs = [r for r in baseline["runs"] if r["seed"] == seeds[0]][:1]
        if not runs:
            raise SystemExit(f"{args.baseline} has no run of seed {seeds[0]}")
        runs[0] = {**runs[0], "from": args.baseline}
    if args.keep:
        earlier = json.loads(Path(args.keep).read_text())
        import yaml  # the configuration itself, not its comments (a moved script's path in a comment is no change)

        if yaml.safe_load(earlier["config_text"]) != yaml.safe_load(config.read_text()):
            raise SystemExit(f"{args.keep} measured another version of {config}; rerun its seeds instead")
        runs = [{**r, "from": args.keep} for r in earlier["runs"] if r["seed"] in seeds]
    for seed in [s for s in seeds if s not in {r["seed"] for r in runs}] if not args.baseline else []:
        runs.append(run_once(config, args.data, seed, {}, work, f"seed{seed}", args.row))
        print(json.dumps(runs[-1]), flush=True)
        write(args, config, runs, [])  # each seed is kept as soon as it is measured
    ablations = []
    for text in args.ablate:
        name, overrides = parse_ablation(text)
        ablations.append({"name": name, **run_once(config, args.data, seeds[0], overrides, work, name, args.row)})
        print(json.dumps(ablations[-1]), flush=True)
        write(args, config, runs, ablations)  # a long ablation list keeps what it has measured
    write(args, config, runs, ablations)
    shutil.rmtree(work, ignore_errors=True)


def write(args, config: Path, runs: list[dict], ablations: list[dict]) -> None:
    acc = [r["test_accuracy"] for r in runs]
    wall = [r["wall_seconds"] for r in runs]
    result = {"benchmark": "speedrun", "command": command(),
              "machine": machine(), "config": str(config.relative_to(ROOT))
              if config.is_relative_to(ROOT) else str(config), "config_text": config.read_text(),
              "row": args.row, "target_accuracy": args.target, "budget_seconds": args.budget_s, "runs": runs,
              "median_test_accuracy": statistics.median(acc), "min_test_accuracy": min(acc),
              "max_test_accuracy": max(acc), "median_wall_seconds": statistics.median(wall),
              "max_wall_seconds": max(wall),
              "met": all(a >= args.target for a in acc) and max(wall) <= args.budget_s,
              "ablations": ablations}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("median_test_accuracy", "min_test_accuracy", "median_wall_seconds",
                                              "met")}))


if __name__ == "__main__":
    main()
