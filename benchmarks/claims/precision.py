"""Precision variants on real runtimes: ONNX parity for every zoo model, and FP32 / FP16 / INT8 PTQ / INT8 QAT
accuracy, size and speed for CustomNet, ResNet-18 and MobileNetV2 trained on EuroSAT.

Usage: python benchmarks/claims/precision.py [--data ../shared/data/eurosat] [--models customnet,resnet18,mobilenet_v2]
       [--skip-parity] [--out benchmarks/results/precision.json]
Each model is one edgecnn pipeline run (benchmarks/runs/precision-<model>); a rerun skips finished stages.
CustomNet reuses the configuration of benchmarks/claims/train_eurosat.py. Speed ratios are measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import BENCH, DEFAULT_DATA, EUROSAT_AUGMENT, RESULTS, RUNS, command, machine  # noqa: E402

COMMON = {
    "seed": 0,
    "data": {"image_size": 64, "split": {"val": 0.1, "test": 0.1}, "augment": EUROSAT_AUGMENT},
    "precisions": ["fp32", "fp16", "int8-ptq", "int8-qat"],
    "quantize": {"calib": 512, "method": "minmax", "per_channel": True, "qat_epochs": 1.0, "qat_lr": 5e-5},
    "evaluate": {"latency_batches": [1, 64], "latency_repeats": 30, "backends": ["torch", "onnxruntime"]},
}


def _train_eurosat_config() -> dict:
    """benchmarks/claims/train_eurosat.py's configuration, so its trained checkpoint is reused (train stage skipped)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_eurosat", BENCH / "claims" / "train_eurosat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


_TE = _train_eurosat_config()
# ResNet-18 and MobileNetV2 train at about 50-60 images/s on 2 cores (6 min an epoch), so they get short budgets;
# channels_last is fixed (the layout they were trained with) so that their trained runs stay valid.
MODELS = {
    "customnet": {"model": _TE["model"], "train": _TE["train"], "name": _TE["name"], "data": _TE["data"]},
    "resnet18": {"model": {"name": "resnet18"}, "train": {"epochs": 3, "batch_size": 128, "lr": 2e-3,
                                                          "weight_decay": 0.05, "channels_last": True},
                 "quantize": {**COMMON["quantize"], "qat_epochs": 0.3}},
    "mobilenet_v2": {"model": {"name": "mobilenet_v2"}, "quantize": {**COMMON["quantize"], "qat_epochs": 0.3},
                     "train": {"epochs": 3, "batch_size": 128, "lr": 3e-3, "weight_decay": 0.05,
                               "channels_last": True}},
}


def parity(data, out_dir: Path, n: int = 256) -> dict[str, float]:
    """Max |ONNX - PyTorch| of the logits on ``n`` test images for every registered model (random weights)."""
    import numpy as np
    import torch

    from edgecnn.data.batches import iterate_batches
    from edgecnn.export.onnx import export_onnx
    from edgecnn.measure.runtimes import ort_predictor
    from edgecnn.models import create_model, list_models

    test = data.splits["test"]
    x = next(iterate_batches(test, n, data.normalization))[0]
    diffs = {}
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name, num_classes=len(data.classes), input_size=64).eval()
        path = export_onnx(model, out_dir / f"{name}.onnx", 64, {"arch": name})
        with torch.no_grad():
            ref = torch.cat([model(x[i:i + 64]) for i in range(0, n, 64)]).numpy()
        predict = ort_predictor(path)
        got = np.concatenate([predict(x[i:i + 64].numpy()) for i in range(0, n, 64)])
        diffs[name] = float(np.abs(got - ref).max())
        path.unlink()
        print(f"parity {name}: max abs diff {diffs[name]:.2e}", flush=True)
    return diffs


