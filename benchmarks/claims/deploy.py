"""Deployable INT8 files for every edge runtime, each scored on its own runtime, side by side with the peers' own
quantizers: one run, same trained model, same calibration images, same test split.

Rows per model (CustomNet of train_eurosat.py, ResNet-18 and MobileNetV2 of precision.py; their trained runs are
reused, only the new variants are built):
  edgecnn int8-ptq   ONNX QDQ (ONNX Runtime static PTQ, per-channel weights), run in ONNX Runtime and in OpenVINO
  edgecnn int8-pow2  power-of-two INT8 (AMD Quark XINT8 with the fine-tuning edgecnn chose on the validation split,
                     the DPU's arithmetic), run in ONNX Runtime (integer kernels after edgecnn's exact CPU rewrites)
  edgecnn tflite-int8  fully-integer LiteRT file: TensorFlow's converter, after AdaRound on its grid where edgecnn
                     chose it on the validation split, run in LiteRT (XNNPACK)
  peers, each tool with its own defaults on the same calibration images:
  OpenVINO NNCF int8 NNCF's default PTQ of the FP32 ONNX, run in OpenVINO
  LiteRT int8        TensorFlow's converter's full-integer PTQ of the FP32 model, run in LiteRT (XNNPACK)
  Quark XINT8        Quark's XINT8 PTQ without fine-tuning, run in ONNX Runtime (the same CPU rewrites)
The goal is checked for each of edgecnn's CPU INT8 candidates: at least as accurate as every peer, and batch-1
latency within 10% of the fastest peer's.
Accuracy and macro F1 on the test split, file size, batch-1 and batch-64 latency on this CPU as medians of
alternating rounds (every candidate timed once per round, ``--rounds`` rounds), with the CPU and thread count.

Usage: python benchmarks/claims/deploy.py [--data ../shared/data/eurosat] [--models customnet,resnet18,mobilenet_v2]
       [--rounds 9] [--out benchmarks/results/deploy.json]
Needs the [pow2] and [tflite] extras, and openvino + nncf for the OpenVINO peer (pip install openvino nncf).
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
from _common import DEFAULT_DATA, RESULTS, RUNS, command, machine, precision_bench  # noqa: E402

if TYPE_CHECKING:
    import numpy as np

PRECISIONS = ["fp32", "int8-ptq", "int8-pow2", "tflite-int8"]
#: edgecnn's CPU INT8 candidates: row -> (precision, runtime)
OURS = {"edgecnn int8-ptq / onnxruntime": ("int8-ptq", "onnxruntime"),
        "edgecnn int8-ptq / openvino": ("int8-ptq", "openvino"),
        "edgecnn int8-pow2 / onnxruntime": ("int8-pow2", "onnxruntime"),
        "edgecnn tflite-int8 / litert": ("tflite-int8", "litert")}


def nncf_int8(fp32_onnx: Path, calib: np.ndarray, out_dir: Path) -> Path:
    """OpenVINO's own INT8: NNCF post-training quantization (default preset) of the FP32 model."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32_onnx))
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calib))
    path = out_dir / "model-nncf-int8.xml"
    ov.save_model(quantized, str(path))
    return path


def quark_xint8_defaults(fp32_onnx: Path, calib: np.ndarray, out_dir: Path) -> Path:
    """Quark's own power-of-two INT8: its XINT8 configuration, MinMSE calibration, no fine-tuning."""
    from edgecnn.compress.pow2 import quantize_int8_pow2

    return quantize_int8_pow2(fp32_onnx, out_dir / "model-quark-xint8.onnx", calib, refine="none")


def litert_defaults(fp32_onnx: Path, calib: np.ndarray, out_dir: Path) -> Path:
    """LiteRT's own INT8: TensorFlow's converter's full-integer PTQ of the FP32 model, no fine-tuning."""
    from edgecnn.export.onnx import read_metadata
    from edgecnn.export.tflite import export_tflite_int8

    return export_tflite_int8(fp32_onnx, out_dir / "model-litert-int8.tflite", calib, read_metadata(fp32_onnx))


def quantizers(path: Path) -> int | None:
    """Quantize nodes in a file (ONNX QuantizeLinear, OpenVINO FakeQuantize): where the requantizations sit."""
    if path.suffix == ".onnx":
        import onnx

        return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    if path.suffix == ".xml":
        import openvino as ov

        return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ops())
    return None


