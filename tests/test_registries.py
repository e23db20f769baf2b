"""Registry smoke tests (timm style): every entry of edgecnn's registries gets these tests for free, the moment it
is registered: each precision builds a variant of a tiny model and scores it in its runtime; each hardware target
estimates a tiny network and has a consistent catalog entry; each runtime backend scores a tiny fp32 file as ONNX
Runtime does (or says why it cannot run here); each model builds, runs, exports to ONNX and is estimated on a DPU.

An entry whose extra is not installed skips with the reason (fails in CI: conftest.require). The few entries marked
slow say why; they run with ``pytest -m slow``.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from conftest import make_subset, randomize_bn, require

from edgecnn.export.onnx import export_onnx
from edgecnn.hw import HardwareModelError, estimate, get_target, list_targets, load_graph
from edgecnn.hw.validation.reference_nets import plain_cnn
from edgecnn.measure.runtimes import RuntimeUnavailable, file_predictor, list_backends, predict_file
from edgecnn.models import create_model, list_models

SIZE = 16  # pixels of the tiny precision / backend / target inputs
CLASSES = ["AnnualCrop", "Forest", "Highway", "SeaLake"]
TINY_ARGS = dict(stem_channels=8, channels=[8, 16], blocks=1)


def _require_all(needs) -> None:
    for module, extra, *load in needs:
        require(module, extra, load=load[0] if load else True)


TFLITE_NEEDS = [("ai_edge_litert", "tflite"), ("onnx2tf", "tflite", False), ("tensorflow", "tflite", False)]


# ------------------------------------------------------------------------------------------------ precisions

def _list_precisions() -> list[str]:
    from edgecnn import list_precisions

    return list_precisions()


#: The modules (and their extra) a precision's handler needs beyond edgecnn's own dependencies; a precision not
#: listed needs none (int8-qat's torchao is a core dependency: its import error is an error, never a skip).
PRECISION_NEEDS = {
    "int8-pow2": [("quark", "pow2")],
    "tflite-int8": TFLITE_NEEDS,
    "wXaY": [("brevitas", "lowbit"), ("qonnx", "lowbit")],
}
#: A family of precisions is built through one of its members.
FAMILY_MEMBER = {"wXaY": "w4a4"}
#: The files each runtime scores.
RUNTIME_FILES = {"torch": {".onnx", ".safetensors"}, "onnxruntime": {".onnx"}, "qonnx": {".onnx"},
                 "litert": {".tflite"}}
SLOW_PRECISIONS = {
    "int8-qat": "~20 s on 2 cores (torchao PT2E prepare/convert, QAT steps, torch.export to ONNX); built and measured "
                "in the default run by tests/compress/test_quantize.py",
}


@pytest.fixture(scope="module", params=[3, 1], ids=["rgb", "gray"])
def tiny(tmp_path_factory, request):
    """4 classes x 12 sample images at 16 px (24 train / 12 val / 12 test) read with 3 channels or as 1 channel
    (data.channels: 1), a tiny CustomNet with trained-looking BatchNorm (distinct logits, no quantization ties), its
    meta, fp32 ONNX export and fp32 test predictions; and a folder of one image per class for `edgecnn eval`."""
    from edgecnn.config import DataConfig
    from edgecnn.data.prepare import prepare_data
    from edgecnn.measure.predict import predict_logits

    root = make_subset(tmp_path_factory.mktemp("registry-data"), 12, CLASSES)
    data = prepare_data(DataConfig(root=root, image_size=SIZE, split={"val": 0.25, "test": 0.25},
                                   channels=request.param), seed=0)
    assert data.channels == request.param
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=len(CLASSES), input_size=SIZE, in_channels=data.channels,
                         **TINY_ARGS)
    randomize_bn(model)
    model.eval()
    meta = data.model_meta("customnet", TINY_ARGS)
    fp32 = export_onnx(model, tmp_path_factory.mktemp("registry-fp32") / "model.onnx", SIZE,
                       meta.model_only(precision="fp32"))
    preds = predict_logits(model, data.splits["test"], data.normalization).argmax(1)
    eval_root = make_subset(tmp_path_factory.mktemp("registry-eval"), 1, CLASSES)
    return eval_root, data, model, meta, fp32, preds


def _precision_param(name: str):
    return pytest.param(name, marks=pytest.mark.slow(reason=SLOW_PRECISIONS[name])) if name in SLOW_PRECISIONS \
        else name


@pytest.mark.parametrize("name", [_precision_param(n) for n in _list_precisions()])
def test_every_precision_builds_and_scores_in_its_runtime(name, tiny, tmp_path):
    from edgecnn.api import evaluate_file
    from edgecnn.compress.options import LowbitConfig
    from edgecnn.config import QuantizeConfig
    from edgecnn.measure.options import EvaluateConfig
    from edgecnn.variants.measuring import make_variant
    from edgecnn.variants.precisions import BuildJob, PrecisionOptions, get_precision

    _require_all(PRECISION_NEEDS.get(name, ()))
    eval_root, data, model, meta, fp32, fp32_preds = tiny
    entry = get_precision(name)
    member = name
    if entry.family is not None:
        assert name in FAMILY_MEMBER, f"precision family {name}: name one of its members in FAMILY_MEMBER"
        member = FAMILY_MEMBER[name]
    assert entry.runtime in RUNTIME_FILES, f"runtime {entry.runtime} of {name}: add the files it scores to " \
                                           "RUNTIME_FILES"
    options = PrecisionOptions(
        quantize=QuantizeConfig(calib=16, qat_epochs=1, qat_batch_size=8, pow2_refine="none", tflite_refine="none"),
        lowbit=LowbitConfig(variants=[FAMILY_MEMBER.get(name, "w4a4")], epochs=1, batch_size=8, targets=[],
                            parity_images=8))
    job = BuildJob(member, model, meta, data, tmp_path / name, options, fp32_onnx=fp32)
    artefact, metrics, preds = make_variant(job, EvaluateConfig(latency_batches=[1], latency_repeats=3),
                                            fp32_predictions=fp32_preds)

    test = data.splits["test"]
    assert artefact.is_file() and artefact.stat().st_size > 0
    assert artefact.suffix in RUNTIME_FILES[entry.runtime], f"{name} runs in {entry.runtime} but built {artefact}"
    assert _input_channels(artefact) == data.channels, f"{name} built a file for other channels than the data's"
    assert metrics["test_images"] == len(test) == 12 and 0 <= metrics["accuracy"] <= 1
    if entry.runtime in ("onnxruntime", "litert"):  # the reported accuracy is its file's, run in its runtime
        logits = predict_file(file_predictor(artefact, entry.runtime), test, data.normalization)
        assert logits.shape == (len(test), len(CLASSES)) and torch.isfinite(logits).all()
        assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == test.labels).float().mean()))
    if entry.runtime == "qonnx":  # low-bit: measured by its handler, checked in qonnx's executor
        assert preds is None and metrics["qonnx_images"] > 0 and 0 <= metrics["qonnx_top1_agreement"] <= 1
    else:
        assert len(preds) == len(test) and 0 <= metrics["agreement_with_fp32"] <= 1
    if entry.latency_backends:
        timed = {k: v for k, v in metrics.items() if k.startswith("latency_ms_") and k.endswith("_b1")
                 and "_by_layout" not in k}
        assert timed and all(v > 0 for v in timed.values()), metrics
    # `edgecnn eval` reads the file alone (its metadata: classes, input size, normalization) and scores a folder
    scored = evaluate_file(artefact, eval_root)
    assert scored["n"] == len(CLASSES) and 0 <= scored["accuracy"] <= 1


def _input_channels(artefact) -> int:
    """The channels a built file takes: its graph's input (NCHW; a .tflite's NHWC) or a checkpoint's meta."""
    if artefact.suffix == ".onnx":
        return onnx.load(str(artefact), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    if artefact.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        return int(Interpreter(model_path=str(artefact)).get_input_details()[0]["shape"][-1])
    from edgecnn.train.checkpoint import load_checkpoint

    return load_checkpoint(artefact).meta.in_channels


# ------------------------------------------------------------------------------------------------ hardware targets

TARGETS = list_targets()


@pytest.fixture(scope="module")
def tiny_softmax_onnx(tmp_path_factory):
    """FP32 Conv+Relu -> Conv(stride 2)+Relu -> Flatten -> Gemm(4) -> Softmax at 16 px (no export needed); the
    softmax is what most accelerators leave to a CPU."""
    path = tmp_path_factory.mktemp("registry-hw") / "tiny-softmax.onnx"
    onnx.save(plain_cnn([(8, 3, 1, 1), (16, 3, 2, 1)], SIZE, [len(CLASSES)], softmax=True), str(path))
    return path


def _finite_positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_target_estimates_a_tiny_network_or_says_why(target, tiny_softmax_onnx):
    graph = load_graph(tiny_softmax_onnx)
    try:
        est = estimate(tiny_softmax_onnx, target.name, finn=False)
    except HardwareModelError as exc:  # allowed, if it says why in words
        assert len(str(exc)) > 20, f"{target.name}: HardwareModelError without a reason: {exc!r}"
        return
    assert est.target == target.name and est.kind == target.kind
    assert _finite_positive(est.fps) and _finite_positive(est.latency_ms), (est.fps, est.latency_ms)
    assert _finite_positive(est.power_w) and _finite_positive(est.energy_mj_per_image)
    costed = {layer.name.split(":")[0] for layer in est.layers}
    for u in est.unmapped:  # what the target cannot run names the operator and what running it elsewhere costs
        assert u.op and u.op.lower() in u.why.lower() and u.cost.strip() and u.cost_ms >= 0, u
    unmapped = {u.name for u in est.unmapped}
    for layer in graph.layers:  # every compute layer is either costed on the target or reported as unmapped
        if layer.op in ("conv", "fc", "softmax"):
            assert layer.name in costed | unmapped, f"{target.name}: {layer.name} ({layer.op}) is neither costed " \
                                                    "nor unmapped"
    assert not costed & unmapped


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_target_catalog_entry_is_consistent(target):
    assert get_target(target.name) == target
    assert all(get_target(alias) == target for alias in target.aliases)
    assert target.power.watts > 0 and target.power.source.strip()
    assert getattr(target, target.kind) is not None  # its kind's section
    res = target.resources.as_dict()
    assert all(v >= 0 for v in res.values()), res
    if target.kind != "cpu":
        assert target.clock_mhz > 0
    if target.kind == "dataflow":  # the part's fabric is the budget of a dataflow design, and FINN needs the part
        assert all(res[k] > 0 for k in ("lut", "ff", "bram36", "dsp")), res
        assert target.dataflow.fpga_part and 0 < target.dataflow.utilization_cap <= 1
    if res["lut"] > 0:  # a real part: 2 flip-flops per LUT6 in 7-series and UltraScale+ fabric, DSPs and BRAM
        assert res["ff"] == 2 * res["lut"] and res["dsp"] > 0 and res["bram36"] > 0, res
    if target.kind == "dpu":  # a DPUCZDX8G B<n> does n operations per clock: PP x ICP x OCP x 2
        assert target.dpu.arch == f"B{target.dpu.peak_ops_per_cycle}", target.dpu
    if target.kind == "cpu":
        assert target.cpu.gmacs > 0 and target.cpu.measured.strip()


def test_target_names_and_aliases_are_unique():
    names = [t.name for t in TARGETS] + [a for t in TARGETS for a in t.aliases]
    assert len(TARGETS) >= 4 and len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert {t.kind for t in TARGETS} == {"dpu", "dataflow", "systolic", "cpu"}


# ------------------------------------------------------------------------------------------------ runtime backends

#: Backends that depend on the machine (a GPU, its providers): they raise RuntimeUnavailable where it lacks them.
MACHINE_BACKENDS = {"onnxruntime-cuda", "onnxruntime-tensorrt"}
BACKEND_NEEDS = {"openvino": [("openvino", "openvino")], "litert": TFLITE_NEEDS}
#: Largest |difference| of logits (about 0.5 in size) from ONNX Runtime CPU. GPU providers may compute fp32
#: convolutions in TF32 (10-bit mantissa); OpenVINO's CPU plugin infers in bf16 on CPUs with AMX.
TOLERANCE = {"onnxruntime": 1e-5, "litert": 1e-4, "openvino": 2e-2, "onnxruntime-cuda": 1e-2,
             "onnxruntime-tensorrt": 1e-2}


@pytest.fixture(scope="module")
def tiny_fp32_onnx(tmp_path_factory):
    """A tiny fp32 ONNX file with a dynamic batch, a batch of inputs, and ONNX Runtime CPU's logits for it (all
    graph optimizations off: the reference)."""
    import onnxruntime as ort

    path = tmp_path_factory.mktemp("registry-backends") / "tiny.onnx"
    onnx.save(plain_cnn([(8, 3, 1, 1), (16, 3, 2, 1)], SIZE, [len(CLASSES)], batch="N"), str(path))
    x = np.random.default_rng(0).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return path, x, session.run(None, {session.get_inputs()[0].name: x})[0]


def _fp32_tflite(onnx_path):
    """The same network as an fp32 .tflite (onnx2tf writes one beside its SavedModel)."""
    from edgecnn.export.tflite import _import_converters, _quiet_tensorflow

    onnx2tf, _ = _import_converters()  # TensorFlow after Triton (see export/tflite.py)
    out = onnx_path.parent / "tflite"
    with _quiet_tensorflow():
        onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out), non_verbose=True,
                        not_use_onnxsim=True, copy_onnx_input_output_names_to_tflite=True,
                        output_signaturedefs=True)
    (path,) = out.glob("*_float32.tflite")
    return path


