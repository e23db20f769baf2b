"""What the seed's architecture table (examples/seed-table-2.yaml) costs to train, per model and device.

For every model of the example: training images/s at the example's input size, measured over a few optimizer
steps (forward, backward, AdamW) on random data, on the CPU and, where CUDA is present, on the GPU (bf16 autocast);
then the hours the example's budget (epochs x training images) takes at that speed. A short measurement, not a
training: it says which parts need which hardware.

Usage: python benchmarks/perf/table2_cost.py [--batch 8] [--steps 2] [--devices cpu,cuda] [--out ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import ROOT, command, machine  # noqa: E402

if TYPE_CHECKING:
    import torch

EXAMPLE = ROOT / "examples" / "seed-table-2.yaml"
TRAIN_IMAGES = 19_440  # 80% of the 24,300-image EuroSAT development set


def images_per_s(name: str, size: int, batch: int, steps: int, device: torch.device) -> float:
    import torch
    import torch.nn.functional as F

    from edgecnn.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_size=size).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    amp = device.type == "cuda"
    times = []
    for i in range(steps + 1):  # the first step warms up (allocations, kernel selection)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gpu-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--out", default="benchmarks/results/table2_cost.json")
    args = ap.parse_args()

    import torch

    from edgecnn.config import load_config
    from edgecnn.devices import cuda_missing_reason, describe
    from edgecnn.models import create_model, profile_model

    cfg = load_config(EXAMPLE)
    size, devices = cfg.data.image_size, []
    for name in args.devices.split(","):
        if name == "cuda" and cuda_missing_reason() is not None:
            print(f"cuda: skipped ({cuda_missing_reason()})")
            continue
        devices.append(torch.device(name))
    rows = []
    for sub in cfg.per_model():
        epochs = sub.train.epochs
        prof = profile_model(create_model(sub.model.name, num_classes=10, input_size=size), size)
        row = {"model": sub.model.name, "epochs": epochs, "params": prof.params, "macs": prof.macs, "devices": {}}
        for device in devices:
            batch = args.gpu_batch if device.type == "cuda" else args.batch
            ips = images_per_s(sub.model.name, size, batch, args.steps, device)
            row["devices"][describe(device)] = {
                "batch": batch, "train_images_per_s": round(ips, 2),
                "hours_for_budget": round(epochs * TRAIN_IMAGES / ips / 3600, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    totals = {d: round(sum(r["devices"][d]["hours_for_budget"] for r in rows), 1) for d in rows[0]["devices"]}
    result = {"benchmark": "table2_cost", "command": command(),
              "machine": machine(), "example": "examples/seed-table-2.yaml",
              "image_size": size, "train_images": TRAIN_IMAGES, "models": rows, "total_hours": totals,
              "method": "median time of a few AdamW steps on random data (fp32 channels_last on CPU, bf16 autocast "
                        "on GPU), extrapolated to epochs x training images; validation and evaluation not included"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
