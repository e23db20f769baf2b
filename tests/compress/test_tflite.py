"""LiteRT INT8 (.tflite): full-integer file, its metadata companion, LiteRT scoring and timing, `edgecnn eval`
and `bench` on it, and the one-line error without the converter."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import require

from edgecnn.errors import EdgeCNNError
from edgecnn.measure.predict import predict_logits
from edgecnn.measure.runtimes import file_predictor, predict_file

from .test_pow2 import write_image_folder
from .test_quantize import _cfg, build_artefact, trained  # noqa: F401  (module fixture)

require("ai_edge_litert", "tflite")
# onnx2tf and TensorFlow only looked up: importing them here would load TensorFlow before Triton (see export/tflite.py)
require("onnx2tf", "tflite", load=False)
require("tensorflow", "tflite", load=False)


@pytest.fixture(scope="module")
def tflite_file(trained):  # noqa: F811
    model, data, meta, onnx_path, out = trained
    return build_artefact("tflite-int8", model, meta, data, _cfg(calib=64), out / "tflite", onnx_path)


def test_tflite_is_fully_integer_and_agrees_with_fp32(trained, tflite_file):  # noqa: F811
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.export.tflite import read_tflite_metadata

    model, data, meta, _, _ = trained
    interp = Interpreter(model_path=str(tflite_file))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    compute = [o for o in ops if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert compute  # every convolution / dense layer runs on int8 inputs and int8 weights
    assert all(tensors[o["inputs"][0]]["dtype"] == np.int8 and tensors[o["inputs"][1]]["dtype"] == np.int8
               for o in compute)
    # float only at the I/O: one QUANTIZE at the input, one DEQUANTIZE at the output
    assert [o["op_name"] for o in ops].count("QUANTIZE") == 1 and ops[-1]["op_name"] == "DEQUANTIZE"
    saved = read_tflite_metadata(tflite_file)
    assert saved["precision"] == "tflite-int8" and saved["classes"] == meta["classes"] and saved["layout"] == "NHWC"
    # auto: AdaRound only when the plain file loses more than tflite_auto_drop points on the validation split
    auto = saved["calibration"]["auto"]
    assert auto["threshold_points"] == 0.3 and saved["calibration"]["refine"] == auto["refined"]
    assert (auto["refined"] == "adaround") == (auto["validation_drop_points"] > 0.3)
    test = data.splits["test"]
    fp32 = predict_logits(model, test, data.normalization).argmax(1)
    lite = predict_file(file_predictor(tflite_file, "litert", 1), test, data.normalization).argmax(1)
    assert (fp32 == lite).float().mean().item() >= 0.95


def test_variant_metrics_eval_and_bench(trained, tmp_path):  # noqa: F811
    from edgecnn.api import bench, evaluate_file
    from edgecnn.config import EvaluateConfig
    from edgecnn.results import CheckpointMeta
    from edgecnn.variants.measuring import make_variant
    from edgecnn.variants.precisions import BuildJob, PrecisionOptions

    model, data, meta, onnx_path, _ = trained
    job = BuildJob("tflite-int8", model, CheckpointMeta.from_dict(meta), data, tmp_path / "v",
                   PrecisionOptions(quantize=_cfg(calib=32).quantize), fp32_onnx=onnx_path)
    artefact, metrics, _ = make_variant(job, EvaluateConfig(latency_batches=[1], latency_repeats=3))
    assert artefact.suffix == ".tflite" and metrics["latency_ms_litert_b1"] > 0
    assert "latency_ms_onnxruntime_b1" not in metrics
    folder = write_image_folder(data.splits["test"], data.classes, tmp_path / "test-images")
    scored = evaluate_file(artefact, folder)
    assert scored["precision"] == "tflite-int8"
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    timed = bench(artefact, "litert", [1, 4], repeats=3, warmup=1)
    assert [r.batch for r in timed] == [1, 4] and all(r.median_ms > 0 for r in timed)
    with pytest.raises(EdgeCNNError, match="--backend litert"):
        bench(artefact, "onnxruntime", [1])
    with pytest.raises(EdgeCNNError, match="runs in LiteRT"):
        evaluate_file(artefact, folder, backend="openvino")
    artefact.with_name(artefact.name + ".json").unlink()
    with pytest.raises(EdgeCNNError, match=r"no edgecnn metadata beside it \(model-tflite-int8.tflite.json\)"):
        evaluate_file(artefact, folder)


def test_missing_converter_is_a_one_line_error(monkeypatch, tmp_path):
    from edgecnn.export.tflite import export_tflite_int8

    monkeypatch.setitem(sys.modules, "onnx2tf", None)
    with pytest.raises(EdgeCNNError, match=r"pip install 'edgecnn\[tflite\]'"):
        export_tflite_int8(tmp_path / "m.onnx", tmp_path / "m.tflite", np.zeros((1, 3, 8, 8), np.float32))


def test_padded_maxpool_after_relu_into_a_residual_add(tmp_path):
    """ResNet's stem (ReLU -> padded MaxPool -> residual block) made LiteRT abort; the exact zero-pad rewrite fixes
    it: the rewritten ONNX gives the same logits, and the .tflite loads and agrees with it."""
    import warnings

    import onnx
    import torch
    from torch import nn

    from edgecnn.export.tflite import export_tflite_int8, zero_padded_maxpools
    from edgecnn.measure.runtimes import ort_predictor

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x) + x)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), Block(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "b"}})
    proto = onnx.load(str(path))
    assert zero_padded_maxpools(proto) == 1
    onnx.save(proto, str(tmp_path / "r.onnx"))
    x = np.random.default_rng(1).normal(size=(8, 3, 16, 16)).astype(np.float32)
    ref = ort_predictor(path)(x)
    assert np.array_equal(ort_predictor(tmp_path / "r.onnx")(x), ref)
    lite = export_tflite_int8(path, tmp_path / "m.tflite", x, {"classes": list("abcd")})
    out = file_predictor(lite, "litert", 1)(x)
    assert out.shape == (8, 4) and np.abs(out - ref).max() < 0.25 * np.abs(ref).max() + 1e-3


def test_adaround_weights_stay_on_the_converters_grid(trained, tmp_path):  # noqa: F811
    """AdaRound's rounded weights lie on TensorFlow's per-channel INT8 grid, and the converter keeps them: the .tflite
    file's dequantized conv weights equal the rounded FP32 weights."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter
    from onnx import numpy_helper

    from edgecnn.compress.quantize import calibration_images
    from edgecnn.compress.tflite_refine import adaround_for_tflite
    from edgecnn.export.tflite import export_tflite_int8

    require("quark", "pow2")
    model, data, meta, onnx_path, _ = trained
    calib = calibration_images(data, 32, 0)
    done = adaround_for_tflite(onnx_path, tmp_path / "rounded.onnx", calib, iterations=5)
    proto = onnx.load(str(tmp_path / "rounded.onnx"))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert done["tensors"] == len(convs) + sum(len(n.input) > 2 for n in convs)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    rounded = [inits[n.input[1]].astype(np.float64) for n in convs]
    for w in rounded:  # on the grid scale = max|w| / 127 of each output channel
        step = np.abs(w).reshape(len(w), -1).max(1).reshape(-1, 1, 1, 1) / 127
        assert np.allclose(w / step, np.round(w / step), atol=1e-3)
    out = export_tflite_int8(tmp_path / "rounded.onnx", tmp_path / "rounded.tflite", calib, meta, refinement=done)
    interp = Interpreter(model_path=str(out))
    details = {t["index"]: t for t in interp.get_tensor_details()}
    kept = 0
    for op in interp._get_ops_details():
        if op["op_name"] != "CONV_2D":
            continue
        t = details[op["inputs"][1]]
        scales = t["quantization_parameters"]["scales"].reshape(-1, 1, 1, 1)
        w_tflite = interp.get_tensor(t["index"]).astype(np.float64) * scales  # O, kh, kw, I
        match = [w for w in rounded if w.transpose(0, 2, 3, 1).shape == w_tflite.shape]
        assert any(np.allclose(w.transpose(0, 2, 3, 1), w_tflite, rtol=0, atol=1e-6 * np.abs(w).max())
                   for w in match)
        kept += 1
    assert kept >= 2
    from edgecnn.export.tflite import read_tflite_metadata

    assert read_tflite_metadata(out)["calibration"]["refine"] == "adaround"


def test_tflite_options_only_key_the_tflite_variant():
    """The tflite_* options are read by tflite-int8 only: changing them rebuilds that variant and no other."""
    from edgecnn.compress.options import QuantizeConfig
    from edgecnn.variants.precisions import PrecisionOptions, get_precision, list_precisions

    plain, refined = PrecisionOptions(), PrecisionOptions(quantize=QuantizeConfig(tflite_refine="adaround"))
    others = [name for name in list_precisions() if name != "tflite-int8"]
    assert {"int8-ptq", "int8-pow2", "int8-qat"} <= set(others)  # the other readers of the quantize section
    for name in others:
        assert get_precision(name).recipe(plain) == get_precision(name).recipe(refined), name
        assert "tflite_refine" not in (get_precision(name).recipe(plain)["options"] or {}), name
    assert get_precision("tflite-int8").recipe(plain) != get_precision("tflite-int8").recipe(refined)
    changed_ptq = PrecisionOptions(quantize=QuantizeConfig(calib=64))
    assert get_precision("tflite-int8").recipe(plain) != get_precision("tflite-int8").recipe(changed_ptq)
