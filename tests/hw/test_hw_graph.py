"""LayerGraph: shapes, MACs, weights, bit widths and sparsity from ONNX, QDQ and QONNX files."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecnn.hw import HardwareModelError, load_graph
from edgecnn.hw.validation.reference_nets import cnv_qonnx, plain_cnn


def _single_conv(cin=4, cout=6, k=3, stride=1, pad=1, groups=1, hw=10, batch=1):
    w = np.ones((cout, cin // groups, k, k), np.float32)
    w[0] = 0.0  # one output filter of zeros: sparsity = 1/cout
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="c", kernel_shape=[k, k], strides=[stride, stride],
                          pads=[pad] * 4, group=groups)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_conv_shapes_and_macs_by_hand():
    g = load_graph(_single_conv(cin=4, cout=6, k=3, stride=2, pad=1, hw=10))
    (layer,) = g.layers
    # OH = floor((10 + 2 - 3) / 2) + 1 = 5; MACs = 5*5 * 6 * 4 * 9 = 5400
    assert layer.op == "conv" and layer.out_shape == (1, 6, 5, 5)
    assert layer.macs == 5400 and layer.weights == 6 * 4 * 9
    assert layer.sparsity == pytest.approx(1 / 6, abs=1e-6)
    assert (layer.w_bits, layer.a_bits) == (32, 32)


def test_grouped_and_depthwise_convs():
    g = load_graph(_single_conv(cin=8, cout=8, groups=8, hw=6))
    assert g.layers[0].op == "dwconv" and g.layers[0].macs == 6 * 6 * 8 * 1 * 9
    g = load_graph(_single_conv(cin=8, cout=16, groups=4, hw=6))
    assert g.layers[0].op == "gconv" and g.layers[0].macs == 6 * 6 * 16 * 2 * 9 and g.layers[0].groups == 4


def test_plain_cnn_layers_and_batch(make_conv_model):
    g = load_graph(make_conv_model(batch="N"), batch=3)  # dynamic batch dim set to 3
    ops = [layer.op for layer in g.layers]
    assert ops == ["conv", "act", "conv", "act", "reshape", "fc"]
    conv2, fc = g.layers[2], g.layers[5]
    assert conv2.out_shape == (3, 16, 8, 8) and conv2.macs == 3 * 8 * 8 * 16 * 8 * 9
    assert fc.macs == 3 * 16 * 8 * 8 * 10 and fc.cin == 1024 and fc.cout == 10
    assert g.batch == 3 and g.total_macs == sum(layer.macs for layer in g.layers)


def test_qonnx_bits_and_bn_folding():
    g = load_graph(cnv_qonnx(w_bits=2, a_bits=2))
    convs = g.compute_layers()
    assert len(convs) == 9 and len(g.unknown) == 0
    assert all(layer.w_bits == 2 for layer in convs)
    assert convs[0].a_bits == 8 and all(layer.a_bits == 2 for layer in convs[1:])
    assert all(layer.folded and layer.folded[0].startswith("batchnormalization") for layer in convs)
    assert not any(layer.op == "bn" for layer in g.layers)
    assert [layer.out_shape[-1] for layer in convs[:6]] == [30, 28, 12, 10, 3, 1]
    assert g.format == "qonnx"


def test_bipolar_quant_gives_one_bit():
    g = load_graph(cnv_qonnx(w_bits=1, a_bits=1))
    assert len(g.compute_layers()) == 9 and all(layer.w_bits == 1 for layer in g.compute_layers())
    pools = [layer for layer in g.layers if layer.op == "maxpool"]
    assert len(pools) == 2 and all(p.a_bits == 1 and p.out_bits == 1 for p in pools)  # MaxPool keeps its width


def test_qdq_model_bits(qdq_model):
    g = load_graph(qdq_model)
    assert g.format == "qdq"
    convs = g.compute_layers()
    assert all(layer.w_bits == 8 and layer.a_bits == 8 for layer in convs)
    assert {layer.op for layer in convs} == {"conv", "dwconv", "gconv", "fc"}
    assert not [layer for layer in g.layers if layer.onnx_op in ("QuantizeLinear", "DequantizeLinear")]


def test_unknown_op_is_listed_not_dropped():
    model = plain_cnn([(4, 3, 1, 1)], 8, [10])
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type, node.domain = "FancyAct", "my.domain"
    model.opset_import.append(helper.make_opsetid("my.domain", 1))
    g = load_graph(model)
    (odd,) = g.unknown
    assert odd.onnx_op == "FancyAct" and "not modelled" in odd.note
    assert odd.out_shape == odd.in_shape  # assumed, and said so
    assert g.layers[-1].op == "fc" and g.layers[-1].macs == 4 * 8 * 8 * 10


def test_malformed_file_gives_one_line_error(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(HardwareModelError, match=r"not a readable ONNX model.*valid \.onnx") as err:
        load_graph(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(HardwareModelError, match="does not exist"):
        load_graph(tmp_path / "missing.onnx")


def test_dynamic_spatial_dim_is_refused(tmp_path):
    model = _single_conv()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    with pytest.raises(HardwareModelError, match="dynamic dimension 'height'.*fixed image size"):
        load_graph(path)
