"""Data larger than memory: the memory-mapped decoded cache against the in-memory one, and a 60,000-image 224x224
dataset trained for one epoch with bounded resident memory.

Part 1 (EuroSAT): the reference CustomNet trains on the same random subset of the training split read from the
in-memory cache and from the memory-mapped cache, alternated ``--rounds`` times in one process (edgecnn's trainer,
one epoch each); images/s medians and their ratio. Then one full pass of the batch iterator over the whole
training split (as an epoch reads it) records the resident pages of the mapping (peak, from /proc/self/smaps)
against the bytes the in-memory cache holds.

Part 2 (synthetic): generates an ImageFolder of ``--synthetic`` 224x224 JPEGs (10 classes; outside the repository,
deleted afterwards unless --keep), then runs `edgecnn train` on it for one epoch in a child process (decode into
the cache included) and records the child's peak resident memory (ru_maxrss), wall time and images/s.

Usage: python benchmarks/perf/data_scale.py [--data DIR] [--rounds 5] [--synthetic 60000] [--out ...]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, EUROSAT_AUGMENT, command, machine, reference_config  # noqa: E402

if TYPE_CHECKING:
    import numpy as np

    from edgecnn.data.batches import TensorSet


def mapping_rss_kb() -> int:
    """Resident kB of this process's mappings of edgecnn cache files (images-*.npy)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0] if line else ""
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            inside = line.rstrip().endswith(".npy") and "/images-" in line
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def subset(data, rows: np.ndarray) -> TensorSet:
    import torch

    return data.splits["train"].take(torch.as_tensor(rows))


def trainer_images_per_s(data, train: TensorSet, cfg: dict, seed: int) -> float:
    import torch

    from edgecnn.models import create_model
    from edgecnn.train.options import TrainConfig
    from edgecnn.train.trainer import fit

    torch.manual_seed(seed)
    model = create_model("customnet", num_classes=len(data.classes), input_size=data.image_size,
                         **cfg["model"]["args"])
    val = data.splits["val"]
    run = replace(data, splits={"train": train, "val": val.take(torch.arange(256)), "test": val})
    tcfg = TrainConfig(**{**cfg["train"], "epochs": 1, "warmup_epochs": 0})
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, run, tcfg, tmp, seed=seed, meta={"arch": "customnet"}, show_progress=False)
    return result.train_images_per_s


def part_eurosat(args) -> dict:
    import numpy as np

    from edgecnn.data.batches import iterate_batches
    from edgecnn.data.options import DataConfig
    from edgecnn.data.prepare import prepare_data

    cfg = reference_config(args.data, "unused")
    loaded = {storage: prepare_data(DataConfig(**{**cfg["data"], "storage": storage}), seed=cfg["seed"])
              for storage in ("memory", "mmap")}
    assert loaded["mmap"].splits["train"].images.mapped and not loaded["memory"].splits["train"].images.mapped
    n_train = len(loaded["mmap"].splits["train"])
    rows = np.sort(np.random.default_rng(0).choice(n_train, size=min(args.images, n_train), replace=False))
    speeds: dict[str, list[float]] = {"memory": [], "mmap": []}
    for r in range(args.rounds):
        for storage in (("memory", "mmap") if r % 2 == 0 else ("mmap", "memory")):
            data = loaded[storage]
            speeds[storage].append(trainer_images_per_s(data, subset(data, rows), cfg, seed=r))
        print(f"round {r + 1}: memory {speeds['memory'][-1]:.0f} img/s, mmap {speeds['mmap'][-1]:.0f} img/s",
              flush=True)
    # one epoch's reads over the whole training split, as the trainer makes them
    mapped = loaded["mmap"]
    mapped.splits["train"].images.release()
    peak = 0
    for _ in iterate_batches(mapped.splits["train"], cfg["train"]["batch_size"], mapped.normalization, shuffle=True,
                             seed=1, augment=mapped.augmentation):
        peak = max(peak, mapping_rss_kb())
    in_memory_bytes = loaded["memory"].splits["train"].images.array.nbytes
    med = {k: statistics.median(v) for k, v in speeds.items()}
    return {
        "model": cfg["model"], "train": cfg["train"], "images_per_round": len(rows), "rounds": args.rounds,
        "images_per_s": speeds, "median_images_per_s": med, "mmap_vs_memory": med["mmap"] / med["memory"],
        "target_mmap_vs_memory": 0.95,
        "in_memory_cache_bytes": in_memory_bytes, "mmap_peak_resident_bytes": peak * 1024,
        "mmap_resident_fraction": peak * 1024 / in_memory_bytes, "target_resident_fraction": 0.25,
        "note": "in-memory bytes = the whole decoded cache this process holds; mmap = peak resident pages of the "
                "mapping during one epoch of reads (the page cache holds the file for every process, reclaimable)",
    }


