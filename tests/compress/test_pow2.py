"""Power-of-two INT8 (AMD Quark XINT8): exact power-of-two scales, agreement with FP32, shift-only integer
execution identical to ONNX Runtime, metadata for `edgecnn eval`, and the one-line error without Quark."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import require

from edgecnn.errors import EdgeCNNError
from edgecnn.export.onnx import read_metadata
from edgecnn.measure.predict import predict_logits
from edgecnn.measure.runtimes import ort_predictor, predict_file
from edgecnn.variants.precisions import get_precision

from .test_quantize import _cfg, build_artefact, trained  # noqa: F401  (module fixture)

require("quark", "pow2")


@pytest.fixture(scope="module")
def pow2_file(trained):  # noqa: F811
    model, data, meta, onnx_path, out = trained
    return build_artefact("int8-pow2", model, meta, data, _cfg(calib=64), out / "pow2", onnx_path)


def test_pow2_scales_agreement_and_metadata(trained, pow2_file):  # noqa: F811
    import onnx

    from edgecnn.compress.pow2 import pow2_scales

    model, data, meta, _, _ = trained
    scales = pow2_scales(onnx.load(str(pow2_file)))
    assert scales["all_pow2"] and scales["count"] > 10
    test = data.splits["test"]
    fp32 = predict_logits(model, test, data.normalization).argmax(1)
    int8 = predict_file(ort_predictor(pow2_file), test, data.normalization).argmax(1)
    assert (fp32 == int8).float().mean().item() >= 0.95
    saved = read_metadata(pow2_file)
    assert saved["precision"] == "int8-pow2" and saved["classes"] == meta["classes"]
    assert saved["calibration"]["images"] == 64
    # auto: plain calibration kept unless it loses more than pow2_auto_drop points on the validation split
    auto = saved["calibration"]["auto"]
    assert auto["threshold_points"] == 0.3 and auto["refined"] == saved["calibration"]["refine"]
    assert (auto["refined"] == "adaround") == (auto["validation_drop_points"] > 0.3)
    entry = get_precision("int8-pow2")
    assert "dpu" in entry.hw_kinds and entry.runtime == "onnxruntime"


def test_adaround_refinement_runs_and_stays_power_of_two(trained, tmp_path):  # noqa: F811
    import onnx

    from edgecnn.compress.pow2 import pow2_scales

    model, data, meta, onnx_path, _ = trained
    path = build_artefact("int8-pow2", model, meta, data, _cfg(calib=32, pow2_refine="adaround", pow2_iterations=5),
                          tmp_path, onnx_path)
    saved = read_metadata(path)
    assert saved["calibration"]["refine"] == "adaround" and saved["calibration"]["iterations"] == 5
    assert saved["calibration"]["drop_ratio"] == 0.5  # QDrop by default
    assert pow2_scales(onnx.load(str(path)))["all_pow2"]


def test_qdrop_ratio_reaches_quark_and_the_file(trained, tmp_path):  # noqa: F811
    import onnx

    from edgecnn.compress.pow2 import pow2_config, pow2_scales

    model, data, meta, onnx_path, _ = trained
    (algo,) = pow2_config("adaround", 5, drop_ratio=0.25).algo_config
    assert algo.drop_ratio == 0.25 and algo.num_iterations == 5
    path = build_artefact("int8-pow2", model, meta, data, _cfg(calib=32, pow2_refine="adaround", pow2_iterations=5,
                                                               pow2_drop_ratio=1.0), tmp_path, onnx_path)
    assert "drop_ratio" not in read_metadata(path)["calibration"]  # plain AdaRound
    assert pow2_scales(onnx.load(str(path)))["all_pow2"]
    with pytest.raises(ValueError, match="pow2_drop_ratio"):
        _cfg(pow2_drop_ratio=0.0)


def test_cross_layer_equalization_rescales_weights_and_keeps_accuracy(trained, pow2_file, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    import onnx
    from onnx import numpy_helper

    from edgecnn.compress.pow2 import pow2_scales
    from edgecnn.intsim.run import compare_with_onnxruntime

    model, data, meta, onnx_path, _ = trained
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = build_artefact("int8-pow2", model, meta, data, _cfg(calib=64, pow2_cle=True, pow2_refine="none"),
                          tmp_path, onnx_path)
    assert not list(cwd.iterdir())  # Quark's quantized_info.csv does not land in the user's folder
    assert read_metadata(path)["calibration"]["cle"] is True
    proto = onnx.load(str(path))
    assert pow2_scales(proto)["all_pow2"]

    def first_conv_weight(p):
        inits = {i.name: numpy_helper.to_array(i) for i in p.graph.initializer}
        conv = next(n for n in p.graph.node if n.op_type == "Conv")
        producer = {o: n for n in p.graph.node for o in n.output}
        w = conv.input[1]
        while w not in inits:  # DequantizeLinear <- QuantizeLinear <- the float weight
            w = producer[w].input[0]
        return inits[w]

    # equalization rescales each output channel of the first conv (and inversely the next layer's inputs)
    plain, equalized = first_conv_weight(onnx.load(str(pow2_file))), first_conv_weight(proto)
    ratio = np.abs(equalized).reshape(len(equalized), -1).max(1) / np.abs(plain).reshape(len(plain), -1).max(1)
    assert not np.allclose(ratio, 1.0, atol=1e-3)
    test = data.splits["test"]
    fp32 = predict_logits(model, test, data.normalization).argmax(1)
    int8 = predict_file(ort_predictor(path), test, data.normalization).argmax(1)
    assert (fp32 == int8).float().mean().item() >= 0.95
    x = np.random.default_rng(1).normal(size=(8, *test.images.shape[1:])).astype(np.float32)
    assert compare_with_onnxruntime(path, x, requant="shift")["identical"] >= 0.999


def test_shift_only_integer_execution_matches_onnxruntime(trained, pow2_file):  # noqa: F811
    from edgecnn.intsim.run import compare_with_onnxruntime

    _, data, _, _, _ = trained
    x = torch.cat([data.splits["test"].images[:48]]).float()
    mean = torch.tensor(data.normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.normalization.std).view(1, 3, 1, 1)
    x = ((x / 255.0 - mean) / std).numpy().astype(np.float32)
    res = compare_with_onnxruntime(pow2_file, x, requant="shift")
    assert res["identical"] >= 0.999 and res["top1_agreement"] == 1.0


def test_onnxruntime_runs_the_pow2_file_in_integer_kernels(trained, pow2_file, tmp_path):  # noqa: F811
    """Quark's DPU-form file (int8 biases, ReLU nodes, int8 activations) fuses into QLinearConv after edgecnn's exact
    CPU rewrites, and gives the logits of ONNX Runtime's unfused float path."""
    import onnx
    import onnxruntime as ort

    from edgecnn.measure.ort_fusion import fuse_for_cpu

    _, data, _, _, _ = trained
    proto = onnx.load(str(pow2_file))
    assert fuse_for_cpu(proto).clamps > 0
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QLinearConv" for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(pow2_file), plain, providers=["CPUExecutionProvider"])
    test = data.splits["test"]
    want = predict_file(lambda x: reference.run(None, {reference.get_inputs()[0].name: x})[0], test,
                        data.normalization)
    got = predict_file(ort_predictor(pow2_file), test, data.normalization)
    assert (want.argmax(1) == got.argmax(1)).float().mean().item() >= 0.99
    assert (want - got).abs().max().item() <= 0.05 * want.abs().max().item()


