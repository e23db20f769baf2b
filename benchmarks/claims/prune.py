"""Structured pruning to 50% of the MACs on EuroSAT: accuracy after fine-tuning and measured ONNX Runtime speed.

Usage: python benchmarks/claims/prune.py [--data ../shared/data/eurosat] [--models customnet,resnet18] [--out ...]

customnet: the CustomNet of benchmarks/claims/train_eurosat.py (its trained stage is reused when present, else trained).
resnet18: torchvision ResNet-18 (small-input stem) trained from scratch for --resnet-epochs epochs.
Each is pruned with torch-pruning (global L2 ranking, channel counts rounded to multiples of 16, the AVX-512
block of ONNX Runtime's NCHWc conv kernels) until its MACs are <= 50% of the original, fine-tuned, then both
ONNX files are timed alternately at batch 1 in ONNX Runtime fp32 in this one process (medians of 3 rounds).
Targets (issue 5): accuracy drop <= 1.0 point, speed-up >= 1.6x. Also: unstructured magnitude pruning of the
CustomNet to 50% sparsity with the polynomial schedule (per-layer sparsity table), unless --skip-unstructured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, REFERENCE_RUN, command, machine, reference_config, reuse_trained  # noqa: E402

PRUNE = {"method": "structured", "importance": "l2", "scope": "global", "target": "macs", "target_ratio": 0.5,
         "round_to": 16, "latency_repeats": 50}
FINETUNE = {"customnet": {"epochs": 8, "lr": 1e-3, "warmup_epochs": 0.5},
            "resnet18": {"epochs": 4, "lr": 1e-3, "warmup_epochs": 0.3}}


def model_config(name: str, data: str, runs: str, resnet_epochs: int) -> dict:
    cfg = reference_config(data, runs)
    if name == "resnet18":
        cfg["model"] = {"name": "resnet18", "args": {}}
        cfg["train"].update(epochs=resnet_epochs, lr=2e-3)
    cfg["evaluate"] = {"latency_batches": [1], "latency_repeats": 30}
    return cfg


def run_one(name: str, cfg: dict, prune: dict, label: str) -> dict:
    from edgecnn.config import parse_config
    from edgecnn.pipeline import run
    from edgecnn.stages import stage_outputs

    cfg = {**cfg, "name": label, "prune": prune}
    if name == "customnet":
        reuse_trained(cfg["output"], REFERENCE_RUN, label)
    t0 = time.perf_counter()
    outcome = run(parse_config(cfg, "benchmarks/claims/prune.py"), show_progress=False)
    p = stage_outputs(outcome.run_dir, "prune")
    b, a = p["before"], p["after"]
    rows = {r["variant"]: r for r in outcome.results}
    out = {
        "run_dir": str(outcome.run_dir), "prune": prune, "wall_seconds": round(time.perf_counter() - t0, 1),
        "base_test_accuracy": b["test_accuracy"], "pruned_test_accuracy": a["test_accuracy"],
        "accuracy_drop_points": round(100 * (b["test_accuracy"] - a["test_accuracy"]), 3),
        "params": [b["params"], a["params"]], "macs": [b["macs"], a["macs"]],
        "params_ratio": round(a["params_ratio"], 4), "macs_ratio": round(a["macs_ratio"], 4),
        "onnx_bytes": [b.get("onnx_bytes"), a.get("onnx_bytes")],
        "latency_ms_onnxruntime_b1": [b.get("latency_ms_onnxruntime_b1"), a.get("latency_ms_onnxruntime_b1")],
        "speedup_onnxruntime_b1": a.get("speedup_onnxruntime_b1"),
        "pipeline_rows": {k: {c: v.get(c) for c in ("accuracy", "params", "macs", "size_bytes",
                                                    "latency_ms_onnxruntime_b1", "speedup_vs_ort_fp32_b1")}
                          for k, v in rows.items()},
        "finetune": {k: v for k, v in p["finetune"].items() if k != "schedule"},
    }
    if prune["method"] == "unstructured":
        out["sparsity"] = a.get("sparsity")
        out["layers"] = p["layers"]
    else:
        out["layers"] = p["layers"]
        out["targets_met"] = {"drop_le_1pt": out["accuracy_drop_points"] <= 1.0,
                              "speedup_ge_1.6x": (out["speedup_onnxruntime_b1"] or 0) >= 1.6}
    print(json.dumps({k: out[k] for k in ("accuracy_drop_points", "macs_ratio", "params_ratio",
                                          "speedup_onnxruntime_b1")
                      if k in out} | {"model": label}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--runs", default="benchmarks/runs")
    ap.add_argument("--models", default="customnet,resnet18")
    ap.add_argument("--resnet-epochs", type=int, default=6)
    ap.add_argument("--skip-unstructured", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/prune.json")
    args = ap.parse_args()
    out = Path(args.out)
    # models measured by an earlier invocation (e.g. --models resnet18 run separately) are kept
    earlier = json.loads(out.read_text()) if out.exists() else {}
    result = {"benchmark": "prune", "data": args.data, "command": command(),
              "machine": machine(), "models": earlier.get("models", {}),
              **{k: earlier[k] for k in ("unstructured_customnet",) if k in earlier}}
    for name in args.models.split(","):
        cfg = model_config(name, args.data, args.runs, args.resnet_epochs)
        prune = {**PRUNE, "train": FINETUNE[name]}
        result["models"][name] = run_one(name, cfg, prune, f"bench-prune-{name}")
        result["models"][name]["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    if not args.skip_unstructured and "customnet" in args.models.split(","):
        cfg = model_config("customnet", args.data, args.runs, args.resnet_epochs)
        prune = {"method": "unstructured", "ratio": 0.5, "sparsity_steps": 16, "ramp": 0.75,
                 "latency_repeats": 30, "train": {"epochs": 3, "lr": 5e-4, "warmup_epochs": 0.2}}
        result["unstructured_customnet"] = run_one("customnet", cfg, prune, "bench-prune-unstructured-customnet")
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
