"""Does AdaRound help the LiteRT INT8 file? Validation split only; nothing here is read on the test split.

TensorFlow's converter quantizes weights per channel, symmetric, scale = max|w| / 127, and activations per tensor
(min/max over the representative images). Quark's AdaRound can choose the rounding of each weight on that very
grid (Quark's Int8 spec: symmetric per-channel MinMax weights, asymmetric MinMax activations, QDrop 0.5). Its
rounded weights, written back into the FP32 ONNX, lie on the converter's grid, so the converter keeps them. The
script scores on the validation split: the FP32 file, the plain LiteRT file (converted here), Quark's own QDQ
file in ONNX Runtime, and the LiteRT files converted from the AdaRound-rounded weights, alone and with Quark's biases
(Quark corrects biases for the weights' rounding error by default).

Usage: python benchmarks/studies/tflite_adaround.py [--model mobilenet_v2] [--iterations 500]
       [--out benchmarks/results/tflite_adaround.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, command, finished_precision_run, machine, run_rows  # noqa: E402


def quark_per_channel_adaround(fp32: Path, out: Path, calib: np.ndarray, iterations: int) -> None:
    """Quark QDQ file on TensorFlow's INT8 grid, with AdaRound (QDrop 0.5) on the calibration images (the
    configuration edgecnn's tflite-int8 uses)."""
    import onnx

    from edgecnn.compress.pow2 import _quark
    from edgecnn.compress.quantize import _ArrayReader
    from edgecnn.compress.tflite_refine import tflite_grid_config

    qo = _quark()
    name = onnx.load(str(fp32)).graph.input[0].name
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):  # Quark writes files into the cwd
        qo.ModelQuantizer(tflite_grid_config(iterations, 0.5)).quantize_model(
            str(fp32), str(out), _ArrayReader(name, calib, batch=16))


def rounded_fp32(fp32: Path, quark_file: Path, out: Path, biases: bool) -> dict:
    """The FP32 ONNX with every Conv weight replaced by Quark's dequantized (AdaRound-rounded) weight, and with
    ``biases`` every Conv bias by Quark's one (edgecnn's carry_quantized_weights); with how much they moved."""
    import onnx
    from onnx import numpy_helper

    from edgecnn.compress.tflite_refine import carry_quantized_weights

    proto = onnx.load(str(fp32))
    before = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
    replaced = carry_quantized_weights(proto, onnx.load(str(quark_file)), biases)
    onnx.save(proto, str(out))
    flipped, bias_shift = [], []
    for init in proto.graph.initializer:
        new, old = numpy_helper.to_array(init).astype(np.float64), before[init.name]
        if np.array_equal(new, old):
            continue
        if new.ndim > 1:  # on the grid scale = max|w| / 127 of each output channel
            step = np.abs(new).reshape(len(new), -1).max(1).reshape((-1,) + (1,) * (new.ndim - 1)) / 127
            flipped.append(float(np.mean(np.round(old / step) != np.round(new / step))))
        else:
            bias_shift.append(float(np.max(np.abs(new - old))))
    return {"tensors_replaced": replaced, "share_rounded_away_from_nearest": float(np.mean(flipped)),
            **({"largest_bias_change": max(bias_shift)} if bias_shift else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--out", default=str(RESULTS / "tflite_adaround.json"))
    args = ap.parse_args()

    from edgecnn.compress.quantize import calibration_images
    from edgecnn.data.prepare import prepare_data
    from edgecnn.export.tflite import export_tflite_int8
    from edgecnn.measure.runtimes import file_predictor, predict_file

    cfg, run_dir = finished_precision_run(args.model, args.data, "benchmarks/studies/tflite_adaround.py")
    files = {p: path for p, (_, path) in run_rows(run_dir, ("fp32",)).items()}
    data = prepare_data(cfg.data, seed=cfg.seed)
    calib = calibration_images(data, cfg.quantize.calib, cfg.seed).astype(np.float32)
    val = data.splits["val"]

    def val_accuracy(path: Path, backend: str) -> float:
        logits = predict_file(file_predictor(path, backend), val, data.normalization)
        return round(100 * (logits.argmax(1) == val.labels).float().mean().item(), 3)

    result = {"benchmark": "tflite_adaround", "model": args.model, "command": command(),
              "machine": machine(), "split": "val",
              "validation_images": len(val), "calibration_images": len(calib), "iterations": args.iterations}
    acc = {"fp32 / onnxruntime": val_accuracy(files["fp32"], "onnxruntime")}
    with tempfile.TemporaryDirectory(prefix="edgecnn-tflite-adaround-") as tmp:
        tmp = Path(tmp)
        # converted here, not read from the run: the run's tflite-int8 file may itself be refined already
        export_tflite_int8(files["fp32"], tmp / "plain.tflite", calib)
        acc["LiteRT int8 (converter PTQ) / litert"] = val_accuracy(tmp / "plain.tflite", "litert")
        t0 = time.perf_counter()
        quark_per_channel_adaround(files["fp32"], tmp / "quark.onnx", calib, args.iterations)
        result["adaround_seconds"] = round(time.perf_counter() - t0, 1)
        acc["Quark int8 per-channel + AdaRound / onnxruntime"] = val_accuracy(tmp / "quark.onnx", "onnxruntime")
        for label, biases in (("weights", False), ("weights and biases", True)):
            result[label] = rounded_fp32(files["fp32"], tmp / "quark.onnx", tmp / "rounded.onnx", biases)
            acc[f"FP32 with Quark's {label} / onnxruntime"] = val_accuracy(tmp / "rounded.onnx", "onnxruntime")
            export_tflite_int8(tmp / "rounded.onnx", tmp / "rounded.tflite", calib)
            acc[f"LiteRT int8 (converter PTQ, Quark's {label}) / litert"] = val_accuracy(tmp / "rounded.tflite",
                                                                                       "litert")
    result["validation_accuracy"] = acc
    result["drop_points_vs_fp32"] = {k: round(acc["fp32 / onnxruntime"] - v, 3) for k, v in acc.items()}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
