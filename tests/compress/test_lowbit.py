"""Low-bit QAT (Brevitas) and QONNX export: specs, conversion, sparsity, QONNX bit widths and parity."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import randomize_bn, require
from onnx import numpy_helper
from torch import nn

from edgecnn.compress.lowbit import (
    BitSpec,
    LowBitSpec,
    fold_batchnorm,
    layer_bits,
    load_lowbit_checkpoint,
    packed_weight_bits,
    parse_precision,
    qat_lowbit,
    recalibrate_bn,
    resolve_spec,
    tensor_sparsity,
    to_lowbit,
    weight_sparsity,
)
from edgecnn.errors import EdgeCNNError
from edgecnn.export.qonnx import export_qonnx, qonnx_layer_names, run_qonnx
from edgecnn.models.customnet import CustomNet, LeNet5

require("brevitas", "lowbit")
require("qonnx", "lowbit")
warnings.filterwarnings("ignore", module="brevitas")
SIZE = 16
#: The issue's example spec plus one exact layer name (w3, a6) inside a block that otherwise gets the default.
SPEC = {"default": {"w": 1, "a": 4}, "first": {"w": 4, "a": 4}, "last": {"w": 4, "a": 4}, "features.3": {"w": 2},
        "features.1.2.conv1.0": {"w": 3, "a": 6}}
#: Expected (w, a) per Conv2d/Linear of TINY under SPEC; a=None: no activation after the layer.
EXPECTED = {
    "features.0.0": (4, 4),  # first
    "features.1.0.0": (1, 4),
    "features.1.2.conv1.0": (3, 6),  # exact name
    "features.1.2.conv2.0": (1, 4),  # owns the post-add ReLU
    "features.2.0.0": (1, 4),
    "features.2.2.conv1.0": (1, 4),
    "features.2.2.conv2.0": (1, 4),
    "features.3.0.0": (2, 4),  # container features.3
    "features.3.2.conv1.0": (2, 4),
    "features.3.2.conv2.0": (2, 4),
    "classifier.2": (4, None),  # last; the classifier has no activation
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _tiny(**kwargs) -> nn.Module:
    """Residual CustomNet, 16 px, stem + 3 stages; BN statistics randomised as after training (no ties at 0)."""
    torch.manual_seed(0)
    model = CustomNet(num_classes=4, input_size=SIZE, stem_channels=4, channels=[8, 8, 16], **kwargs)
    _random_bn(model)
    return model.eval()


def _random_bn(model: nn.Module) -> None:
    randomize_bn(model)


@pytest.fixture(scope="module")
def tiny_float():
    torch.set_num_threads(1)
    return _tiny()


@pytest.fixture(scope="module")
def tiny_lowbit(tiny_float):
    return to_lowbit(tiny_float, SPEC, SIZE)


@pytest.fixture(scope="module")
def tiny_qonnx(tiny_lowbit, tmp_path_factory):
    return export_qonnx(tiny_lowbit, tmp_path_factory.mktemp("qonnx") / "tiny.onnx", SIZE)


def _weight_quantizers(path: Path) -> dict[str, tuple[str, int]]:
    """{module name: (quantizer op, bit width)} of the weight input of every Conv/Gemm of a QONNX file."""
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    names = qonnx_layer_names(path)
    out = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        q = producer[node.input[1]]
        bits = 1 if q.op_type == "BipolarQuant" else int(inits[q.input[3]].reshape(-1)[0])
        out[names[node.name]] = (q.op_type, bits)
    return out


# ------------------------------------------------------------------------------------------------ specs


@pytest.mark.parametrize("text, w, a", [("w4a4", 4, 4), ("w2a8", 2, 8), ("W1A1", 1, 1), ("w8a2", 8, 2),
                                        ("binary", 1, 8), ("ternary", 2, 8), ("binary-a4", 1, 4),
                                        ("ternary-a2", 2, 2)])
def test_parse_precision(text, w, a):
    assert parse_precision(text) == BitSpec(w, a)


@pytest.mark.parametrize("text", ["w0a4", "w9a4", "w4a0", "w4a9", "int8", "w4", "binary-a9", ""])
def test_parse_precision_rejects_bad_names_in_one_line(text):
    with pytest.raises(EdgeCNNError) as err:
        parse_precision(text)
    msg = str(err.value)
    assert "\n" not in msg and "precision" in msg


def test_spec_applies_to_the_named_layers_only(tiny_float, tiny_lowbit):
    plan = resolve_spec(tiny_float, SPEC, SIZE)
    got = {layer.name: (layer.w, layer.a) for layer in plan.layers}
    assert got == EXPECTED
    assert plan.layers[0].role == "first" and plan.layers[-1].role == "last"
    assert any("bits.last.a ignored" in note for note in plan.notes)
    # the converted model carries exactly these weight bit widths ...
    assert layer_bits(tiny_lowbit) == {name: w for name, (w, _) in EXPECTED.items()}
    # ... and each layer's activation module has its 'a' bits (every layer but the classifier has one)
    activated = [layer for layer in plan.layers if layer.activation is not None]
    assert len(activated) == sum(a is not None for _, a in EXPECTED.values()) == 10
    for layer in activated:
        act = tiny_lowbit.get_submodule(layer.activation)
        assert int(act.act_quant.bit_width()) == layer.a, layer.activation
    assert int(tiny_lowbit.input_quant.act_quant.bit_width()) == 8  # the network input stays at 8 bits
    # the residual branches end in a quantizer with the conv2's a bits, so both inputs of the add are quantized
    branch_quant = tiny_lowbit.get_submodule("features.1.2.conv2")[-1]
    assert int(branch_quant.act_quant.bit_width()) == 4 and branch_quant.act_quant.is_signed


def test_spec_accepts_precision_strings_and_inherits_fields(tiny_float):
    spec = LowBitSpec.parse({"default": "w3a5", "features.2": {"a": 2}, "last": "binary"})
    plan = resolve_spec(tiny_float, spec, SIZE)
    by_name = {layer.name: layer for layer in plan.layers}
    assert (by_name["features.2.0.0"].w, by_name["features.2.0.0"].a) == (3, 2)
    assert (by_name["features.1.0.0"].w, by_name["features.1.0.0"].a) == (3, 5)
    assert by_name["classifier.2"].w == 1


@pytest.mark.parametrize("spec, needle", [
    ({"default": {"w": 0}}, "w=0 is out of range"),
    ({"default": {"w": 9, "a": 4}}, "w=9 is out of range"),
    ({"first": {"a": 9}}, "a=9 is out of range"),
    ({"features.3": {"a": 0}}, "a=0 is out of range"),
    ({"classifer.2": {"w": 2}}, "unknown layer 'classifer.2'"),
    ({"features.1.0.1": {"w": 2}}, "unknown layer 'features.1.0.1'"),  # a BatchNorm, not a Conv2d/Linear
    ({"classifier.2": {"a": 4}}, "has no activation"),
    ({"features.1.2.conv1.0": {"w": 2, "b": 3}}, "unknown key 'b'"),
    ({"default": {"w": "quaternary"}}, "not a bit width"),
])
def test_bad_spec_is_a_one_line_edgecnn_error(tiny_float, spec, needle):
    with pytest.raises(EdgeCNNError) as err:
        resolve_spec(tiny_float, spec, SIZE)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_unknown_layer_error_suggests_the_close_name(tiny_float):
    with pytest.raises(EdgeCNNError, match="did you mean: classifier.2"):
        resolve_spec(tiny_float, {"classifer.2": {"w": 2}}, SIZE)


# ------------------------------------------------------------------------------------------------ conversion


def test_to_lowbit_starts_from_the_float_weights_and_keeps_names(tiny_float):
    q = to_lowbit(tiny_float, "w8a8", SIZE)
    assert isinstance(tiny_float.features[0][0], nn.Conv2d) and type(tiny_float) is CustomNet  # float untouched
    float_state = tiny_float.state_dict()
    assert set(float_state) <= set(q.state_dict())  # same names: a float checkpoint loads into the QAT model
    assert set(layer_bits(q)) == set(EXPECTED)  # every Conv2d/Linear is quantized (and checked below)
    for name, w_bits in layer_bits(q).items():
        mod = q.get_submodule(name)
        assert torch.equal(mod.weight, float_state[f"{name}.weight"])
        qw = mod.quant_weight()
        assert w_bits == 8 and (qw.value - mod.weight).abs().max() <= qw.scale.max() / 2 + 1e-7
    x = torch.randn(8, 3, SIZE, SIZE)
    with torch.no_grad():
        ref, out = tiny_float(x), q(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()  # w8a8 stays close to the float model
    # a 2-bit model is much further away: the quantization is real
    with torch.no_grad():
        out2 = to_lowbit(tiny_float, "w2a2", SIZE)(x)
    assert (out2 - ref).abs().max() > (out - ref).abs().max()


def test_real_calibration_batches_re_estimate_the_bn_statistics(tiny_float):
    """With real batches, every BN's running mean/var become the statistics of its input in the quantized model
    (quantized weights shift them: one pass, BNs in train mode, as AdaBN); with the random stand-in the float
    model's trained statistics are kept."""
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 3, SIZE, SIZE, generator=gen) * 0.7 + 0.2 for _ in range(3)]
    q = to_lowbit(tiny_float, "w2a2", SIZE, calib=batches)
    seen: dict[str, list[torch.Tensor]] = {}
    bns = {n: m for n, m in q.named_modules() if isinstance(m, nn.BatchNorm2d)}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, []).append(i[0].detach()))
             for n, m in bns.items()]
    with torch.no_grad():
        for x in batches:
            q(x)
    for h in hooks:
        h.remove()
    first = next(iter(bns))
    for name, bn in bns.items():
        inputs = torch.cat(seen[name])
        mean = inputs.mean(dim=(0, 2, 3))
        var = torch.stack([b.var(dim=(0, 2, 3)) for b in seen[name]]).mean(0)  # cumulative average of batch vars
        old = tiny_float.get_submodule(name)
        if name == first:  # the first BN sees exactly its eval-mode input
            assert torch.allclose(bn.running_mean, mean, atol=1e-5)
            assert torch.allclose(bn.running_var, var, rtol=1e-4, atol=1e-5)
        # later ones saw inputs normalised with batch statistics upstream: far closer than the stale float ones
        assert (bn.running_mean - mean).norm() < 0.5 * (old.running_mean - mean).norm(), name
        assert (bn.running_var - var).norm() < 0.5 * (old.running_var - var).norm(), name
        assert bn.momentum == tiny_float.get_submodule(name).momentum  # restored after the re-estimation
    kept = to_lowbit(tiny_float, "w2a2", SIZE)
    for name in bns:
        assert torch.equal(kept.get_submodule(name).running_var, tiny_float.get_submodule(name).running_var)