def openvino_conv_precisions(path: Path, threads: int) -> dict[str, int]:
    """How OpenVINO's CPU plugin runs the file's convolutions and matrix products: compiled-graph nodes of those types
    counted by their runtime precision (an int8 file whose convolutions run in f32 was not lowered to int8)."""
    import collections

    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    counts: collections.Counter = collections.Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = str(info["layerType"]) if "layerType" in info else op.get_type_name()
        if layer in ("Convolution", "FullyConnected", "MatMul", "GroupConvolution"):
            precision = str(info["runtimePrecision"]) if "runtimePrecision" in info else "?"
            counts[f"{layer}:{precision}"] += 1
    return dict(sorted(counts.items()))


def score(path: Path, backend: str, data, threads: int) -> dict:
    from edgecnn.measure.accuracy import classification_report
    from edgecnn.measure.runtimes import file_predictor, predict_file

    test = data.splits["test"]
    logits = predict_file(file_predictor(path, backend, threads), test, data.normalization)
    report = classification_report(test.labels.numpy(), logits.argmax(1).numpy(), data.classes)
    return {"accuracy": report.accuracy, "macro_f1": report.macro_f1, "test_images": report.n}


def timed_rounds(candidates: dict[str, tuple[Path, str]], size: int, threads: int, rounds: int) -> dict:
    """Batch-1 and batch-64 latency of every candidate, alternating candidates within each round."""
    import numpy as np

    from edgecnn.measure.latency import time_callable
    from edgecnn.measure.runtimes import file_predictor

    predictors = {k: file_predictor(p, b, threads) for k, (p, b) in candidates.items()}
    inputs = {b: np.random.default_rng(0).standard_normal((b, 3, size, size)).astype(np.float32) for b in (1, 64)}
    samples = {k: {1: [], 64: []} for k in predictors}
    for _ in range(rounds):
        for k, predict in predictors.items():
            for b, x in inputs.items():
                repeats = 30 if b == 1 else 5
                samples[k][b].append(statistics.median(time_callable(lambda: predict(x), 3, repeats)) * 1e3)
    out = {}
    for k, by_batch in samples.items():
        b1, b64 = statistics.median(by_batch[1]), statistics.median(by_batch[64])
        # this 2-vCPU machine's batch-1 times are bimodal (rounds jump between two levels for the same file), so
        # the fastest round is reported beside the median: the two modes do not favour any one candidate
        out[k] = {"latency_ms_b1": round(b1, 4), "latency_ms_b1_fastest_round": round(min(by_batch[1]), 4),
                  "latency_ms_b64": round(b64, 3), "images_per_s_b64": round(64e3 / b64, 1),
                  "rounds_ms_b1": [round(v, 4) for v in by_batch[1]]}
    return out


def goal_per_candidate(table: dict) -> dict:
    """For each of edgecnn's CPU INT8 candidates: accuracy against every peer and batch-1 latency against the fastest
    peer (median of rounds, and fastest round); ``met_by`` lists the candidates that meet both."""
    peers = [k for k in table if not k.startswith(("edgecnn", "fp32"))]
    fastest = min(peers, key=lambda k: table[k]["latency_ms_b1"])
    fastest_fr = min(peers, key=lambda k: table[k]["latency_ms_b1_fastest_round"])
    per = {}
    for key in OURS:
        behind = [p for p in peers if table[key]["accuracy"] < table[p]["accuracy"]]
        ratio = round(table[key]["latency_ms_b1"] / table[fastest]["latency_ms_b1"], 3)
        per[key] = {"accuracy_at_least_every_peer": not behind, "more_accurate_peers": behind,
                    "latency_ratio_vs_fastest_peer_b1": ratio, "within_10pct_of_fastest_peer": ratio <= 1.10,
                    "fastest_round_ratio": round(table[key]["latency_ms_b1_fastest_round"]
                                                 / table[fastest_fr]["latency_ms_b1_fastest_round"], 3)}
    return {"fastest_peer_b1": fastest, "fastest_peer_fastest_round": fastest_fr, "candidates": per,
            "met_by": [k for k, v in per.items() if v["accuracy_at_least_every_peer"]
                       and v["within_10pct_of_fastest_peer"]]}


