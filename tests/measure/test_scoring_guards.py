"""Numbers from broken files are never reported: a model whose outputs are NaN or infinite is not scored (argmax
over NaN picks an arbitrary class and gives an accuracy nobody should believe), and a file whose metadata names
another input than its graph takes is not scored at the wrong size. Each is a one-line error naming the file."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import make_subset
from onnx import numpy_helper
from typer.testing import CliRunner

from edgecnn.api import evaluate_file
from edgecnn.cli import app
from edgecnn.errors import EdgeCNNError
from edgecnn.export.onnx import export_onnx
from edgecnn.measure.predict import require_finite
from edgecnn.models import create_model

CLASSES = ["Forest", "Highway"]
META = {"arch": "customnet", "arch_args": {"stem_channels": 4, "channels": [8], "blocks": 0}, "classes": CLASSES,
        "input_size": 16, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "precision": "fp32"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("finite"), 3, CLASSES)


def _onnx_with(tmp_path, value: float):
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=2, input_size=16, **META["arch_args"])
    path = export_onnx(model, tmp_path / "model.onnx", 16, META)
    proto = onnx.load(str(path))
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest: a conv weight
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] = value
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_an_onnx_file_with_a_non_finite_weight_is_not_scored(tmp_path, folder, value):
    path = _onnx_with(tmp_path, value)
    with pytest.raises(EdgeCNNError, match=r"NaN or infinite outputs for \d+ of 6 images"):
        evaluate_file(path, folder)
    result = CliRunner().invoke(app, ["eval", str(path), "--data", str(folder)])
    assert result.exit_code == 2 and "NaN or infinite" in result.output
    assert "Traceback" not in result.output


def test_finite_outputs_are_scored_and_the_rule_counts_bad_images(tmp_path, folder):
    scored = evaluate_file(_onnx_with(tmp_path, 0.5), folder)
    assert scored["n"] == 6 and 0 <= scored["accuracy"] <= 1
    logits = torch.zeros(4, 3)
    logits[1, 2], logits[3, 0] = float("nan"), float("-inf")
    with pytest.raises(EdgeCNNError, match="for 2 of 4 images"):
        require_finite(logits, "x")
    assert require_finite(torch.zeros(0, 3), "empty").numel() == 0


@pytest.mark.parametrize("change", [{"input_size": 32}, {"in_channels": 1}], ids=["size", "channels"])
def test_metadata_that_disagrees_with_the_graph_is_an_error(tmp_path, folder, change):
    from edgecnn.export.onnx import set_metadata

    path = _onnx_with(tmp_path, 0.5)
    proto = onnx.load(str(path))
    set_metadata(proto, {**META, **change})
    onnx.save(proto, str(path))
    with pytest.raises(EdgeCNNError, match=r"its metadata describes .* but its graph takes \(C, H, W\) = \(3x16x16\)"):
        evaluate_file(path, folder)


@pytest.mark.parametrize("content", ['{"classes": ["a", "b"], "input_si', "[1, 2]"], ids=["truncated", "not-a-map"])
def test_unreadable_tflite_metadata_is_a_one_line_error(tmp_path, folder, content):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3 not really")
    (tmp_path / "model.tflite.json").write_text(content)
    with pytest.raises(EdgeCNNError, match="export the .tflite"):
        evaluate_file(model, folder)
