"""GPU figures, in one short run on a machine with a CUDA GPU; elsewhere it says so and exits 0.

1. The reference CustomNet recipe (benchmarks/claims/train_eurosat.py) trained on the GPU (``train.device: cuda``,
   numerics measured by the trainer): training images/s against the CPU figure of
   benchmarks/results/train_eurosat.json, and test accuracy.
2. Inference latency of the trained model on the GPU: PyTorch CUDA fp32/fp16/bf16 at batch 1 and 64.
3. The seed architecture table (examples/seed-table-2.yaml): training images/s per model on the GPU and the hours of
   its budget (benchmarks/perf/table2_cost.py's measurement); with ``--table2-epochs N`` also trains the whole table
   for N epochs per model through `edgecnn run` (N = 100 is the full budget: hours, not minutes).

Usage: python benchmarks/perf/gpu.py [--data DIR] [--epochs 35] [--table2-epochs 0] [--out benchmarks/results/gpu.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, command, machine, reference_config  # noqa: E402


def train_reference(args, work: Path) -> dict:
    from edgecnn.config import parse_config
    from edgecnn.data.options import DataConfig
    from edgecnn.data.prepare import prepare_data
    from edgecnn.measure.gpu import TORCH_CUDA, torch_cuda_latency
    from edgecnn.measure.predict import predict_logits
    from edgecnn.pipeline import train
    from edgecnn.train.checkpoint import load_checkpoint

    cfg_dict = reference_config(args.data, str(work))
    cfg_dict["name"] = "gpu-reference"
    cfg_dict["train"].update({"device": "cuda", "epochs": args.epochs, "amp": "auto", "channels_last": "auto"})
    cfg = parse_config(cfg_dict, "gpu.py")
    t0 = time.perf_counter()
    fit = train(cfg, show_progress=False).to_dict()
    wall = time.perf_counter() - t0
    run_dir = work / "gpu-reference"
    data = prepare_data(DataConfig(**cfg_dict["data"]), cfg.seed, run_dir / "split.json")
    model, meta = load_checkpoint(run_dir / "train" / "best.safetensors")
    model = model.to("cuda")
    logits = predict_logits(model, data.splits["test"], data.normalization)
    accuracy = float((logits.argmax(1) == data.splits["test"].labels).float().mean())
    model = model.to("cpu")
    latency = [torch_cuda_latency(model, meta.input_size, b, backend, repeats=50, warmup=10).to_dict()
               for backend in TORCH_CUDA for b in (1, 64)]
    cpu = json.loads((RESULTS / "train_eurosat.json").read_text())
    return {"epochs": args.epochs, "train_images_per_s": fit["train_images_per_s"],
            "train_seconds": fit["train_seconds"],
            "wall_seconds": wall, "numerics": fit["numerics"], "device": fit["device"], "test_accuracy": accuracy,
            "cpu_reference": {"train_images_per_s": cpu["train_images_per_s"], "test_accuracy": cpu["test_accuracy"],
                              "machine": cpu.get("machine", "the project's 2-core CPU (train_eurosat.json)")},
            "speedup_vs_cpu": fit["train_images_per_s"] / cpu["train_images_per_s"], "latency": latency}


def table2(args, work: Path) -> dict:
    import torch
    from table2_cost import EXAMPLE, TRAIN_IMAGES, images_per_s

    from edgecnn.config import load_config

    cfg = load_config(EXAMPLE)
    rows = []
    for sub in cfg.per_model():
        ips = images_per_s(sub.model.name, cfg.data.image_size, 64, 5, torch.device("cuda"))
        rows.append({"model": sub.model.name, "train_images_per_s": round(ips, 1),
                     "hours_for_budget": round(sub.train.epochs * TRAIN_IMAGES / ips / 3600, 2)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"cost": rows, "total_hours": round(sum(r["hours_for_budget"] for r in rows), 2)}
    if args.table2_epochs:
        from edgecnn.config import load_config as load
        from edgecnn.pipeline import run

        run_cfg = load(EXAMPLE, {"data.root": args.data, "output": str(work), "train.epochs": args.table2_epochs})
        t0 = time.perf_counter()
        outcome = run(run_cfg, show_progress=False)
        out["run"] = {"epochs": args.table2_epochs, "wall_seconds": time.perf_counter() - t0,
                      "results": outcome.results}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=35)
    ap.add_argument("--table2-epochs", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "gpu.json"))
    args = ap.parse_args()

    import torch

    from edgecnn.devices import cuda_missing_reason, describe

    if (reason := cuda_missing_reason()) is not None:
        print(f"no GPU here ({reason}); benchmarks/perf/gpu.py measures nothing on this machine")
        return
    work = Path(tempfile.mkdtemp(prefix="edgecnn-gpu-"))
    result = {"benchmark": "gpu", "command": command(), "machine": machine(), "gpu": describe(torch.device("cuda")),
              "cuda": torch.version.cuda}
    result["reference"] = train_reference(args, work)
    print(json.dumps({k: v for k, v in result["reference"].items() if k != "latency"}), flush=True)
    result["table2"] = table2(args, work)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
