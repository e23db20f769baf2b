"""Fixtures of the hardware-model tests: small ONNX/QONNX/QDQ models built on the spot (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def conv_model(tmp: Path, *, batch: int | str = 1, softmax: bool = False, name: str = "plain.onnx") -> Path:
    """FP32 Conv(8,3x3,pad1)+Relu -> MaxPool2 -> Conv(16,3x3,stride2)+Relu -> Flatten -> Gemm(10) [-> Softmax]."""
    import onnx

    from edgecnn.hw.validation.reference_nets import plain_cnn

    model = plain_cnn([(8, 3, 1, 1), (16, 3, 2, 1)], 16, [10], pool=0, softmax=softmax, batch=batch)
    path = tmp / name
    onnx.save(model, str(path))
    return path


@pytest.fixture
def make_conv_model(tmp_path):
    """A factory of small FP32 ONNX files (see conv_model) in the test's tmp dir."""
    return lambda **kw: conv_model(tmp_path, **kw)


class TinyNet:
    """Builder of a torch CNN with every op intsim covers (grouped/depthwise conv, ReLU6, pools, Add, Concat)."""

    @staticmethod
    def build():
        import torch
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem = nn.Conv2d(3, 16, 3, padding=1)
                self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
                self.gconv = nn.Conv2d(16, 16, 3, padding=1, groups=4)
                self.pw = nn.Conv2d(16, 16, 1)
                self.branch = nn.Conv2d(16, 8, 3, padding=1)
                self.mp = nn.MaxPool2d(2)
                self.ap = nn.AvgPool2d(2)
                self.head = nn.Linear(24, 10)

            def forward(self, x):
                x = torch.relu(self.stem(x))
                y = torch.nn.functional.relu6(self.dw(x))
                y = torch.relu(self.gconv(y))
                x = torch.relu(x + self.pw(y))
                x = self.mp(x)
                x = torch.cat([x, torch.relu(self.branch(x))], dim=1)
                x = self.ap(x)
                x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
                return self.head(x)

        torch.manual_seed(0)
        return Net().eval()


@pytest.fixture(scope="session")
def qdq_model(tmp_path_factory) -> Path:
    """TinyNet exported from torch and statically quantized by ONNX Runtime (QDQ, per-channel int8 weights)."""
    import warnings

    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("qdq")
    fp32 = tmp / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyNet.build(), (torch.randn(1, 3, 16, 16),), str(fp32), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i:i + 8]} for i in range(0, 32, 8)])

        def get_next(self):
            return next(self.items, None)

    out = tmp / "tiny-int8.onnx"
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out