def bench_model(name: str, bench, data_root: str, rounds: int) -> dict:
    import torch

    from edgecnn.compress.quantize import calibration_images
    from edgecnn.config import parse_config
    from edgecnn.data.prepare import prepare_data
    from edgecnn.measure.size import file_size
    from edgecnn.pipeline import run

    spec = {**bench.COMMON, "name": f"precision-{name}", **bench.MODELS[name], "output": str(RUNS),
            "precisions": PRECISIONS}
    spec["data"] = {**spec["data"], "root": data_root}
    cfg = parse_config(spec, f"benchmarks/claims/deploy.py:{name}")
    t0 = time.perf_counter()
    outcome = run(cfg, show_progress=False)
    rows = {r["precision"]: r for r in outcome.results}
    data = prepare_data(cfg.data, seed=cfg.seed)
    threads = torch.get_num_threads()
    calib = calibration_images(data, cfg.quantize.calib, cfg.seed)  # the images edgecnn's variants used
    peer_dir = outcome.run_dir / "peers"
    peer_dir.mkdir(exist_ok=True)
    nncf_path = nncf_int8(Path(rows["fp32"]["artefact"]), calib, peer_dir)
    quark_path = quark_xint8_defaults(Path(rows["fp32"]["artefact"]), calib, peer_dir)
    litert_path = litert_defaults(Path(rows["fp32"]["artefact"]), calib, peer_dir)
    artefacts = {p: Path(rows[p]["artefact"]) for p in PRECISIONS}
    candidates = {
        "fp32 / onnxruntime": (artefacts["fp32"], "onnxruntime"),
        **{k: (artefacts[p], b) for k, (p, b) in OURS.items()},
        "OpenVINO NNCF int8 / openvino": (nncf_path, "openvino"),
        "LiteRT int8 (TF converter defaults) / litert": (litert_path, "litert"),
        "Quark XINT8 defaults / onnxruntime": (quark_path, "onnxruntime"),
    }
    table = {}
    for key, (path, backend) in candidates.items():
        size = file_size(path) + (file_size(path.with_suffix(".bin")) if path.suffix == ".xml" else 0)  # IR = xml+bin
        table[key] = {**score(path, backend, data, threads), "size_bytes": size,
                      "quantize_nodes": quantizers(path), "file": f"{path.parent.name}/{path.name}"}
    # the pipeline's recorded accuracy and this script's re-scoring of the same file agree (same split)
    recorded = {p: rows[p]["accuracy"] for p in PRECISIONS}
    speed = timed_rounds(candidates, cfg.data.image_size, threads, rounds)
    fp32_acc = table["fp32 / onnxruntime"]["accuracy"]
    for key in table:
        table[key].update(speed[key])
        table[key]["drop_points_vs_fp32"] = round(100 * (fp32_acc - table[key]["accuracy"]), 3)
    goal = goal_per_candidate(table)
    from edgecnn.export.onnx import read_metadata
    from edgecnn.export.tflite import read_tflite_metadata

    return {"run_dir": str(outcome.run_dir), "seconds": round(time.perf_counter() - t0, 1),
            "pow2_calibration": read_metadata(artefacts["int8-pow2"]).get("calibration"),
            "tflite_calibration": read_tflite_metadata(artefacts["tflite-int8"]).get("calibration"),
            "recorded_by_pipeline": recorded,
            "rescored_matches_pipeline": all(abs(recorded[p] - table[k]["accuracy"]) < 1e-9 for p, k in (
                ("fp32", "fp32 / onnxruntime"), ("int8-ptq", "edgecnn int8-ptq / onnxruntime"),
                ("int8-pow2", "edgecnn int8-pow2 / onnxruntime"), ("tflite-int8", "edgecnn tflite-int8 / litert"))),
            "pow2_minus_fp32_points": round(100 * (recorded["int8-pow2"] - recorded["fp32"]), 3),
            "pow2_minus_int8_ptq_points": round(100 * (recorded["int8-pow2"] - recorded["int8-ptq"]), 3),
            "tflite_minus_fp32_points": round(100 * (recorded["tflite-int8"] - recorded["fp32"]), 3),
            "calibration_images": int(len(calib)), "table": table, "goal": goal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--models", default="customnet,resnet18,mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=str(RESULTS / "deploy.json"))
    args = ap.parse_args()
    bench = precision_bench()
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    result = {"benchmark": "deploy", "data": args.data, "command": command(),
              "machine": machine(), "rounds": args.rounds,
              "models": previous.get("models", {})}
    for name in args.models.split(","):
        result["models"][name] = bench_model(name, bench, args.data, args.rounds)
        summary = {k: (v["accuracy"], v["latency_ms_b1"]) for k, v in result["models"][name]["table"].items()}
        print(name, json.dumps(summary), json.dumps(result["models"][name]["goal"]), flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