@pytest.mark.parametrize("name", list_backends())
def test_every_backend_agrees_with_onnxruntime_or_says_why(name, tiny_fp32_onnx):
    _require_all(BACKEND_NEEDS.get(name, ()))
    path, x, reference = tiny_fp32_onnx
    if name == "litert":  # scores .tflite files: the same network, converted
        path = _fp32_tflite(path)
    try:
        predict = file_predictor(path, name, threads=1)
    except RuntimeUnavailable as exc:
        assert name in MACHINE_BACKENDS, f"{name} is unavailable here ({exc}); only {MACHINE_BACKENDS} may be"
        assert len(str(exc)) > 20, f"{name}: RuntimeUnavailable without a reason: {exc!r}"
        pytest.skip(f"{name} cannot run on this machine: {exc}")
    logits = predict(x)
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, rtol=0, atol=TOLERANCE.get(name, 1e-4))


# ------------------------------------------------------------------------------------------------ models

MODEL_SIZE = 32
#: Measured on 2 cores (build, forward, dynamo ONNX export, DPU estimate); every other model takes <= ~5 s.
SLOW_MODELS = {
    "alexnet": "~14 s (9 s export, 4 s DPU estimate of its large dense layers)",
    "convnext_tiny": "~15 s (28 M parameters, 9 s export)",
    "mobilenet_v2": "~12 s (11 s dynamo export of its 50 layers)",
    "resnet50": "~19 s (15 s export)",
    **{name: "~6 s build + export; the same builder as vgg11 (default run)" for name in
       ("vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
}


def _model_param(name: str):
    return pytest.param(name, marks=pytest.mark.slow(reason=SLOW_MODELS[name])) if name in SLOW_MODELS else name


@pytest.mark.parametrize("name", [_model_param(n) for n in list_models()])
def test_every_model_builds_exports_and_is_estimated(name, tmp_path):
    """No pretrained weights (tests never download): the architecture at 32 px, 3 classes."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=MODEL_SIZE).eval()
    x = torch.randn(2, 3, MODEL_SIZE, MODEL_SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    path = export_onnx(model, tmp_path / f"{name}.onnx", MODEL_SIZE, {"arch": name, "classes": ["a", "b", "c"]})
    onnx_out = file_predictor(path, "onnxruntime", threads=1)(x.numpy())
    np.testing.assert_allclose(onnx_out, out.numpy(), rtol=1e-3, atol=1e-4)  # the file computes the model
    est = estimate(path, "kv260")
    assert _finite_positive(est.fps) and _finite_positive(est.latency_ms), (est.fps, est.latency_ms)
    assert est.layers and all(u.why.strip() for u in est.unmapped)