def test_recalibrate_bn_leaves_the_training_mode_as_it_was(tiny_float):
    q = to_lowbit(tiny_float, "w4a4", SIZE).train()
    recalibrate_bn(q, torch.randn(4, 3, SIZE, SIZE))
    assert q.training and all(m.training for m in q.modules())


def test_ternary_scale_minimises_the_quantization_error():
    """2-bit weights use the MSE-optimal per-channel scale: its error is below the max- and mean-|w| grids'."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3)
    q = to_lowbit(nn.Sequential(conv), "w2a8", 8).get_submodule("0")
    w = conv.weight.detach()
    qw = q.quant_weight()
    ints = torch.round(qw.value / qw.scale)
    assert set(ints.unique().tolist()) <= {-1.0, 0.0, 1.0}

    def err(scale: torch.Tensor) -> torch.Tensor:
        return ((torch.clamp(torch.round(w / scale), -1, 1) * scale - w) ** 2).sum(dim=(1, 2, 3))

    mse = err(qw.scale.detach())
    for other in (w.abs().amax(dim=(1, 2, 3), keepdim=True), w.abs().mean(dim=(1, 2, 3), keepdim=True)):
        assert (mse <= err(other) + 1e-6).all()
    assert (mse < err(w.abs().amax(dim=(1, 2, 3), keepdim=True))).all()


def test_binary_layers_have_two_values_per_output_channel(tiny_lowbit):
    binary = [name for name, bits in layer_bits(tiny_lowbit).items() if bits == 1]
    assert len(binary) == sum(w == 1 for w, _ in EXPECTED.values()) == 5
    for name in binary:
        mod = tiny_lowbit.get_submodule(name)
        values = mod.quant_weight().value.detach()
        w = mod.weight.detach()
        for c in range(values.shape[0]):
            distinct = values[c].unique()
            scale = w[c].abs().mean()  # per-channel scale: mean |w| of the channel
            assert len(distinct) == 2, (name, c)
            torch.testing.assert_close(distinct, torch.stack([-scale, scale]))
    four_bit = tiny_lowbit.get_submodule("features.0.0").quant_weight().value.detach()
    assert max(len(four_bit[c].unique()) for c in range(four_bit.shape[0])) > 2


def test_tensor_sparsity_on_a_hand_made_tensor():
    t = torch.tensor([[0.0, 1.0, -2.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    assert tensor_sparsity(t) == 5 / 8
    assert tensor_sparsity(torch.tensor([1, 2, 3])) == 0.0
    assert tensor_sparsity(torch.zeros(0)) == 0.0


def test_weight_sparsity_counts_zeros_after_quantization():
    model = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        # 4-bit narrow range: per-channel scale = max|w| / 7
        model[0].weight.copy_(torch.tensor([[1.0, 0.05, -0.1, -1.0],   # scale 1/7: ints 7, 0, -1, -7
                                            [0.7, 0.0, 0.3, -0.7]]))  # scale 0.1: ints 7, 0, 3, -7
        model[0].bias.zero_()
    assert tensor_sparsity(model[0].weight) == 1 / 8  # only one exact zero in float
    q = to_lowbit(model, "w4a8", (4,))
    (row,) = weight_sparsity(q)
    assert row == {"layer": "0", "w_bits": 4, "weights": 8, "zeros": 2, "sparsity": 0.25}
    assert packed_weight_bits(q) == 8 * 4 + 2 * 32  # weights at 4 bits, biases at 32
    # ternary, MSE-optimal scale: row 1 s=1 -> 1, 0, 0, -1 (error .0125); row 2 s=.7 -> 1, 0, 0, -1 (error .09, while
    # s=.55 would keep .3 as 1 at error .1075)
    ternary = weight_sparsity(to_lowbit(model, "ternary", (4,)))[0]
    assert ternary["w_bits"] == 2 and ternary["zeros"] == 4


def test_packed_weight_bits_of_the_mixed_model(tiny_lowbit):
    expected = 0
    for name, (w, _) in EXPECTED.items():
        mod = tiny_lowbit.get_submodule(name)
        expected += mod.weight.numel() * w + (mod.bias.numel() * 32 if mod.bias is not None else 0)
    assert packed_weight_bits(tiny_lowbit) == expected
    rows = {r["layer"]: r for r in weight_sparsity(tiny_lowbit)}
    assert rows["features.1.0.0"]["sparsity"] == 0.0  # binary weights are never zero
    assert 0.0 < rows["features.3.0.0"]["sparsity"] < 1.0  # ternary weights are


# ------------------------------------------------------------------------------------------------ QONNX


def test_qonnx_has_the_asked_bit_width_per_layer(tiny_lowbit, tiny_qonnx):
    assert tiny_qonnx.name.endswith(".qonnx.onnx")
    quant = _weight_quantizers(tiny_qonnx)
    assert set(quant) == set(EXPECTED)
    for name, (w, _) in EXPECTED.items():
        assert quant[name] == (("BipolarQuant", 1) if w == 1 else ("Quant", w)), name
    proto = onnx.load(str(tiny_qonnx))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    first_conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    input_quant = producer[first_conv.input[0]]
    assert input_quant.op_type == "Quant" and int(inits[input_quant.input[3]]) == 8
    relu_bits = sorted(int(inits[n.input[3]]) for n in proto.graph.node
                       if n.op_type == "Quant" and producer.get(n.input[0]) is not None
                       and producer[n.input[0]].op_type == "Relu")
    assert relu_bits == sorted([6] + [4] * 9)  # one a=6 layer, nine ReLUs at a=4
    adds = [n for n in proto.graph.node if n.op_type == "Add"]
    assert len(adds) == 3  # one per residual block
    for add in adds:  # residual adds: both inputs quantized
        for tensor in add.input:
            src = producer[tensor]
            src = producer[src.input[0]] if src.op_type == "MaxPool" else src
            assert src.op_type == "Quant", add.name


def test_qonnx_matches_pytorch(tiny_lowbit, tiny_qonnx):
    x = torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = tiny_lowbit(x).numpy()
    out = run_qonnx(tiny_qonnx, x.numpy())
    assert out.shape == ref.shape and ref.std(0).min() > 0  # outputs depend on the input
    assert np.abs(out - ref).max() <= 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("make, precision", [
    (lambda: LeNet5(num_classes=3, input_size=SIZE), "w3a4"),  # biases, no BN, Linear stack
    (lambda: _tiny(activation="silu", residual=False, head_width=8), "ternary-a5"),  # float SiLU + QuantIdentity
    (lambda: _seq(), "binary-a1"),  # Sequential root, AvgPool, bipolar activations
])
def test_qonnx_matches_pytorch_on_other_nets(make, precision, tmp_path):
    q = to_lowbit(make().eval(), precision, SIZE)
    path = export_qonnx(q, tmp_path / "m.qonnx.onnx", SIZE)
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = q(x).numpy()
    out = run_qonnx(path, x.numpy())
    assert np.abs(out - ref).max() <= 1e-4 and (out.argmax(1) == ref.argmax(1)).all()
    w = parse_precision(precision).w
    assert {bits for _, bits in _weight_quantizers(path).values()} == {w}


def _scales(path: Path) -> list[np.ndarray]:
    """Scale inputs of every Quant / BipolarQuant node of a QONNX file (weights and activations)."""
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    out = []
    for node in proto.graph.node:
        if node.op_type in ("Quant", "BipolarQuant"):
            name = node.input[1]
            while name not in inits:  # scales computed in-graph (e.g. Identity) are followed to their constant
                name = producer[name].input[0]
            out.append(inits[name])
    return out


def test_power_of_two_bn_folded_qonnx_is_bit_identical_to_pytorch(tmp_path):
    """With power-of-two scales and BNs folded, every product and sum is exact in float32: QONNX execution (ONNX
    Runtime kernels) equals the PyTorch model exactly at 8 bits, where float scales differ on some inputs."""
    float_model = _tiny()
    spec = {"default": {"w": 8, "a": 8}, "scaling": "power_of_two", "fold_bn": True}
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(128, 3, SIZE, SIZE, generator=gen)
    q = to_lowbit(float_model, spec, SIZE, calib=[x[:32]])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    path = export_qonnx(q, tmp_path / "po2.qonnx.onnx", SIZE, batch=64)
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    scales = _scales(path)
    assert len(scales) >= 2 * len(EXPECTED)  # the weights' and the activations' quantizers
    for scale in scales:
        assert np.array_equal(np.exp2(np.round(np.log2(scale))), scale)  # powers of two only
    with torch.no_grad():
        ref = q(x).numpy()
    out = np.concatenate([run_qonnx(path, x[i:i + 64].numpy()) for i in (0, 64)])
    assert ref.std(0).min() > 0 and np.array_equal(out, ref)
    assert q.lowbit_spec.to_dict() == {"default": {"w": 8, "a": 8}, "scaling": "power_of_two", "fold_bn": True}


def test_fold_batchnorm_keeps_the_function_and_the_names():
    float_model = _tiny()
    folded = fold_batchnorm(copy.deepcopy(float_model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.features[0][0].bias is not None and isinstance(folded.features[0][1], nn.Identity)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(folded(x), float_model(x), atol=1e-5)


@pytest.mark.parametrize("spec, needle", [({"scaling": "log"}, "scaling='log'"), ({"fold_bn": "yes"}, "fold_bn='yes'")])
def test_bad_model_wide_keys_are_one_line_errors(spec, needle):
    with pytest.raises(EdgeCNNError) as err:
        LowBitSpec.parse(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_model_wide_keys_are_not_layer_names_and_defaults_keep_old_specs(tiny_float):
    spec = LowBitSpec.parse({"default": {"w": 4, "a": 4}, "scaling": "po2"})
    assert spec.layers == {} and spec.scaling == "power_of_two" and not spec.fold_bn
    assert LowBitSpec.parse({"default": {"w": 4, "a": 4}}).to_dict() == {"default": {"w": 4, "a": 4}}
    assert [layer.w for layer in resolve_spec(tiny_float, spec, SIZE).layers] == [4] * len(EXPECTED)


def _seq() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    _random_bn(model)
    return model


def test_layer_graph_reads_the_qonnx_bit_widths(tiny_lowbit, tiny_qonnx):
    from edgecnn.hw.graph import load_graph

    graph = load_graph(tiny_qonnx)
    assert graph.format == "qonnx"
    names = qonnx_layer_names(tiny_qonnx)
    compute = graph.compute_layers()
    assert [names[layer.name] for layer in compute] == list(EXPECTED)
    sparsity = {r["layer"]: r["sparsity"] for r in weight_sparsity(tiny_lowbit)}
    for layer in compute:
        module = names[layer.name]
        assert layer.w_bits == EXPECTED[module][0], module
        assert layer.sparsity == pytest.approx(sparsity[module], abs=1e-6), module
    assert compute[0].a_bits == 8  # the first layer reads the 8-bit input


# ------------------------------------------------------------------------------------------------ QAT


def test_qat_fine_tunes_from_float_and_checkpoints_round_trip(tmp_path):
    from edgecnn.config import TrainConfig
    from edgecnn.data.augment import Augmentation
    from edgecnn.data.batches import Normalization, TensorSet
    from edgecnn.data.prepare import PreparedData
    from edgecnn.train.checkpoint import read_checkpoint

    gen = torch.Generator().manual_seed(0)

    def split(n):  # class = the bright colour channel: learnable in a few steps
        labels = torch.randint(0, 3, (n,), generator=gen)
        images = torch.randint(0, 80, (n, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)
        for c in range(3):
            images[labels == c, c] += 150
        return TensorSet(images, labels)

    data = PreparedData(root=tmp_path, classes=["r", "g", "b"], splits={"train": split(96), "val": split(48)},
                        files={}, normalization=Normalization((0.5,) * 3, (0.25,) * 3),
                        augmentation=Augmentation(False, False, False, 0.0), image_size=SIZE)
    torch.manual_seed(0)
    float_model = CustomNet(num_classes=3, input_size=SIZE, stem_channels=4, channels=[8, 16])
    start = {k: v.clone() for k, v in float_model.state_dict().items()}
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, warmup_epochs=0, label_smoothing=0.0)
    meta = {"arch": "customnet", "arch_args": {"stem_channels": 4, "channels": [8, 16]}, "classes": data.classes,
            "input_size": SIZE, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    spec = {"default": "w4a4", "first": {"w": 8}}
    q, result = qat_lowbit(float_model, data, cfg, tmp_path / "qat", spec=spec, meta=meta)
    assert result.best_val_acc >= 0.9  # chance is 1/3
    assert result.amp == "fp32"
    assert not torch.equal(q.get_submodule("features.0.0").weight, start["features.0.0.weight"])  # trained
    assert torch.equal(float_model.state_dict()["features.0.0.weight"], start["features.0.0.weight"])
    state, _, meta = read_checkpoint(result.best_checkpoint)
    assert meta["lowbit"]["layers"][0]["w"] == 8 and meta["lowbit"]["layers"][1]["w"] == 4
    assert meta["epoch"] == result.best_epoch
    fresh = to_lowbit(float_model, spec, SIZE)
    fresh.load_state_dict(state, strict=True)  # the Brevitas state dict (learned act scales too) round-trips
    loaded, _ = load_lowbit_checkpoint(result.best_checkpoint)  # rebuilt from the metadata alone
    assert layer_bits(loaded) == layer_bits(q)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), q(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded(x), q(x), rtol=0, atol=0)


def test_export_refuses_a_float_model(tiny_float, tmp_path):
    with pytest.raises(EdgeCNNError, match="to_lowbit"):
        export_qonnx(tiny_float, tmp_path / "float", SIZE)
    assert not list(tmp_path.iterdir())


def test_qonnx_parity_runs_a_batched_copy_and_the_remainder(tiny_lowbit, tiny_qonnx, tmp_path):
    from edgecnn.variants.lowbit_sweep import PARITY_BATCH, qonnx_parity

    path = tmp_path / "m.qonnx.onnx"
    path.write_bytes(tiny_qonnx.read_bytes())
    n = PARITY_BATCH + 3
    x = torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = tiny_lowbit(x)
    m = qonnx_parity(tiny_lowbit, path, x, logits, SIZE)
    assert m["qonnx_images"] == n and m["qonnx_top1_agreement"] == 1.0
    assert m["qonnx_max_abs_diff"] <= 1e-4 and m["qonnx_within_tolerance"] == 1.0
    assert 0 <= m["torch_self_max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.qonnx.onnx"]  # the batched copy is removed
    wrong = logits.clone()
    wrong[0, 0] += 1.0  # a real mismatch shows in the numbers
    m = qonnx_parity(tiny_lowbit, path, x, wrong, SIZE)
    assert m["qonnx_max_abs_diff"] >= 0.99 and m["qonnx_within_tolerance"] == pytest.approx((n - 1) / n)


def test_eval_scores_a_qonnx_file_in_qonnx(tiny_lowbit, tmp_path):
    """`edgecnn eval` on a QONNX file: its metadata's pre-processing, qonnx's executor, the model's own labels."""
    from PIL import Image

    from edgecnn.api import evaluate_file
    from edgecnn.data.batches import Normalization, iterate_batches
    from edgecnn.data.for_model import folder_tensors

    classes = ["a", "b", "c", "d"]
    norm = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    path = export_qonnx(tiny_lowbit, tmp_path / "m.qonnx.onnx", SIZE,
                        meta={"classes": classes, "input_size": SIZE, "normalization": norm, "precision": "w1a4"})
    rng = np.random.default_rng(3)
    for c in classes:
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / c / f"{i}.png")
    scored = evaluate_file(path, tmp_path / "imgs", batch_size=5)
    data, _ = folder_tensors(tmp_path / "imgs", classes, SIZE)
    x = torch.cat([b for b, _ in iterate_batches(data, 64, Normalization(tuple(norm["mean"]), tuple(norm["std"])))])
    with torch.no_grad():
        expected = (tiny_lowbit(x).argmax(1) == data.labels).float().mean().item()
    assert scored["n"] == 12 and scored["precision"] == "w1a4"
    assert scored["accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("blocks,spec", [(0, "w4a4"), (1, "w4a4"), (0, "w2a2")])  # 0: a max-pool before the pool
def test_finn_ready_pools_on_the_activation_grid(blocks, spec, tmp_path):
    """finn_ready's head pools with Brevitas' TruncAvgPool2d (sum, then a floor shift to 8 bits) on the grid of the
    activation before it: the QONNX file has a Trunc node and no float GlobalAveragePool, it computes what the
    Brevitas copy computes, and it stays within the 8-bit rounding of the trained model; the model is not changed."""
    require("qonnx", "lowbit")
    import onnx

    from edgecnn.compress.lowbit import finn_ready
    from edgecnn.export.qonnx import export_qonnx, run_qonnx

    model = _tiny(blocks=blocks, residual=False)
    q = to_lowbit(model, spec, SIZE)
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad(), finn_ready(q) as ready:
        assert type(ready.classifier[0]).__name__ == "QuantGlobalAvgPool"
        path = export_qonnx(ready, tmp_path / "m.qonnx.onnx", SIZE)
        ref = ready(x)
    assert isinstance(q.classifier[0], nn.AdaptiveAvgPool2d)  # the training model is back
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Trunc" in ops and "GlobalAveragePool" not in ops
    with torch.no_grad():
        trained = q(x)
    assert abs(run_qonnx(path, x.numpy()) - ref.numpy()).max() < 1e-4
    assert (ref - trained).abs().max() <= 0.05 * trained.abs().max()


def test_shared_residual_puts_both_inputs_of_each_add_on_the_activation_grid(tiny_float):
    """``residual: shared``: the branch ends in a signed quantizer one bit wider whose scale is always the scale of the
    activation the skip comes from; the skip passes it unchanged; nothing is saved twice; the default keeps two
    grids."""
    from edgecnn.models.customnet import ResidualBlock

    q = to_lowbit(tiny_float, {"default": "w4a4", "residual": "shared"}, SIZE)
    blocks = {n: m for n, m in q.named_modules() if isinstance(m, ResidualBlock)}
    assert blocks and all(b.skip_quant is b.conv2[-1] for b in blocks.values())
    assert not any(".skip_quant." in k for k in q.state_dict())
    seen = {}
    for name, block in blocks.items():
        block.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].detach()))
    with torch.no_grad():
        q(torch.randn(2, 3, SIZE, SIZE))
    for name, block in blocks.items():
        quant = block.skip_quant
        assert round(float(quant.act_quant.bit_width())) == 5
        with torch.no_grad():
            assert torch.equal(quant(seen[name]), seen[name])  # the skip is on the grid already: unchanged
            steps = block.conv2(block.conv1(seen[name])) / quant.act_quant.scale()
        assert torch.allclose(steps, steps.round(), atol=1e-3)  # the branch lands on the same grid
    separate = to_lowbit(tiny_float, "w4a4", SIZE)
    assert all(b.skip_quant is None for b in separate.modules() if isinstance(b, ResidualBlock))