def make_synthetic(root: Path, n: int, size: int = 224, classes: int = 10) -> None:
    """``n`` JPEGs: smooth random colour fields with a class-dependent tint (learnable, compress well)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    tints = rng.uniform(-40, 40, size=(classes, 3))
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        small = np.clip(rng.uniform(40, 215, size=(8, 8, 3)) + tints[c], 0, 255).astype(np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(
            root / f"class{c}" / f"{i:06d}.jpg", quality=85)


def part_synthetic(args) -> dict:
    root = Path(args.synthetic_dir)
    t0 = time.perf_counter()
    if not root.exists() or sum(1 for _ in root.rglob("*.jpg")) != args.synthetic:
        shutil.rmtree(root, ignore_errors=True)
        make_synthetic(root, args.synthetic)
    generate_s = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="edgecnn-scale-"))
    cache = work / "cache"
    cfg = {"name": "scale", "seed": 0, "output": str(work / "runs"),
           "data": {"root": str(root), "image_size": 224, "split": {"val": 0.02, "test": 0.02},
                    "augment": EUROSAT_AUGMENT, "normalize": "imagenet", "cache_dir": str(cache)},
           "model": {"name": "customnet", "args": {"stem_channels": 16, "stem_stride": 4, "channels": [32, 64],
                                                   "blocks": 1}},
           "train": {"epochs": 1, "batch_size": 128, "warmup_epochs": 0, "amp": "off", "channels_last": True}}
    (work / "scale.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgecnn", "--quiet", "train", str(work / "scale.yaml")],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"edgecnn train failed: {proc.stderr[-2000:]}")
    stage = json.loads((work / "runs" / "scale" / "train" / "stage.json").read_text())["outputs"]
    cache_bytes = sum(p.stat().st_size for p in cache.glob("images-*.npy"))
    result = {
        "images": args.synthetic, "image_size": 224, "generate_seconds": round(generate_s, 1),
        "train_command_wall_seconds": round(wall, 1), "train_seconds": round(stage["train_seconds"], 1),
        "train_images_per_s": round(stage["train_images_per_s"], 1), "val_acc": stage["best_val_acc"],
        "peak_resident_bytes": peak_kb * 1024, "target_peak_resident_bytes": 4 * 2**30,
        "decoded_cache_bytes": cache_bytes, "model": cfg["model"],
        "note": "peak resident memory of the whole `edgecnn train` process (decode + one epoch + validation), "
                "against a decoded cache of decoded_cache_bytes that an in-memory cache would have to hold",
    }
    shutil.rmtree(work, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=3840, help="training images per timed epoch")
    ap.add_argument("--synthetic", type=int, default=60000)
    ap.add_argument("--synthetic-dir", default=os.path.join(tempfile.gettempdir(), "edgecnn-synthetic-224"))
    ap.add_argument("--keep", action="store_true", help="keep the generated images")
    ap.add_argument("--skip", choices=["eurosat", "synthetic"], default=None)
    ap.add_argument("--out", default="benchmarks/results/data_scale.json")
    args = ap.parse_args()
    result = {"benchmark": "data_scale", "command": command(), "machine": machine()}
    if args.skip != "eurosat":
        result["eurosat"] = part_eurosat(args)
        print(json.dumps({k: v for k, v in result["eurosat"].items() if k != "images_per_s"}, indent=1), flush=True)
    if args.skip != "synthetic":
        result["synthetic"] = part_synthetic(args)
        print(json.dumps(result["synthetic"], indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
