from __future__ import annotations

import json

import onnx
import pytest
import torch
from conftest import require

from edgecnn.compress.prune import (
    apply_layout,
    output_layer,
    polynomial_sparsity,
    prunable_layers,
    prune_model,
    pruned_layout,
    structured_prune,
)
from edgecnn.config import DataConfig, PruneConfig, TrainConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.predict import predict_logits
from edgecnn.measure.runtimes import ort_predictor, predict_file
from edgecnn.models import create_model, profile_model
from edgecnn.results import CheckpointMeta
from edgecnn.train.checkpoint import load_checkpoint
from edgecnn.train.trainer import fit

require("torch_pruning", "prune")

ARGS = dict(stem_channels=8, channels=[16, 32, 48], blocks=1)
FAST = TrainConfig(epochs=1, batch_size=32, lr=1e-3, amp="off")


@pytest.fixture(scope="module")
def trained(small_folder, tmp_path_factory):
    """A tiny residual CustomNet trained a few epochs on 10 classes x 30 images at 32 px, with its meta."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("prune")
    data = prepare_data(DataConfig(root=small_folder, image_size=32, split={"val": 0.2, "test": 0.2}), seed=0)
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=32, **ARGS)
    meta = {"arch": "customnet", "arch_args": ARGS, "classes": data.classes, "input_size": 32,
            "normalization": {"mean": list(data.normalization.mean), "std": list(data.normalization.std)}}
    fit(model, data, TrainConfig(epochs=5, batch_size=32, amp="off"), out / "train", meta=meta, show_progress=False)
    return model.eval(), CheckpointMeta.from_dict(meta), data, out


def _copy(model):
    import copy

    return copy.deepcopy(model)


DEFAULT_ZOO = ["customnet", "customnet_seed", "resnet18", "mobilenet_v2", "squeezenet1_1", "lenet5"]
SLOW_ZOO = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "resnet50",
            "convnext_tiny"]


@pytest.mark.parametrize("name", DEFAULT_ZOO + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW_ZOO])
def test_structured_pruning_of_every_zoo_model_meets_the_macs_target(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_size=32).eval()
    base = profile_model(model, 32)
    structured_prune(model, 32, target="macs", target_ratio=0.5)
    after = profile_model(model, 32)
    assert after.macs / base.macs == pytest.approx(0.5, abs=0.05)
    assert after.params < base.params
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # a fresh registry model with the recorded layout takes the pruned weights and computes the same function
    rebuilt = apply_layout(create_model(name, num_classes=10, input_size=32),
                           json.loads(json.dumps(pruned_layout(model, create_model(name, num_classes=10,
                                                                                   input_size=32)))))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt.eval()(x), out)


@pytest.mark.parametrize("name", ["customnet", "resnet18"])
def test_params_target_and_uniform_scope(name):
    model = create_model(name, num_classes=10, input_size=32).eval()
    base = profile_model(model, 32)
    structured_prune(model, 32, target="params", target_ratio=0.6, scope="uniform", importance="l1")
    assert profile_model(model, 32).params / base.params == pytest.approx(0.6, abs=0.05)


def test_residual_adds_and_depthwise_convs_stay_consistent():
    model = create_model("mobilenet_v2", num_classes=10, input_size=32).eval()
    depthwise = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17  # one per inverted residual block
    structured_prune(model, 32, ratio=0.4, importance="bn")
    for name in depthwise:
        m = model.get_submodule(name)
        assert m.groups == m.in_channels == m.out_channels > 1, name  # depthwise stays depthwise
    model(torch.randn(1, 3, 32, 32))
    res = create_model("customnet", num_classes=10, input_size=32, **ARGS).eval()
    structured_prune(res, 32, ratio=0.5)
    blocks = [m for m in res.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 3  # one per stage
    for block in blocks:
        assert block.conv2[0].out_channels == block.conv1[0].in_channels  # the identity add still lines up


def test_per_layer_ratio_prunes_only_that_group():
    model = create_model("customnet", num_classes=10, input_size=32, **ARGS).eval()
    groups = prunable_layers(model, 32)
    assert output_layer(model, 32) == "classifier.2"
    assert all("classifier.2" not in members for members in groups.values())
    structured_prune(model, 32, ratios={"features.0.0": 0.5})
    assert model.features[0][0].out_channels == 4 and model.features[1][0][0].out_channels == 16


def test_prune_model_halves_the_macs_writes_a_smaller_onnx_times_both_and_a_reloadable_checkpoint(trained):
    model, meta, data, out = trained
    opts = PruneConfig(target="macs", target_ratio=0.5, latency_repeats=5)
    res = prune_model(_copy(model), meta, data, opts, FAST, out / "structured", show_progress=False)
    before, after = res.before, res.after
    assert after["macs_ratio"] == after["macs"] / before["macs"] == pytest.approx(0.5, abs=0.05)
    assert after["params"] < before["params"] and after["params_ratio"] == after["params"] / before["params"]
    assert after["onnx_bytes"] < 0.8 * before["onnx_bytes"]
    # both files are timed and the speed-up is their ratio; its direction is not asserted: half the MACs is not
    # faster here (measured 1.5x slower in ONNX Runtime on 2 EPYC cores: the pruned widths, e.g. 29 or 38, are off
    # the 8-channel blocks of its NCHWc kernels, so reorders come in), and a timed unit test is no source of a figure
    assert before["latency_ms_onnxruntime_b1"] > 0 and after["latency_ms_onnxruntime_b1"] > 0
    assert after["speedup_onnxruntime_b1"] == pytest.approx(
        before["latency_ms_onnxruntime_b1"] / after["latency_ms_onnxruntime_b1"], rel=0.01)
    reloaded, pmeta = load_checkpoint(res.checkpoint)
    prof = profile_model(reloaded, 32)  # the reported figures are the saved model's
    assert (prof.macs, prof.params) == (after["macs"], after["params"])
    assert pmeta.pruned is not None and pmeta.pruned["method"] == "structured" and pmeta.classes == data.classes
    logits = predict_logits(reloaded, data.splits["test"], data.normalization)
    accuracy = float((logits.argmax(1) == data.splits["test"].labels).float().mean())
    assert accuracy == pytest.approx(res.after["test_accuracy"])
    ort = predict_file(ort_predictor(res.onnx), data.splits["test"], data.normalization)
    torch.testing.assert_close(ort, logits, atol=1e-3, rtol=1e-3)
    graph = onnx.load(str(res.onnx)).graph
    assert any(n.op_type == "Conv" for n in graph.node)
    report = json.loads((out / "structured" / "prune.json").read_text())
    assert report["layers"] and {"out_before", "out_after"} <= set(report["layers"][0])


def test_iterative_taylor_schedule_with_finetuning_between_rounds(trained):
    model, meta, data, out = trained
    opts = PruneConfig(target="params", target_ratio=0.5, steps=2, step_epochs=1, importance="taylor")
    res = prune_model(_copy(model), meta, data, opts, FAST, out / "iterative", show_progress=False,
                      measure_latency=False)
    rounds = res.finetune["rounds"]
    assert len(rounds) == 2 and rounds[0]["params"] > rounds[1]["params"]
    assert rounds[0]["params"] / res.before["params"] == pytest.approx(0.75, abs=0.05)
    assert res.after["params_ratio"] == pytest.approx(0.5, abs=0.05)
    assert (out / "iterative" / "round1" / "best.safetensors").exists()


def test_sensitivity_analysis_chooses_per_layer_ratios(trained):
    model, meta, data, out = trained
    opts = PruneConfig(ratios="auto", target="macs", target_ratio=0.6, sensitivity_ratios=[0.25, 0.5, 0.75],
                       sensitivity_images=40)
    res = prune_model(_copy(model), meta, data, opts, FAST, out / "auto", show_progress=False, measure_latency=False)
    assert res.ratios and set(res.ratios) <= set(res.sensitivity["layers"])
    assert res.after["macs_ratio"] <= 0.6 + 1e-9
    assert (out / "auto" / "sensitivity.png").stat().st_size > 1000
    sens = json.loads((out / "auto" / "sensitivity.json").read_text())
    assert all(len(v) == 3 for v in sens["layers"].values())


def test_polynomial_schedule():
    assert polynomial_sparsity(0, 100, 0.8) == 0
    assert polynomial_sparsity(50, 100, 0.8) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert polynomial_sparsity(100, 100, 0.8) == pytest.approx(0.8)
    assert polynomial_sparsity(500, 100, 0.8) == pytest.approx(0.8)
    values = [polynomial_sparsity(t, 100, 0.8) for t in range(101)]
    assert values == sorted(values)


def test_unstructured_sparsity_equals_target_per_layer_and_is_permanent(trained):
    model, meta, data, out = trained
    opts = PruneConfig(method="unstructured", ratio=0.6, sparsity_steps=4, ramp=0.5)
    res = prune_model(_copy(model), meta, data, opts, TrainConfig(epochs=2, batch_size=32, lr=1e-3, amp="off"),
                      out / "unstructured", show_progress=False, measure_latency=False)
    schedule = [s for _, s in res.finetune["schedule"]]
    assert schedule == sorted(schedule) and schedule[-1] == pytest.approx(0.6) and len(schedule) == 4
    assert len(res.layers) >= 10  # the 10 convolutions at least
    for layer in res.layers:
        assert layer["sparsity"] == pytest.approx(0.6, abs=1 / layer["weights"] + 1e-9), layer["layer"]
    reloaded, _ = load_checkpoint(res.checkpoint)  # same architecture: the plain loader works
    assert not any(k.endswith("_orig") or k.endswith("_mask") for k in reloaded.state_dict())
    conv = reloaded.features[1][0][0].weight
    assert float((conv == 0).float().mean()) == pytest.approx(0.6, abs=1e-3)
    assert res.after["params"] == res.before["params"]


def test_bad_pruning_inputs_give_clear_errors():
    model = create_model("customnet", num_classes=10, input_size=32, **ARGS).eval()
    with pytest.raises(EdgeCNNError, match="strictly between 0 and 1"):
        structured_prune(model, 32, ratio=1.5)
    with pytest.raises(EdgeCNNError, match="strictly between 0 and 1"):
        structured_prune(model, 32, target="macs", target_ratio=0.0)
    with pytest.raises(EdgeCNNError, match="no prunable layer 'features.0.1'.*did you mean: features.0.0"):
        structured_prune(model, 32, ratios={"features.0.1": 0.5})
    with pytest.raises(EdgeCNNError, match="no prunable layer 'classifier.2'"):
        structured_prune(model, 32, ratios={"classifier.2": 0.5})
    with pytest.raises(EdgeCNNError, match="no BatchNorm"):
        structured_prune(create_model("lenet5", num_classes=10, input_size=32), 32, ratio=0.3, importance="bn")
    with pytest.raises(EdgeCNNError, match="max_layer_ratio"):
        structured_prune(model, 32, target="macs", target_ratio=0.01, max_layer_ratio=0.5)
    with pytest.raises(ValueError, match="target and target_ratio go together"):
        PruneConfig(target="macs")
    with pytest.raises(ValueError, match="per-layer ratios must lie strictly between 0 and 1"):
        PruneConfig(ratios={"features.0.0": 1.2})


def _channels_removed(original, pruned) -> float:
    """Fraction of the output channels of the prunable groups' root layers that pruning removed."""
    from edgecnn.compress.pruner import channel_table

    roots = set(prunable_layers(original, 32))
    rows = [r for r in channel_table(original, pruned) if r["layer"] in roots]
    return 1 - sum(r["out_after"] for r in rows) / sum(r["out_before"] for r in rows)