def test_residual_mode_is_checked():
    with pytest.raises(EdgeCNNError, match="residual='both' is not a residual mode"):
        LowBitSpec.parse({"default": "w4a4", "residual": "both"})
    assert LowBitSpec.parse({"default": "w4a4", "residual": "shared"}).to_dict()["residual"] == "shared"
    assert "residual" not in LowBitSpec.parse("w4a4").to_dict()  # the default leaves earlier specs' hashes alone


def test_dataflow_targets_price_the_finn_ready_file_of_a_lowbit_variant(tmp_path):
    """A low-bit variant's dataflow columns come from the FINN-ready file beside its QONNX file when there is one
    (the file FINN builds); other precisions and variants without one are priced on their own file."""
    from edgecnn.hw.validation.reference_nets import mlp_qonnx
    from edgecnn.variants.hardware import hardware_columns
    from edgecnn.variants.lowbit_sweep import finn_file
    from edgecnn.variants.precisions import get_precision

    artefact = tmp_path / "model.qonnx.onnx"
    onnx.save(mlp_qonnx([64] * 3), str(artefact))
    alone = hardware_columns(get_precision("wXaY"), artefact, ["pynq-z1"])
    onnx.save(mlp_qonnx([256] * 3), str(finn_file(artefact)))
    assert finn_file(artefact).name == "model.finn.qonnx.onnx"
    ready = hardware_columns(get_precision("wXaY"), artefact, ["pynq-z1"])
    assert ready["lut_pynq-z1"] > alone["lut_pynq-z1"]  # the wider MLP beside it was priced


def test_a_cached_sweep_record_loses_the_hardware_columns_an_earlier_edgecnn_stored():
    """The sweep's hardware columns have one producer (variants.hardware, on every run): estimates an earlier sweep
    cached in its stage record, under a target's name or alias, are dropped on read; measurements stay."""
    from edgecnn.hw.targets import list_targets
    from edgecnn.variants.lowbit_sweep import _measured_only

    target = next(t for t in list_targets() if t.kind == "dataflow")
    alias = target.aliases[0] if target.aliases else target.name
    cached = {"accuracy": 0.9, "packed_weight_bits": 123, "latency_ms_onnxruntime_b1": 1.5,
              f"fps_{target.name}": 1000.0, f"lut_{target.name}": 5000, f"fits_{target.name}": True,
              f"finn_{target.name}": "builds", f"fps_finn_{alias}": 900.0, f"unmapped_{alias}": []}
    assert _measured_only(cached) == {"accuracy": 0.9, "packed_weight_bits": 123, "latency_ms_onnxruntime_b1": 1.5}
