"""Why edgecnn's INT8 file is slower at batch 1 in OpenVINO than OpenVINO's own (NNCF) file: an A/B on the finished
runs of benchmarks/claims/deploy.py, reading their files as they are (no variant is rebuilt).

Per model: edgecnn's int8-ptq file (asymmetric uint8 activations), the same calibration with symmetric int8
activations (``quantize.symmetric: true``), and NNCF's default PTQ of the same fp32 file on the same calibration
images. For each: test accuracy, how OpenVINO's CPU plugin runs its convolutions (runtime precision of the compiled
graph's nodes), where OpenVINO spends a batch-1 inference (its profiling counters by node type and kernel),
and batch-1 / batch-64 latency in OpenVINO (and ONNX Runtime for the ONNX files) as medians of
alternating rounds.

Usage: python benchmarks/studies/openvino_ab.py [--models customnet,resnet18,mobilenet_v2] [--rounds 9]
       [--out benchmarks/results/openvino_ab.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, ROOT, command, finished_precision_run, machine, run_rows  # noqa: E402
from deploy import nncf_int8, openvino_conv_precisions, quantizers, score, timed_rounds  # noqa: E402


def openvino_profile(path: Path, threads: int, size: int, runs: int = 200) -> dict:
    """Where OpenVINO spends a batch-1 inference of the file: its per-node profiling counters summed over ``runs``
    inferences, by node type and by kernel (exec type), in ms per inference, largest first."""
    import collections

    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(20):
        request.infer({0: x})
    by_type: collections.Counter = collections.Counter()
    by_kernel: collections.Counter = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if not str(info.status).endswith("EXECUTED"):  # NOT_RUN and OPTIMIZED_OUT nodes cost nothing
                continue
            ms = info.real_time.total_seconds() * 1e3 / runs
            by_type[info.node_type] += ms
            by_kernel[f"{info.node_type}/{info.exec_type}"] += ms
    top = lambda c: {k: round(v, 4) for k, v in c.most_common(12)}  # noqa: E731
    return {"total_ms": round(sum(by_type.values()), 4), "by_node_type_ms": top(by_type),
            "by_kernel_ms": top(by_kernel), "nodes_executed": len(request.get_profiling_info())}


def bench_model(name: str, data_root: str, rounds: int, work: Path) -> dict:
    import torch

    from edgecnn.compress.quantize import calibration_images, quantize_int8_ptq
    from edgecnn.data.prepare import prepare_data

    cfg, run_dir = finished_precision_run(name, data_root, "benchmarks/studies/openvino_ab.py")
    files = {p: path for p, (_, path) in run_rows(run_dir, ("fp32", "int8-ptq")).items()}
    data = prepare_data(cfg.data, seed=cfg.seed, split_file=run_dir / "split.json")
    calib = calibration_images(data, cfg.quantize.calib, cfg.seed)  # the images the run's int8-ptq used
    q = cfg.quantize
    sym = quantize_int8_ptq(files["fp32"], work / f"{name}-int8-ptq-symmetric.onnx", calib, method=q.method,
                            per_channel=q.per_channel, symmetric_activations=True, exclude=q.exclude)
    nncf = nncf_int8(files["fp32"], calib, work)
    threads = torch.get_num_threads()
    candidates = {
        "edgecnn int8-ptq (asymmetric u8 activations) / openvino": (files["int8-ptq"], "openvino"),
        "edgecnn int8-ptq (asymmetric u8 activations) / onnxruntime": (files["int8-ptq"], "onnxruntime"),
        "edgecnn int8-ptq symmetric / openvino": (sym, "openvino"),
        "edgecnn int8-ptq symmetric / onnxruntime": (sym, "onnxruntime"),
        "OpenVINO NNCF int8 / openvino": (nncf, "openvino"),
    }
    table = {}
    for key, (path, backend) in candidates.items():
        table[key] = {**score(path, backend, data, threads), "quantize_nodes": quantizers(path)}
        if backend == "openvino":
            table[key]["openvino_conv_precisions"] = openvino_conv_precisions(path, threads)
            table[key]["openvino_profile_b1"] = openvino_profile(path, threads, cfg.data.image_size)
    speed = timed_rounds(candidates, cfg.data.image_size, threads, rounds)
    for key in table:
        table[key].update(speed[key])
    nncf_key = "OpenVINO NNCF int8 / openvino"
    ratios = {k: {"b1_median": round(v["latency_ms_b1"] / table[nncf_key]["latency_ms_b1"], 3),
                  "b1_fastest_round": round(v["latency_ms_b1_fastest_round"]
                                            / table[nncf_key]["latency_ms_b1_fastest_round"], 3)}
              for k, v in table.items() if k != nncf_key}
    return {"run_dir": str(run_dir.relative_to(ROOT)), "table": table, "ratio_vs_nncf_openvino": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--models", default="customnet,resnet18,mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=str(RESULTS / "openvino_ab.json"))
    args = ap.parse_args()
    result = {"benchmark": "openvino_ab", "command": command(),
              "machine": machine(), "rounds": args.rounds, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgecnn-ovab-") as tmp:
        for name in args.models.split(","):
            result["models"][name] = bench_model(name, args.data, args.rounds, Path(tmp))
            print(name, json.dumps(result["models"][name]["ratio_vs_nncf_openvino"]), flush=True)
            Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
