"""Which refinement of the power-of-two INT8 file (AMD Quark XINT8) loses least, decided on the validation split.

For each model, the trained run of benchmarks/claims/precision.py is reused (its fp32 export and split); the pow2 file
is built with no refinement, AdaRound and AdaQuant at several iteration counts, each with or without cross-layer
equalization first (a "cle+" prefix: cle, cle+adaround:500), on the run's 512 calibration images or, with an "@N"
suffix (adaround:500@2048), on N train images (the first 512 of them the same); a "~R" suffix on a refinement is
QDrop with drop ratio R (adaround:500~0.5: each fine-tuned layer's input is half quantized, half float).
Each file's validation drop against the float model decides; the test accuracy of every file is recorded beside it
and read only to report the chosen one.

Usage: python benchmarks/studies/pow2_refine.py [--models mobilenet_v2]
       [--settings none,cle,cle+adaround:500,adaround:500@2048,adaround:500~0.5]
       [--out benchmarks/results/pow2_refine.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, command, finished_precision_run, machine, run_rows  # noqa: E402

DEFAULT_SETTINGS = "none,adaround:500,adaround:2000,adaquant:500,adaquant:2000"


def bench_model(name: str, data_root: str, settings: list[tuple[bool, str, int, int | None, float]],
                keep=lambda partial: None) -> dict:
    from edgecnn.compress.pow2 import quantize_int8_pow2, validation_drop_points
    from edgecnn.compress.quantize import calibration_images
    from edgecnn.data.prepare import prepare_data
    from edgecnn.measure.runtimes import file_predictor, predict_file
    from edgecnn.train.checkpoint import load_checkpoint

    cfg, run_dir = finished_precision_run(name, data_root, "benchmarks/studies/pow2_refine.py")
    ((fp32, fp32_onnx),) = run_rows(run_dir, ("fp32",)).values()
    model, _ = load_checkpoint(run_dir / "train" / "best.safetensors")
    model.eval()
    data = prepare_data(cfg.data, seed=cfg.seed, split_file=run_dir / "split.json")
    test = data.splits["test"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-pow2-") as tmp:
        for cle, refine, iterations, n_calib, drop_ratio in settings:
            n_calib = n_calib or cfg.quantize.calib
            calib = calibration_images(data, n_calib, cfg.seed)  # a seeded permutation: 512 is a prefix of 2048
            t0 = time.perf_counter()
            path = quantize_int8_pow2(fp32_onnx, Path(tmp) / f"{cle}-{refine}-{iterations}-{n_calib}-{drop_ratio}.onnx",
                                      calib, refine=refine, iterations=iterations, exclude=cfg.quantize.exclude,
                                      cle=cle, drop_ratio=drop_ratio)
            build_s = time.perf_counter() - t0
            drop = validation_drop_points(model, path, data)
            logits = predict_file(file_predictor(path, "onnxruntime"), test, data.normalization)
            acc = float((logits.argmax(1) == test.labels).float().mean())
            rows.append({"cle": cle, "refine": refine, "iterations": iterations if refine != "none" else 0,
                         "calibration_images": n_calib, "drop_ratio": drop_ratio,
                         "validation_drop_points": drop, "test_accuracy": acc,
                         "test_minus_fp32_points": round(100 * (acc - fp32["accuracy"]), 3),
                         "build_s": round(build_s, 1)})
            print(name, json.dumps(rows[-1]), flush=True)
            keep({"fp32_test_accuracy": fp32["accuracy"], "settings": rows})  # a long list keeps what it measured
    chosen = min(rows, key=lambda r: (r["validation_drop_points"], r["build_s"]))
    return {"fp32_test_accuracy": fp32["accuracy"], "settings": rows, "chosen_on_validation": chosen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--models", default="mobilenet_v2")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS)
    ap.add_argument("--out", default=str(RESULTS / "pow2_refine.json"))
    args = ap.parse_args()
    settings = []
    for item in args.settings.split(","):
        cle = item.startswith("cle")
        item, _, n_calib = item.partition("@")
        item, _, drop_ratio = item.partition("~")
        refine, _, iterations = item.removeprefix("cle").removeprefix("+").partition(":")
        settings.append((cle, refine or "none", int(iterations or 0), int(n_calib) if n_calib else None,
                         float(drop_ratio or 1.0)))
    result = {"benchmark": "pow2_refine", "command": command(), "machine": machine(), "data": args.data, "models": {}}
    def write() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))

    for name in args.models.split(","):
        def keep(partial: dict, name: str = name) -> None:
            result["models"][name] = partial
            write()

        result["models"][name] = bench_model(name, args.data, settings, keep)
        write()
    print(json.dumps({k: v["chosen_on_validation"] for k, v in result["models"].items()}, indent=1))


if __name__ == "__main__":
    main()