def _registered_methods() -> list[str]:
    from edgecnn.compress.prune import PRUNING

    return PRUNING.names()


def _registered_importances() -> list[str]:
    from edgecnn.compress.pruner import IMPORTANCE

    return IMPORTANCE.names()


@pytest.mark.parametrize("method", _registered_methods())
def test_every_registered_pruning_method_prunes_a_tiny_customnet_to_the_asked_ratio(method, trained, tmp_path):
    """prune.method names a registered handler; each one takes the model to ``ratio``: the fraction of channels
    removed (structured) or of weights zeroed (unstructured). A new method adds its measure here."""
    import copy

    model, meta, data, _ = trained
    reached = {"structured": lambda res, pruned: _channels_removed(model, pruned),
               "unstructured": lambda res, pruned: res.after["sparsity"]}
    assert method in reached, f"pruning method '{method}' is registered: add how its ratio is measured to this test"
    res = prune_model(copy.deepcopy(model), meta, data, PruneConfig(method=method, ratio=0.5), FAST, tmp_path,
                      show_progress=False, measure_latency=False)
    pruned, pmeta = load_checkpoint(res.checkpoint)
    assert pmeta.pruned is not None and pmeta.pruned["method"] == method == res.method
    assert reached[method](res, pruned) == pytest.approx(0.5, abs=0.02)


def test_the_importance_registry_serves_every_config_value():
    from typing import get_args

    from edgecnn.compress.pruner import IMPORTANCE, IMPORTANCES

    config_values = get_args(PruneConfig.model_fields["importance"].annotation)
    assert set(IMPORTANCE.names()) == set(IMPORTANCES) == set(config_values)
    with pytest.raises(EdgeCNNError, match="unknown importance 'l3'.*choose one of l1, l2, bn, taylor"):
        structured_prune(create_model("customnet", num_classes=10, input_size=32, **ARGS).eval(), 32, ratio=0.5,
                         importance="l3")


@pytest.mark.parametrize("importance", _registered_importances())
def test_every_registered_importance_prunes_to_the_asked_channel_ratio(importance):
    import copy

    from conftest import randomize_bn

    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=32, **ARGS).eval()
    randomize_bn(model)  # fresh BatchNorm scales are all 1: nothing to rank by
    original = copy.deepcopy(model)
    if importance == "taylor":
        torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.arange(8)).backward()
    structured_prune(model, 32, ratio=0.5, importance=importance)
    assert _channels_removed(original, model) == pytest.approx(0.5, abs=0.02)
