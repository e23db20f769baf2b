"""The runtime backend registry of measure.runtimes: listing, registering, and unknown names."""
from __future__ import annotations

import pytest

from edgecnn.errors import EdgeCNNError
from edgecnn.measure import runtimes
from edgecnn.measure.runtimes import file_predictor, list_backends
from edgecnn.registry import Registry


def test_list_backends():
    assert list_backends() == ["litert", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "openvino"]
    assert list_backends("onnx*") == ["onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt"]
    assert list_backends("tflite") == []


def test_litert_backend_refuses_other_files(tmp_path):
    from edgecnn.errors import EdgeCNNError
    from edgecnn.measure.runtimes import file_predictor

    with pytest.raises(EdgeCNNError, match="runs .tflite files"):
        file_predictor(tmp_path / "m.onnx", "litert")


def test_unknown_backend_suggests_and_names_the_choices():
    with pytest.raises(EdgeCNNError) as err:
        file_predictor("model.onnx", "onnxruntim")
    choices = "litert, onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, openvino"
    assert str(err.value) == ("unknown backend 'onnxruntim' — did you mean: onnxruntime, onnxruntime-cuda, "
                              f"onnxruntime-tensorrt?; choose one of {choices}")
    with pytest.raises(EdgeCNNError, match=rf"^unknown backend 'zzz'; choose one of {choices}$"):
        file_predictor("model.onnx", "zzz")


def test_register_backend(monkeypatch):
    monkeypatch.setattr(runtimes, "BACKENDS", Registry("backend", "list_backends()"))
    seen = []

    @runtimes.register_backend("echo")
    def echo_predictor(path, threads=None):
        seen.append((path, threads))
        return lambda x: x

    assert list_backends() == ["echo"]
    assert file_predictor("m.onnx", "echo", threads=2)(41) == 41 and seen == [("m.onnx", 2)]
    with pytest.raises(ValueError, match="registered twice"):
        runtimes.register_backend("echo")(echo_predictor)
