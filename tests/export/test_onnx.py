from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecnn.export.onnx import export_onnx, read_metadata
from edgecnn.measure.runtimes import ort_predictor
from edgecnn.models import create_model, list_models

# Big VGG/ConvNeXt exports take seconds each; the per-model parity over the whole registry at 64x64 and 224x224
# is benchmarks/claims/precision.py. Here every model is checked at a small input.
SIZE = {"lenet5": 32, "alexnet": 64}


@pytest.mark.parametrize("name", list_models())
def test_onnx_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    size = SIZE.get(name, 32)
    model = create_model(name, num_classes=10, input_size=size).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", size, {"arch": name, "classes": list("abcdefghij")})
    x = torch.randn(3, 3, size, size)  # batch 3 also checks the dynamic batch dimension
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort_predictor(path)(x.numpy())
    assert np.abs(got - expected).max() <= 1e-4
    meta = read_metadata(path)
    assert meta["input_size"] == size and meta["classes"][0] == "a"
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
