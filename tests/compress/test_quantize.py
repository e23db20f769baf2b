from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch

from edgecnn.compress.quantize import calibration_images
from edgecnn.config import DataConfig, ExperimentConfig, QuantizeConfig, TrainConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.export.onnx import export_onnx
from edgecnn.measure.predict import predict_logits
from edgecnn.measure.runtimes import ort_predictor, predict_file
from edgecnn.models import create_model
from edgecnn.results import CheckpointMeta
from edgecnn.train.trainer import fit
from edgecnn.variants.precisions import BuildJob, PrecisionOptions, get_precision

ARGS = dict(stem_channels=8, channels=[16, 32], blocks=1)


@pytest.fixture(scope="module")
def trained(small_folder, tmp_path_factory):
    """A tiny CustomNet trained for a few epochs, its data, and its FP32 ONNX export."""
    out = tmp_path_factory.mktemp("q")
    data = prepare_data(DataConfig(root=small_folder, image_size=32, split={"val": 0.1, "test": 0.3}), seed=0)
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=32, **ARGS)
    fit(model, data, TrainConfig(epochs=6, batch_size=32), out / "train", meta={"arch": "customnet"},
        show_progress=False)
    model.eval()
    meta = {"arch": "customnet", "arch_args": ARGS, "classes": data.classes, "input_size": 32,
            "normalization": {"mean": list(data.normalization.mean), "std": list(data.normalization.std)}}
    onnx_path = export_onnx(model, out / "model.onnx", 32, meta)
    return model, data, meta, onnx_path, out


def build_artefact(precision, model, meta, data, cfg: ExperimentConfig, out_dir, fp32_onnx):
    """The registered handler of ``precision`` building its file from the experiment's options."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job = BuildJob(precision, model, CheckpointMeta.from_dict(meta), data, out_dir,
                   PrecisionOptions(quantize=cfg.quantize, seed=cfg.seed), fp32_onnx=fp32_onnx)
    return get_precision(precision).build(job).artefact


def _cfg(**quantize) -> ExperimentConfig:
    return ExperimentConfig(quantize=QuantizeConfig(**quantize))


def _held_out(data):
    return data.splits["test"]


def test_ptq_agrees_with_fp32_and_is_smaller(trained):
    model, data, meta, onnx_path, out = trained
    q = build_artefact("int8-ptq", model, meta, data, _cfg(calib=128), out / "ptq", onnx_path)
    test = _held_out(data)
    fp32_logits = predict_logits(model, test, data.normalization)
    int8_logits = predict_file(ort_predictor(q), test, data.normalization)
    assert len(test) >= 90
    # a flip needs a near-tie in fp32, so agreement is judged loosely (a one-image flip once failed a 0.98 bound on
    # 90 images); the logits themselves must stay close: INT8 error well below the logits' own spread
    assert (fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean() >= 0.95
    assert (int8_logits - fp32_logits).abs().mean() <= 0.1 * fp32_logits.std()
    # int8 weights; on a model this small the per-node scales and zero points are a visible share of the file
    assert q.stat().st_size <= 0.5 * onnx_path.stat().st_size
    ops = Counter(n.op_type for n in onnx.load(str(q)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0


def _first_conv_weight_is_float(path) -> bool:
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    first = next(n for n in proto.graph.node if n.op_type == "Conv")
    w = inits.get(first.input[1])
    return w is not None and w.data_type == onnx.TensorProto.FLOAT


def test_exclude_first_keeps_that_layer_in_float(trained):
    model, data, meta, onnx_path, out = trained
    plain = build_artefact("int8-ptq", model, meta, data, _cfg(calib=64), out / "p1", onnx_path)
    kept = build_artefact("int8-ptq", model, meta, data, _cfg(calib=64, exclude=["first"]), out / "p2", onnx_path)
    assert not _first_conv_weight_is_float(plain)
    assert _first_conv_weight_is_float(kept)
    with pytest.raises(EdgeCNNError, match="no layer 'features.99'"):
        build_artefact("int8-ptq", model, meta, data, _cfg(calib=64, exclude=["features.99"]), out / "p3", onnx_path)


def test_qat_file_runs_in_onnxruntime_and_pipeline_reports_its_accuracy(trained, tmp_path):
    import copy

    from edgecnn.variants.measuring import measure_variant

    model, data, meta, onnx_path, out = trained
    cfg = ExperimentConfig(quantize=QuantizeConfig(qat_epochs=0.5, qat_batch_size=32, exclude=["last"]),
                           evaluate={"latency_batches": [1], "latency_repeats": 3, "backends": ["onnxruntime"]})
    q = build_artefact("int8-qat", copy.deepcopy(model), meta, data, cfg, tmp_path, onnx_path)
    proto = onnx.load(str(q))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] > 0
    last = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    assert {i.name: i for i in proto.graph.initializer}[last.input[1]].data_type == onnx.TensorProto.FLOAT
    metrics, _ = measure_variant(get_precision("int8-qat"), model, q, data, cfg.evaluate, tmp_path, None)
    test = data.splits["test"]
    acc = float((predict_file(ort_predictor(q), test, data.normalization).argmax(1) == test.labels).float().mean())
    assert metrics["accuracy"] == pytest.approx(acc)
    fp32_acc = float((predict_logits(model, test, data.normalization).argmax(1) == test.labels).float().mean())
    assert acc >= fp32_acc - 0.1


def test_calibration_larger_than_train_split_is_a_clear_error(trained):
    _, data, *_ = trained
    with pytest.raises(EdgeCNNError, match="calibration asks for 100000 images"):
        calibration_images(data, 100000, 0)
    assert calibration_images(data, 16, 0).shape == (16, 3, 32, 32)


@pytest.mark.parametrize("name", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_qat_export_runs_every_conv_on_integer_kernels(name, small_folder, tmp_path):
    """torchvision blocks reuse their ReLU module and fuse conv+add; the QAT recipe still yields a graph that
    ONNX Runtime turns entirely into QLinearConv/QLinearAdd (no float Conv left)."""
    import onnxruntime as ort

    from edgecnn.compress.qat import export_qat_onnx, qat_int8

    data = prepare_data(DataConfig(root=small_folder, image_size=32), seed=0)
    torch.manual_seed(0)
    converted = qat_int8(create_model(name, num_classes=10, input_size=32), data, max_steps=1, batch_size=8)
    path = export_qat_onnx(converted, tmp_path / "q.onnx", 32, {"arch": name})
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["Conv"] == 0 and ops["QLinearConv"] == {"resnet18": 20, "mobilenet_v2": 52}[name]
    assert ops["QLinearAdd"] == {"resnet18": 8, "mobilenet_v2": 10}[name]


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_takes_any_number_of_images(trained, method):
    """ONNX Runtime's histogram calibrators stack every batch's activations: 37 images (prime) must not fail."""
    from edgecnn.compress.quantize import calibration_images, even_batch, quantize_int8_ptq
    from edgecnn.measure.runtimes import file_predictor, predict_file

    model, data, meta, onnx_path, out = trained
    assert even_batch(37) == 1 and even_batch(96) == 32 and even_batch(100) == 25
    path = quantize_int8_ptq(onnx_path, out / f"{method}-37.onnx", calibration_images(data, 37, 0), method=method)
    logits = predict_file(file_predictor(path, "onnxruntime"), _held_out(data), data.normalization)
    assert torch.isfinite(logits).all()
