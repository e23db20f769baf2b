"""Device selection: auto is the CPU on a machine without CUDA, a missing GPU is a one-line error (exit 2), and a
checkpoint holds no device, so one trained on a GPU loads on a CPU-only machine."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from edgecnn.devices import cuda_missing_reason, resolve_device
from edgecnn.errors import EdgeCNNError
from edgecnn.train.checkpoint import load_checkpoint, read_checkpoint
from edgecnn.train.options import TrainConfig

no_cuda = cuda_missing_reason() is not None
gpu = pytest.mark.skipif(no_cuda, reason=f"no CUDA here: {cuda_missing_reason()}")


@pytest.mark.skipif(not no_cuda, reason="this machine has a GPU")
def test_auto_is_the_cpu_and_cuda_is_a_clear_error_without_a_gpu():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(EdgeCNNError, match=r"train.device: cuda.* set train.device: cpu"):
            resolve_device(spec)


def test_a_device_name_that_is_not_one_fails_when_the_config_is_read():
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        TrainConfig(device="gpu0")
    assert TrainConfig(device="cuda:3").device == "cuda:3"  # checked against the machine when training starts


def _tiny_run(tmp_path, device: str):
    cfg = {"name": "dev", "output": str(tmp_path / "runs"), "data": {"limit_per_class": 12},
           "model": {"name": "customnet", "args": {"stem_channels": 8, "channels": [16], "blocks": 1}},
           "train": {"epochs": 1, "batch_size": 32, "device": device, "amp": "off", "channels_last": False}}
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "edgecnn", "--quiet", "train", str(path)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not no_cuda, reason="this machine has a GPU")
def test_training_on_a_missing_gpu_is_one_line_exit_2(tmp_path):
    result = _tiny_run(tmp_path, "cuda")
    assert result.returncode == 2
    assert "train.device: cuda asked for" in result.stderr and "Traceback" not in result.stderr


def _assert_device_free(path):
    state, _, meta = read_checkpoint(path)
    assert all(t.device.type == "cpu" for t in state.values())
    model, _ = load_checkpoint(path)  # rebuilt and loaded on the CPU
    assert next(model.parameters()).device.type == "cpu"
    x = torch.randn(2, 3, meta["input_size"], meta["input_size"])
    assert model(x).shape == (2, len(meta["classes"]))


def test_a_checkpoint_is_device_free(tmp_path):
    result = _tiny_run(tmp_path, "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_device_free(tmp_path / "runs" / "dev" / "train" / "best.safetensors")


@pytest.mark.gpu
@gpu
def test_a_gpu_trained_checkpoint_loads_on_the_cpu(tmp_path):
    result = _tiny_run(tmp_path, "cuda")
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_device_free(tmp_path / "runs" / "dev" / "train" / "best.safetensors")
    stage = yaml.safe_load((tmp_path / "runs" / "dev" / "train" / "stage.json").read_text())
    assert stage["outputs"]["device"].startswith("cuda")
