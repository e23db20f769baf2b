"""The search on EuroSAT: scaling of workers on one PostgreSQL study, and the search's own overhead per trial.

Usage: python benchmarks/perf/search.py [--data ../shared/data/eurosat] [--trials 8] [--per-class 150] [--epochs 1]
       [--repeats 3] [--storage postgresql://...] [--out benchmarks/results/search.json]
The same number of trials (a small CustomNet space, --epochs each, 1 torch thread per worker) runs once with 1
worker and once with 2 workers, each on a fresh study of the same PostgreSQL server (a throw-away server is
started when --storage is not given: initdb/pg_ctl on PATH, run as the postgres user when root). Reported: wall
time of each, their ratio, and the median fraction of a trial spent outside training (sampling, pricing the
candidate, storage). Both runs train the same candidates: the 2-worker study is given the 1-worker study's
sampled values as queued trials (each worker draws from its own seed, so two fresh studies would train different
architectures, whose training times differ by far more than the scaling being measured). The issue's long search
(3 hours, Pareto fronts against the reference CustomNet) is not this script's default: it needs the full budget.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, EUROSAT_AUGMENT, RESULTS, command, machine  # noqa: E402


def start_postgres(port: int = 55433):
    """A throw-away PostgreSQL server: (url, stop)."""
    root = Path(tempfile.mkdtemp(prefix="edgecnn-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        subprocess.run(["chown", "postgres", str(root)], check=True)
    subprocess.run([*as_pg, "initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*as_pg, "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*as_pg, "pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop"], capture_output=True)
        subprocess.run(["rm", "-rf", str(root)])

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def experiment(data: str, per_class: int, trials: int, storage: str, study: str, workers: int, out: Path,
               epochs: int = 1):
    from edgecnn.config import parse_config

    return parse_config({
        "name": f"search-bench-{workers}w", "output": str(out), "seed": 0, "precisions": ["fp32"], "targets": [],
        "data": {"root": data, "image_size": 64, "limit_per_class": per_class, "split": {"val": 0.2, "test": 0.2},
                 "augment": EUROSAT_AUGMENT},
        "model": {"name": "customnet", "args": {"stem_channels": 16, "blocks": 1}},
        "train": {"batch_size": 64, "lr": 3e-3},
        "search": {"space": {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
                             "model.args.channels": {"length": {"low": 1, "high": 3}, "each": [16, 32, 64]}},
                   "objectives": ["accuracy", "fps@kv260"], "trials": trials, "epochs": epochs, "workers": workers,
                   "threads": 1, "storage": storage, "study": study, "pruner": "none"}}, "benchmarks/perf/search.py")


def one_pair(args, url: str, tmp: Path) -> dict:
    """1 worker, then 2 workers on the same candidates; each run's wall time and where it went."""
    import optuna

    from edgecnn.search_runner import open_study, search
    from edgecnn.study.objectives import parse_objectives

    runs: dict = {}
    first_params: list[dict] = []
    for workers in (1, 2):
        study = f"bench-{workers}w-{uuid.uuid4().hex[:6]}"
        cfg = experiment(args.data, args.per_class, args.trials, url, study, workers, tmp / study, args.epochs)
        if workers > 1:  # the same candidates as the 1-worker run, queued in its order
            queued = open_study(url, study, cfg.search, parse_objectives(cfg.search.objectives))
            for params in first_params:
                queued.enqueue_trial(params)
        t0 = time.perf_counter()
        outcome = search(cfg)
        wall = time.perf_counter() - t0
        summary = json.loads(Path(outcome.summary_path).read_text())
        done = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
        # where the wall time went: each trial's own time (slower when two share the cores) and the workers' idle
        # share (a worker waiting while the other finishes the last trial)
        busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done
                   if t.datetime_complete and t.datetime_start)
        runs[f"{workers}_workers"] = {
            "wall_s": round(wall, 1), "counts": outcome.counts,
            "overhead_fraction_median": summary["overhead_fraction_median"],
            "pareto_front": len(summary["pareto_front"]), "trial_seconds_sum": round(busy, 1),
            "busy_fraction": round(busy / (workers * wall), 3)}
        print(workers, "workers:", round(wall, 1), "s", outcome.counts, flush=True)
        if workers == 1:
            first_params = [t.params for t in sorted(done, key=lambda t: t.number)]
    one, two = runs["1_workers"], runs["2_workers"]
    finished = {w: sum(r["counts"].get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")) for w, r in runs.items()}
    slow = two["trial_seconds_sum"] / one["trial_seconds_sum"]  # the same candidates, two at a time
    return {"runs": runs, "speedup_2_vs_1_workers": round(one["wall_s"] / two["wall_s"], 3),
            "same_number_of_trials": len(set(finished.values())) == 1,  # a surplus trial would skew the ratio
            "trial_slowdown_2_vs_1_workers": round(slow, 3), "speedup_if_never_idle": round(2 / slow, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=1, help="training epochs of one trial")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (new candidates each); the median counts")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--out", default=str(RESULTS / "search.json"))
    args = ap.parse_args()

    import torch

    stop = None
    url = args.storage
    if url is None:
        url, stop = start_postgres()
    result = {"benchmark": "search", "data": args.data, "command": command(),
              "machine": machine(), "trials": args.trials,
              "per_class": args.per_class, "epochs_per_trial": args.epochs, "cpu_count": os.cpu_count(),
              "storage": url.split("@")[-1], "torch_threads_per_worker": 1, "torch_version": torch.__version__,
              "same_candidates": True, "pairs": []}  # queued from the 1-worker study (see the docstring)
    try:
        with tempfile.TemporaryDirectory(prefix="edgecnn-search-bench-") as tmp:
            for _ in range(args.repeats):
                result["pairs"].append(one_pair(args, url, Path(tmp)))
                speedups = [p["speedup_2_vs_1_workers"] for p in result["pairs"]]
                result["speedup_2_vs_1_workers"] = statistics.median(speedups)
                result["speedups"] = speedups
                result["runs"] = result["pairs"][0]["runs"]  # the first pair, as earlier versions wrote it
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(result, indent=1))
    finally:
        if stop is not None:
            stop()
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "pairs")}))


if __name__ == "__main__":
    main()
