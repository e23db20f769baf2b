"""FINN's own execution of a trained low-bit model against edgecnn's QONNX file and Brevitas, on EuroSAT test images.

Usage: python benchmarks/claims/finn_parity.py [--data ../shared/data/eurosat] [--images 600]
         [--out benchmarks/results/finn_parity.json]
Needs FINN's environment (`edgecnn tools install finn`). Protocol (fixed before the run):
  1. `edgecnn run` of a dataflow-style CustomNet (no residual blocks; stem 16, widths 32-64-128, one plain block per
     stage) on the EuroSAT development set: 6 float epochs, then W4A4 QAT (2 epochs) -> its low-bit checkpoint and
     the FINN-ready file beside its QONNX file (model.finn.qonnx.onnx);
  2. the first ``--images`` test images of the run's split, normalized as in training;
  3. logits of: the Brevitas model as trained (float global average), the Brevitas model made FINN-ready (pooling
     summed and floor-shifted to 8 bits), qonnx's execution of model.finn.qonnx.onnx, and FINN's Python execution of
     the graph it converted to hardware layers (step_convert_to_hw), image by image;
  4. top-1 agreement and max |logit difference| between them, and the accuracy of each on the labels.
The run's directory (benchmarks/runs/finn-parity) is reused on a rerun (stages cached). About 15 minutes on 2 cores.
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
    "name": "finn-parity", "seed": 0, "precisions": ["fp32"], "targets": ["zcu104-finn"],
    "data": {"image_size": 64, "split": {"val": 0.1, "test": 0.1}, "augment": EUROSAT_AUGMENT},
    "model": {"name": "customnet", "args": {"stem_channels": 16, "channels": [32, 64, 128], "blocks": 1,
                                            "residual": False}},
    "train": {"epochs": 6, "batch_size": 128, "lr": 3e-3, "scheduler": "onecycle", "amp": "off",
              "channels_last": False},
    "lowbit": {"variants": ["w4a4"], "epochs": 2, "targets": ["zcu104-finn"], "parity_images": 0},
    "evaluate": {"latency_batches": [1]},
}


def _agreement(a, b) -> dict:
    import numpy as np

    return {"top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(a - b).max()), "identical_logits": float((a == b).all(1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--runs", default=str(RUNS))
    parser.add_argument("--out", default=str(RESULTS / "finn_parity.json"))
    args = parser.parse_args()
    import numpy as np
    import torch

    import edgecnn
    from edgecnn.compress.lowbit import finn_ready, load_lowbit_checkpoint
    from edgecnn.config import parse_config
    from edgecnn.data.batches import TensorSet, iterate_batches
    from edgecnn.export.qonnx import run_qonnx
    from edgecnn.hw import estimate, get_target
    from edgecnn.hw.finn.tool import compute_layers, require_finn, run_finn
    from edgecnn.pipeline import prepare_run_data
    from edgecnn.variants.lowbit_sweep import finn_file

    require_finn()
    cfg = parse_config({**CONFIG, "output": args.runs, "data": {**CONFIG["data"], "root": args.data}})
    start = time.time()
    outcome = edgecnn.run(cfg, show_progress=False)
    run_dir = Path(outcome.run_dir)
    checkpoint = run_dir / "lowbit" / "w4a4" / "qat" / "best.safetensors"
    qonnx_file = finn_file(checkpoint.parent.parent / "model.qonnx.onnx")
    qmodel, meta = load_lowbit_checkpoint(checkpoint)
    data = prepare_run_data(cfg, run_dir)
    test = data.splits["test"]
    n = min(args.images, len(test))
    subset = TensorSet(test.images[:n], test.labels[:n])
    x = torch.cat([b for b, _ in iterate_batches(subset, 256, data.normalization, channels_last=False)])
    labels = subset.labels.numpy()
    with torch.no_grad():
        trained = qmodel(x).numpy()
        with finn_ready(qmodel):
            ready = qmodel(x).numpy()
    t0 = time.time()
    by_qonnx = run_qonnx(qonnx_file, x.numpy())
    qonnx_s = time.time() - t0
    target = get_target("zcu104-finn")
    est = estimate(qonnx_file, target, finn=False)
    t0 = time.time()
    report = run_finn(qonnx_file, target, layers=compute_layers(qonnx_file, est),
                      target_cycles=int(est.extra["max_cycles"]), inputs=x.numpy())
    finn_s = time.time() - t0
    if report.logits is None:
        raise SystemExit(f"FINN did not execute the model: {report.verdict()}")
    by_finn = report.logits
    result = {
        "command": command(), "machine": machine(), "config": CONFIG, "images": n,
        "run_dir": str(run_dir), "file": str(qonnx_file), "finn_verdict": report.verdict(),
        "accuracy": {k: float((v.argmax(1) == labels).mean()) for k, v in
                     {"brevitas_trained": trained, "brevitas_finn_ready": ready, "qonnx_file": by_qonnx,
                      "finn_execution": by_finn}.items()},
        "finn_vs_qonnx_file": _agreement(by_finn, by_qonnx),
        "qonnx_file_vs_brevitas_finn_ready": _agreement(by_qonnx, ready),
        "finn_ready_vs_trained": _agreement(ready, trained),
        "seconds": {"qonnx_execution": round(qonnx_s, 1), "finn_build_and_execution": round(finn_s, 1),
                    "total": round(time.time() - start, 1)},
        "finn_fps": report.fps, "edgecnn_fps": est.fps,
    }
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: result[k] for k in ("accuracy", "finn_vs_qonnx_file", "qonnx_file_vs_brevitas_finn_ready",
                                             "finn_ready_vs_trained")}, indent=1))
    np.save(Path(args.runs) / "finn-parity-logits.npy", np.stack([trained, ready, by_qonnx, by_finn]))


if __name__ == "__main__":
    main()