def interleaved_speed(rows: dict[str, dict], input_size: int, rounds: int = 5, repeats: int = 20) -> dict:
    """Batch-1 latency of PyTorch fp32 eager and each ONNX artefact, measured in alternation (``rounds`` rounds);
    medians of the round medians, and the speed ratios the issue asks for."""
    import statistics

    import numpy as np
    import torch

    from edgecnn.measure.latency import time_callable, torch_latency
    from edgecnn.measure.runtimes import ort_predictor
    from edgecnn.train.checkpoint import load_checkpoint

    model, _ = load_checkpoint(rows["fp32"]["checkpoint"])
    x = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    predictors = {p: ort_predictor(r["artefact"], torch.get_num_threads()) for p, r in rows.items()
                  if str(r["artefact"]).endswith(".onnx") and p in ("fp32", "int8-ptq", "int8-qat")}
    samples: dict[str, list[float]] = {"torch-fp32": [], **{f"ort-{p}": [] for p in predictors}}
    for _ in range(rounds):
        samples["torch-fp32"].append(torch_latency(model, input_size, 1, repeats=repeats, warmup=3).median_ms)
        for p, predict in predictors.items():
            samples[f"ort-{p}"].append(statistics.median(time_callable(lambda: predict(x), 3, repeats)) * 1e3)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {}
    for p in ("int8-ptq", "int8-qat"):
        if f"ort-{p}" in med:
            ratios[f"{p}_vs_torch_fp32_b1"] = med["torch-fp32"] / med[f"ort-{p}"]
            ratios[f"{p}_vs_ort_fp32_b1"] = med["ort-fp32"] / med[f"ort-{p}"]
    return {"median_ms_b1": med, "samples_ms_b1": samples, "ratios": ratios, "rounds": rounds, "repeats": repeats,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--models", default="customnet,resnet18,mobilenet_v2")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "precision.json"))
    args = ap.parse_args()

    import torch

    from edgecnn.config import parse_config
    from edgecnn.pipeline import run

    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    result = {"benchmark": "precision", "data": args.data, "command": command(), "machine": machine(),
              "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "models": previous.get("models", {}), "parity": previous.get("parity", {})}
    for name in args.models.split(","):
        spec = {**COMMON, "name": f"precision-{name}", **MODELS[name], "output": str(RUNS)}
        spec["data"] = {**spec["data"], "root": args.data}
        cfg = parse_config(spec, f"benchmarks/claims/precision.py:{name}")
        t0 = time.perf_counter()
        outcome = run(cfg, show_progress=False)
        rows = {r["precision"]: r for r in outcome.results}
        fp32 = rows["fp32"]
        keep = ("accuracy", "macro_f1", "agreement_with_fp32", "size_bytes", "size_ratio_vs_fp32", "params", "macs",
                "latency_ms_torch_b1", "latency_ms_onnxruntime_b1", "throughput_onnxruntime_b64",
                "throughput_torch_b64",
                "speedup_vs_torch_fp32_b1", "speedup_vs_ort_fp32_b1", "speedup_vs_torch_fp32_b64",
                "speedup_vs_ort_fp32_b64", "onnx_max_abs_diff", "artefact")
        result["models"][name] = {
            "run_dir": str(outcome.run_dir), "seconds": time.perf_counter() - t0, "train": outcome.fit.to_dict(),
            "variants": {p: {k: r.get(k) for k in keep if r.get(k) is not None} for p, r in rows.items()},
            "accuracy_drop_points": {p: round(100 * (fp32["accuracy"] - r["accuracy"]), 3) for p, r in rows.items()},
        }
        for p, r in rows.items():
            r["checkpoint"] = str(outcome.fit.best_checkpoint)
        result["models"][name]["speed_interleaved"] = interleaved_speed(rows, cfg.data.image_size)
        print(json.dumps({name: result["models"][name]["accuracy_drop_points"]}), flush=True)
        print(json.dumps({name: result["models"][name]["speed_interleaved"]["ratios"]}), flush=True)
        out_path.write_text(json.dumps(result, indent=1))
    if not args.skip_parity:
        from edgecnn.config import DataConfig
        from edgecnn.data.prepare import prepare_data

        data = prepare_data(DataConfig(root=args.data), seed=0)
        result["parity"] = parity(data, RUNS / "parity")
        result["parity_max"] = max(result["parity"].values())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
