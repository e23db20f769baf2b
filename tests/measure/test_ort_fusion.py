"""The exact CPU rewrites of DPU-style QDQ graphs: ONNX Runtime fuses them into integer kernels afterwards, and the
outputs equal the unoptimized graph's (saturation included); float-scale files that already fuse stay untouched."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecnn.measure.ort_fusion import fuse_for_cpu
from edgecnn.measure.runtimes import _cpu_fused_bytes, ort_session  # noqa: E402


def _qdq_conv_graph(act_dtype=np.int8, act_zero=0, bias_int8=True, out_scale=2.0 ** -5):
    """input -> Q/DQ -> Conv -> Relu -> Q/DQ -> Conv -> Clip(0, 6) -> Q/DQ -> output, Quark XINT8 style."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq(x, name, scale, dtype=act_dtype, zero=act_zero):
        const(name + "_s", np.float32(scale))
        const(name + "_z", np.array(zero, dtype=dtype))
        nodes.append(helper.make_node("QuantizeLinear", [x, name + "_s", name + "_z"], [name + "_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_z"], [name + "_dq"]))
        return name + "_dq"

    def conv(x, name, cin, cout, in_scale):
        w_scale = 2.0 ** -6
        const(name + "_wq", rng.integers(-127, 128, (cout, cin, 3, 3)).astype(np.int8))
        const(name + "_ws", np.float32(w_scale))
        const(name + "_wz", np.int8(0))
        nodes.append(helper.make_node("DequantizeLinear", [name + "_wq", name + "_ws", name + "_wz"], [name + "_w"]))
        if bias_int8:  # DPU files carry int8 biases on their own power-of-two grid
            const(name + "_bq", rng.integers(-100, 100, cout).astype(np.int8))
            const(name + "_bs", np.float32(2.0 ** -4))
            const(name + "_bz", np.int8(0))
            nodes.append(helper.make_node("DequantizeLinear", [name + "_bq", name + "_bs", name + "_bz"],
                                          [name + "_b"]))
        else:  # what ONNX Runtime fuses as it is: int32 at input_scale * weight_scale
            const(name + "_bq", rng.integers(-2000, 2000, cout).astype(np.int32))
            const(name + "_bs", np.float32(in_scale * w_scale))
            const(name + "_bz", np.int32(0))
            nodes.append(helper.make_node("DequantizeLinear", [name + "_bq", name + "_bs", name + "_bz"],
                                          [name + "_b"], axis=0))
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name + "_y"], pads=[1, 1, 1, 1]))
        return name + "_y"

    x = qdq("input", "in", 2.0 ** -3)
    y = conv(x, "c1", 4, 8, 2.0 ** -3)
    if bias_int8:
        nodes.append(helper.make_node("Relu", [y], ["r1"]))
        y = "r1"
    x = qdq(y, "a1", 2.0 ** -3)
    y = conv(x, "c2", 8, 8, 2.0 ** -3)
    if bias_int8:
        const("lo", np.float32(0.0))
        const("hi", np.float32(6.0))
        nodes.append(helper.make_node("Clip", [y, "lo", "hi"], ["r2"]))
        y = "r2"
    out = qdq(y, "a2", out_scale)  # 2^-5: Q(6) = 192 saturates at 127, the clamp must saturate the same way
    nodes.append(helper.make_node("Identity", [out], ["logits"]))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["N", 4, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _unoptimized(model):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _optimized_ops(model_bytes, tmp_path) -> set[str]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}


@pytest.mark.parametrize(("act_dtype", "act_zero"), [(np.int8, 0), (np.uint8, 128), (np.uint8, 20)])
def test_rewritten_graph_fuses_and_computes_the_same(tmp_path, act_dtype, act_zero):
    model = _qdq_conv_graph(act_dtype, act_zero)
    path = tmp_path / "dpu.onnx"
    onnx.save(model, str(path))
    assert "QLinearConv" not in _optimized_ops(model.SerializeToString(), tmp_path)  # why the rewrite exists

    fused = onnx.load(str(path))
    report = fuse_for_cpu(fused)
    assert report.biases == 2 and report.clamps == 2
    assert report.uint8_zero_points == (3 if act_dtype is np.int8 else 0)
    assert "QLinearConv" in _optimized_ops(fused.SerializeToString(), tmp_path)
    assert fused.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # interface unchanged

    # large inputs: both quantizers saturate, and Clip(0, 6) meets the saturated 127 of the 2^-5 grid
    x = (np.random.default_rng(1).standard_normal((16, 4, 8, 8)) * 8).astype(np.float32)
    want = _unoptimized(model).run(None, {"input": x})[0]
    got = ort_session(path, threads=1).run(None, {"input": x})[0]
    step = 2.0 ** -5
    assert np.abs(got - want).max() <= step + 1e-9  # ONNX Runtime's integer requantization: at most one step
    assert np.mean(got == want) >= 0.999
    top = np.iinfo(act_dtype).max - act_zero
    assert want.max() == pytest.approx(min(6.0, step * top))  # the grid's saturation or Relu6's ceiling
    assert want.min() == 0.0  # the Relu6 floor survives the move behind the quantizer


def test_relu_moves_behind_quantizer_exactly_for_any_zero_point(tmp_path):
    model = _qdq_conv_graph(np.uint8, 20)
    fused = onnx.load_from_string(model.SerializeToString())
    fuse_for_cpu(fused)
    clips = [n for n in fused.graph.node if n.op_type == "Clip"]
    inits = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    bounds = sorted((int(inits[c.input[1]]), int(inits[c.input[2]])) for c in clips)
    assert bounds == [(20, 20 + 192), (20, 255)]  # Q(0) = zero point; Q(6) = 20 + 6 / 2^-5; Relu has no top
    x = (np.random.default_rng(2).standard_normal((8, 4, 8, 8)) * 3).astype(np.float32)
    want = _unoptimized(model).run(None, {"input": x})[0]
    assert np.array_equal(_unoptimized(fused).run(None, {"input": x})[0], want)  # same arithmetic, unfused


def test_files_that_already_fuse_stay_as_written(tmp_path):
    model = _qdq_conv_graph(np.uint8, 128, bias_int8=False)
    path = tmp_path / "float_scale.onnx"
    onnx.save(model, str(path))
    assert not fuse_for_cpu(onnx.load(str(path))).changed
    assert _cpu_fused_bytes(path) is None


def test_quantizer_on_the_interface_keeps_its_type():
    model = _qdq_conv_graph(np.int8, 0)
    graph = model.graph
    final_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.output[0] == "a2_q")
    graph.node.remove(next(n for n in graph.node if n.op_type == "Identity"))
    graph.node.remove(next(n for n in graph.node if n.input and n.input[0] == "a2_q"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(final_q.output[0], TensorProto.INT8, ["N", 8, 8, 8]))
    fuse_for_cpu(model)
    zeros = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert zeros["a2_z"].dtype == np.int8 and zeros["a1_z"].dtype == np.uint8
