"""Batch-1 latency of edgecnn's INT8 file against the peers' files, at 1 and 2 threads, with many alternating rounds:
the files of the finished runs of benchmarks/claims/deploy.py, read as they are (nothing is rebuilt or re-scored).

deploy.json's 9 rounds left the batch-1 comparison open: this 2-vCPU machine's batch-1 times jump between two
levels from round to round. Here every (file, runtime, threads) candidate is timed once per round, in an order that
is reversed every other round, for ``--rounds`` rounds; each round's figure is the median of ``--calls`` calls after
a warm-up. Reported: median and 10th percentile over rounds, and the ratio of edgecnn's fastest INT8 candidate to the
fastest peer candidate, per thread count and overall (each side at its best thread count).

Candidates: edgecnn int8-ptq in ONNX Runtime and in OpenVINO, edgecnn int8-pow2 in ONNX Runtime, edgecnn tflite-int8
in LiteRT; the peers OpenVINO NNCF INT8 (OpenVINO), TensorFlow's converter with its defaults (LiteRT) and Quark's
XINT8 defaults (ONNX Runtime). Each of
edgecnn's candidates is also compared with the fastest peer on its own (``per_candidate``), since deploy.json checks
accuracy per candidate; ``goal_met_by`` lists, per thread count, the candidates that are at least as accurate as every
peer in deploy.json and within 10% of the fastest peer here. OpenVINO's compiled properties (performance hint,
streams) are recorded.

Usage: python benchmarks/perf/b1_latency.py [--models customnet,resnet18,mobilenet_v2] [--rounds 25] [--calls 40]
       [--out benchmarks/results/b1_latency.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, ROOT, command, finished_precision_run, machine, run_rows  # noqa: E402

OURS = ("edgecnn int8-ptq / onnxruntime", "edgecnn int8-ptq / openvino", "edgecnn int8-pow2 / onnxruntime",
        "edgecnn tflite-int8 / litert")


def run_files(run_dir: Path) -> dict[str, Path]:
    """The INT8 files of a finished deploy run and the peers' files (NNCF, Quark XINT8), under this run directory."""
    files = {p: path for p, (_, path) in run_rows(run_dir, ("int8-ptq", "int8-pow2", "tflite-int8")).items()}
    files["nncf"] = run_dir / "peers" / "model-nncf-int8.xml"
    files["quark"] = run_dir / "peers" / "model-quark-xint8.onnx"
    files["litert"] = run_dir / "peers" / "model-litert-int8.tflite"
    for key in ("nncf", "quark", "litert"):
        if not files[key].exists():
            raise SystemExit(f"{run_dir} lacks the peer file {files[key].name}: run benchmarks/claims/deploy.py first")
    return files


def openvino_properties(path: Path, threads: int) -> dict:
    """The properties OpenVINO's CPU plugin compiled the file with (what 'default settings' means in this version)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    return {k: str(compiled.get_property(k)) for k in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                                                       "INFERENCE_PRECISION_HINT")}


def timed(predict, x: np.ndarray, calls: int, warmup: int = 5) -> float:
    """Median wall time of ``calls`` calls in ms, after ``warmup`` calls."""
    for _ in range(warmup):
        predict(x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def goal_met_by(name: str, per_candidate: dict) -> dict:
    """Per thread count, edgecnn's candidates that are at least as accurate as every peer (deploy.json, test split)
    and within 10% of the fastest peer's batch-1 median here."""
    deploy = RESULTS / "deploy.json"
    models = json.loads(deploy.read_text()).get("models", {}) if deploy.exists() else {}
    accurate = {k for k, v in models.get(name, {}).get("goal", {}).get("candidates", {}).items()
                if v["accuracy_at_least_every_peer"]}
    return {f"{threads}_thread{'s' * (threads > 1)}": [
        k.rsplit(" @", 1)[0] for k, v in per_candidate.items()
        if k.endswith(f"@{threads}t") and k.rsplit(" @", 1)[0] in accurate and v["ratio"] <= 1.10]
        for threads in (1, 2)}


def bench_model(name: str, data_root: str, rounds: int, calls: int) -> dict:
    from edgecnn.measure.runtimes import file_predictor

    cfg, run_dir = finished_precision_run(name, data_root, "benchmarks/perf/b1_latency.py")
    files = run_files(run_dir)
    size = cfg.data.image_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    candidates = {}
    for threads in (1, 2):
        for key, (path, backend) in {
            "edgecnn int8-ptq / onnxruntime": (files["int8-ptq"], "onnxruntime"),
            "edgecnn int8-ptq / openvino": (files["int8-ptq"], "openvino"),
            "edgecnn int8-pow2 / onnxruntime": (files["int8-pow2"], "onnxruntime"),
            "OpenVINO NNCF int8 / openvino": (files["nncf"], "openvino"),
            "edgecnn tflite-int8 / litert": (files["tflite-int8"], "litert"),
            "LiteRT int8 (TF converter defaults) / litert": (files["litert"], "litert"),
            "Quark XINT8 defaults / onnxruntime": (files["quark"], "onnxruntime"),
        }.items():
            candidates[(key, threads)] = file_predictor(path, backend, threads)
    order = list(candidates)
    samples: dict[tuple[str, int], list[float]] = {k: [] for k in order}
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            samples[k].append(timed(candidates[k], x, calls))
    table = {f"{key} @{threads}t": {
        "median_ms": round(statistics.median(v), 4),
        "p10_ms": round(float(np.percentile(v, 10)), 4),
        "rounds_ms": [round(t, 4) for t in v]} for (key, threads), v in samples.items()}

    def ratio(stat: str, threads: tuple[int, ...]) -> dict:
        rows = {k: v[stat] for k, v in table.items() if int(k.rsplit("@", 1)[1][:-1]) in threads}
        ours = min((k for k in rows if k.startswith(OURS)), key=rows.get)
        peer = min((k for k in rows if not k.startswith(OURS)), key=rows.get)
        return {"edgecnn": ours, "peer": peer, "ratio": round(rows[ours] / rows[peer], 3)}

    goal = {f"{stat}_{label}": ratio(stat, th) for stat in ("median_ms", "p10_ms")
            for label, th in (("1_thread", (1,)), ("2_threads", (2,)), ("best_thread_count", (1, 2)))}
    per_candidate = {}
    for ours in OURS:  # each of edgecnn's candidates against the fastest peer, median of rounds, per thread count
        for threads in (1, 2):
            mine = table[f"{ours} @{threads}t"]["median_ms"]
            peer = min((k for k in table if not k.startswith(OURS) and k.endswith(f"@{threads}t")),
                       key=lambda k: table[k]["median_ms"])
            per_candidate[f"{ours} @{threads}t"] = {"peer": peer, "ratio": round(mine / table[peer]["median_ms"], 3)}
    return {"run_dir": str(run_dir.relative_to(ROOT)), "goal_met_by": goal_met_by(name, per_candidate),
            "openvino_properties_2t":
            openvino_properties(files["int8-ptq"], 2), "table": table, "goal": goal,
            "per_candidate": per_candidate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--models", default="customnet,resnet18,mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--out", default=str(RESULTS / "b1_latency.json"))
    args = ap.parse_args()
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}  # other models' entries are kept
    result = {"benchmark": "b1_latency", "command": command(),
              "machine": machine(), "rounds": args.rounds, "calls": args.calls,
              "models": previous.get("models", {})}
    for name in args.models.split(","):
        result["models"][name] = bench_model(name, args.data, args.rounds, args.calls)
        print(name, json.dumps({k: v["ratio"] for k, v in result["models"][name]["goal"].items()}), flush=True)
        out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
