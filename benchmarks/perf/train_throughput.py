"""Training images/s of edgecnn's trainer vs a plain PyTorch loop: same model, batch size and in-memory data.

The plain loop is what a user writes by hand: fp32, NCHW, a TensorDataset of normalized float images and a
DataLoader. edgecnn's trainer runs with its defaults (channels_last, bf16 autocast where the CPU has native
bf16, uint8 images augmented per batch). The two are measured alternately, `--rounds` times, in one run; the
JSON holds every measurement and the ratio of the medians.

Usage: python benchmarks/perf/train_throughput.py [--data DIR] [--images 2560] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, EUROSAT_AUGMENT, command, machine  # noqa: E402

if TYPE_CHECKING:
    import torch

MODEL_ARGS = {"stem_channels": 32, "stem_stride": 2, "channels": [64, 128, 256], "blocks": 1, "residual": True}


def plain_loop(images: torch.Tensor, labels: torch.Tensor, batch: int, mean, std) -> float:
    """A hand-written fp32 loop; returns training images/s over one pass."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from edgecnn.models import create_model

    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=images.shape[-1], **MODEL_ARGS).train()
    x = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    loader = DataLoader(TensorDataset(x, labels), batch_size=batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0, seen = time.perf_counter(), 0
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(yb)
    return seen / (time.perf_counter() - t0)


def edgecnn_trainer(data, batch: int, chosen: dict) -> float:
    import torch

    from edgecnn.config import TrainConfig
    from edgecnn.models import create_model
    from edgecnn.train.trainer import fit

    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=data.image_size, **MODEL_ARGS)
    cfg = TrainConfig(epochs=1, batch_size=batch, warmup_epochs=0)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, data, cfg, tmp, seed=0, meta={"arch": "customnet"}, show_progress=False)
    chosen.update(result.numerics)
    return result.train_images_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=2560)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()

    import torch

    from edgecnn.config import DataConfig
    from edgecnn.data.batches import TensorSet
    from edgecnn.data.prepare import prepare_data
    from edgecnn.models import create_model, profile_model

    root = args.data if Path(args.data).is_dir() else None
    data = prepare_data(DataConfig(root=root, split={"val": 0.05, "test": 0.05}, augment=EUROSAT_AUGMENT), seed=0)
    n = min(args.images, len(data.splits["train"]))
    data.splits["train"] = TensorSet(data.splits["train"].images[:n], data.splits["train"].labels[:n])
    data.splits["val"] = TensorSet(data.splits["val"].images[:128], data.splits["val"].labels[:128])
    train = data.splits["train"]
    plain, ours, chosen = [], [], {}
    for r in range(args.rounds):
        plain.append(plain_loop(train.images, train.labels, args.batch, data.normalization.mean,
                                data.normalization.std))
        ours.append(edgecnn_trainer(data, args.batch, chosen))
        print(f"round {r + 1}: plain {plain[-1]:.0f} img/s, edgecnn {ours[-1]:.0f} img/s", flush=True)
    prof = profile_model(create_model("customnet", input_size=data.image_size, **MODEL_ARGS), data.image_size)
    result = {
        "benchmark": "train_throughput",
        "command": command(),
        "machine": machine(),
        "model": {"name": "customnet", "args": MODEL_ARGS, "params": prof.params, "macs": prof.macs},
        "images_per_pass": n, "batch": args.batch, "image_size": data.image_size, "data": str(data.root),
        "plain_images_per_s": plain, "edgecnn_images_per_s": ours,
        "plain_median": statistics.median(plain), "edgecnn_median": statistics.median(ours),
        "speedup_median": statistics.median(ours) / statistics.median(plain),
        "edgecnn_numerics": chosen,  # the format and layout the trainer measured and chose
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"speedup (median edgecnn / median plain): {result['speedup_median']:.2f}x")


if __name__ == "__main__":
    main()