def test_shift_mode_refuses_float_scales(trained, tmp_path):  # noqa: F811
    from edgecnn.intsim.arith import IntSimError
    from edgecnn.intsim.run import compare_with_onnxruntime

    model, data, meta, onnx_path, out = trained
    ptq = build_artefact("int8-ptq", model, meta, data, _cfg(calib=32, per_channel=False), tmp_path, onnx_path)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with pytest.raises(IntSimError, match="power-of-two"):
        compare_with_onnxruntime(ptq, x, requant="shift")


def test_missing_quark_is_a_one_line_error(monkeypatch, tmp_path):
    from edgecnn.compress.pow2 import quantize_int8_pow2

    monkeypatch.setitem(sys.modules, "quark", None)
    monkeypatch.setitem(sys.modules, "quark.onnx", None)
    with pytest.raises(EdgeCNNError, match=r"pip install 'edgecnn\[pow2\]'"):
        quantize_int8_pow2(tmp_path / "m.onnx", tmp_path / "q.onnx", np.zeros((1, 3, 8, 8), np.float32))


def write_image_folder(split, classes: list[str], root):
    """The decoded images of a split as lossless PNGs in an ImageFolder (what `edgecnn eval` reads back)."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(split.images, split.labels)):
        folder = root / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return root


def test_recorded_accuracy_is_the_written_files(trained, tmp_path):  # noqa: F811
    """The accuracy the variant records equals `edgecnn eval` of the written file on the same images."""
    from edgecnn.api import evaluate_file
    from edgecnn.config import EvaluateConfig
    from edgecnn.results import CheckpointMeta
    from edgecnn.variants.measuring import make_variant
    from edgecnn.variants.precisions import BuildJob, PrecisionOptions

    model, data, meta, onnx_path, _ = trained
    job = BuildJob("int8-pow2", model, CheckpointMeta.from_dict(meta), data, tmp_path / "v",
                   PrecisionOptions(quantize=_cfg(calib=64).quantize), fp32_onnx=onnx_path)
    artefact, metrics, _ = make_variant(job, EvaluateConfig(latency_batches=[1], latency_repeats=3))
    folder = write_image_folder(data.splits["test"], data.classes, tmp_path / "test-images")
    scored = evaluate_file(artefact, folder)
    assert scored["precision"] == "int8-pow2"
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
