"""How far ONNX Runtime's integer kernels (after edgecnn's exact CPU rewrites) are from the same file run as written.

Quark's power-of-two files, run as written, execute in ONNX Runtime as float convolutions between quantize /
dequantize nodes. edgecnn's CPU sessions rewrite them (measure/ort_fusion.py) so that they run as QLinearConv. Both
compute the same model; they differ where ONNX Runtime's integer requantization rounds a value to the other
neighbouring step. For each finished deploy run this script scores the test split both ways and reports top-1
agreement, accuracy and the largest logit difference, for the power-of-two file and the Quark peer's file.

Usage: python benchmarks/studies/ort_fusion_agreement.py [--models customnet,resnet18,mobilenet_v2]
       [--out benchmarks/results/ort_fusion_agreement.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, command, finished_precision_run, machine, run_rows  # noqa: E402


def as_written(path: Path):
    """ONNX Runtime on the file as it is (full graph optimizations, no edgecnn rewrite)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--models", default="customnet,resnet18,mobilenet_v2")
    ap.add_argument("--out", default=str(RESULTS / "ort_fusion_agreement.json"))
    args = ap.parse_args()

    import onnx

    from edgecnn.data.prepare import prepare_data
    from edgecnn.measure.ort_fusion import fuse_for_cpu
    from edgecnn.measure.runtimes import file_predictor, predict_file

    result = {"benchmark": "ort_fusion_agreement", "command": command(),
              "machine": machine(), "split": "test", "models": {}}
    for name in args.models.split(","):
        cfg, run_dir = finished_precision_run(name, args.data, "benchmarks/studies/ort_fusion_agreement.py")
        data = prepare_data(cfg.data, seed=cfg.seed)
        test = data.splits["test"]
        files = {"edgecnn int8-pow2": run_rows(run_dir, ("int8-pow2",))["int8-pow2"][1],
                 "Quark XINT8 defaults": run_dir / "peers" / "model-quark-xint8.onnx"}
        rows = {}
        for label, path in files.items():
            report = fuse_for_cpu(onnx.load(str(path)))
            written = predict_file(as_written(path), test, data.normalization)
            fused = predict_file(file_predictor(path, "onnxruntime"), test, data.normalization)
            rows[label] = {
                "file": f"{path.parent.name}/{path.name}", "rewrites": {
                    "biases": report.biases, "uint8_zero_points": report.uint8_zero_points, "clamps": report.clamps},
                "top1_agreement": round((written.argmax(1) == fused.argmax(1)).float().mean().item(), 5),
                "accuracy_as_written": round((written.argmax(1) == test.labels).float().mean().item(), 5),
                "accuracy_integer_kernels": round((fused.argmax(1) == test.labels).float().mean().item(), 5),
                "max_abs_logit_difference": round(float((written - fused).abs().max()), 5),
                "test_images": len(test)}
        result["models"][name] = rows
        print(name, json.dumps(rows), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
