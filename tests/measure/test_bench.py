from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgecnn.api import bench
from edgecnn.cli import app
from edgecnn.errors import EdgeCNNError


def _foreign_onnx(path, spatial=None):
    """A Conv-Relu-GlobalAveragePool model written with the onnx helper API (not by edgecnn)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    h = w_ = spatial
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, h or "H", w_ or "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "foreign", [x], [y], [w]), opset_imports=[helper.make_opsetid("",
                                                                                                                     17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_bench_any_onnx_file(tmp_path):
    path = _foreign_onnx(tmp_path / "m.onnx", spatial=16)
    results = bench(path, "onnxruntime", [1, 4], repeats=3, warmup=1)
    assert [r.batch for r in results] == [1, 4]
    assert all(r.median_ms > 0 and r.images_per_s > 0 and r.p90_ms >= r.median_ms for r in results)


def test_dynamic_input_needs_a_size(tmp_path):
    path = _foreign_onnx(tmp_path / "dyn.onnx")
    with pytest.raises(EdgeCNNError, match="dynamic input size"):
        bench(path, "onnxruntime", [1], repeats=3, warmup=1)
    assert bench(path, "onnxruntime", [2], repeats=3, warmup=1, input_size=8)[0].batch == 2


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a protobuf")
    result = CliRunner().invoke(app, ["bench", str(bad), "--batch", "1"])
    assert result.exit_code == 2 and "not a readable ONNX file" in result.output
    result = CliRunner().invoke(app, ["eval", str(bad), "--data", str(tmp_path)])
    assert result.exit_code == 2 and "not a readable ONNX file" in result.output
