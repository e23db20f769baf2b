"""GPU rows: a machine without CUDA (or without an execution provider) gets explicit "n/a (why)" rows, never a crash;
on a GPU machine the PyTorch CUDA rows are real timings."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from edgecnn.api import bench
from edgecnn.cli import app
from edgecnn.devices import cuda_missing_reason
from edgecnn.measure.gpu import torch_cuda_latency
from edgecnn.models import create_model
from edgecnn.train.checkpoint import save_checkpoint

from .test_bench import _foreign_onnx

no_cuda = cuda_missing_reason() is not None


@pytest.mark.skipif(not no_cuda, reason="this machine has a GPU")
def test_gpu_backends_are_na_rows_without_a_gpu(tmp_path):
    onnx_path = _foreign_onnx(tmp_path / "m.onnx", spatial=16)
    rows = bench(onnx_path, "onnxruntime-cuda", [1, 4], repeats=3, warmup=1)
    assert [r.batch for r in rows] == [1, 4] and all(r.unavailable and math.isnan(r.median_ms) for r in rows)
    model = create_model("customnet", num_classes=3, input_size=16, stem_channels=4, channels=[8], blocks=1)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors", {
        "arch": "customnet", "arch_args": {"stem_channels": 4, "channels": [8], "blocks": 1},
        "classes": ["a", "b", "c"], "input_size": 16, "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}})
    for backend in ("torch-cuda", "torch-cuda-fp16", "torch-cuda-bf16"):
        (row,) = bench(ckpt, backend, [2], repeats=3, warmup=1)
        assert row.unavailable == cuda_missing_reason()
    result = CliRunner().invoke(app, ["bench", str(onnx_path), "--backend", "onnxruntime,onnxruntime-cuda,"
                                      "onnxruntime-tensorrt", "--batch", "1", "--repeats", "3", "--warmup", "1",
                                      "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert result.output.count("n/a (") == 2
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [(r["backend"], r["unavailable"] is None) for r in rows] == [
        ("onnxruntime", True), ("onnxruntime-cuda", False), ("onnxruntime-tensorrt", False)]


def test_an_absent_provider_is_na_even_where_cuda_exists(tmp_path, monkeypatch):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT's provider is installed here")
    monkeypatch.setattr("edgecnn.devices.cuda_missing_reason", lambda: None)
    (row,) = bench(_foreign_onnx(tmp_path / "m.onnx", spatial=8), "onnxruntime-tensorrt", [1], repeats=3, warmup=1)
    assert "TensorrtExecutionProvider" in row.unavailable


@pytest.mark.gpu
@pytest.mark.skipif(no_cuda, reason=f"no CUDA here: {cuda_missing_reason()}")
def test_torch_cuda_rows_are_timed_on_a_gpu():
    model = create_model("customnet", num_classes=10, input_size=64, stem_channels=16, channels=[32, 64], blocks=1)
    for backend in ("torch-cuda", "torch-cuda-fp16"):
        row = torch_cuda_latency(model, 64, 8, backend, repeats=5, warmup=2)
        assert row.unavailable is None and row.median_ms > 0 and row.images_per_s > 0
    assert next(model.parameters()).device.type == "cpu"  # the caller's model is not moved
    assert torch.cuda.is_available()
