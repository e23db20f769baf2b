"""hls4ml HLS export of a low-bit model: C simulation (g++) vs QONNX execution, and the one-line errors."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import randomize_bn, require

from edgecnn.compress.lowbit import to_lowbit
from edgecnn.errors import EdgeCNNError
from edgecnn.export import hls as hls_mod
from edgecnn.export.hls import HLSProject, compare_with_qonnx, export_hls, hls_predict
from edgecnn.export.qonnx import export_qonnx
from edgecnn.models import create_model

require("brevitas", "lowbit")
require("qonnx", "lowbit")
require("hls4ml", "hls")
warnings.filterwarnings("ignore", module="brevitas")
SIZE = 16
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C simulation needs g++ (not found)")


def _tiny_qonnx(path, **kwargs):
    """Tiny w4a4 CustomNet (residual by default), BN statistics randomised as after training, exported to QONNX."""
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=SIZE, stem_channels=4, channels=[8, 16], blocks=1,
                         **kwargs).eval()
    randomize_bn(model)
    calib = torch.randn(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return export_qonnx(to_lowbit(model, "w4a4", SIZE, calib=calib), path, SIZE)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    torch.set_num_threads(1)
    if shutil.which("g++") is None:
        pytest.skip("hls4ml's C simulation needs g++ (not found)")
    tmp = tmp_path_factory.mktemp("hls")
    qonnx_file = _tiny_qonnx(tmp / "tiny.onnx")
    return qonnx_file, export_hls(qonnx_file, tmp / "hls", compile=True)


@needs_gxx
def test_hls_csim_matches_qonnx(project):
    qonnx_file, prj = project
    assert isinstance(prj, HLSProject) and prj.compiled
    assert prj.input_shape == (3, SIZE, SIZE) and prj.n_outputs == 10
    assert prj.config["io_type"] == "io_stream" and prj.config["backend"] == "Vitis"
    assert (prj.project_dir / "firmware" / "myproject.cpp").is_file()
    assert (prj.project_dir / "build_prj.tcl").is_file()  # the Vitis HLS synthesis script
    assert list((prj.project_dir / "firmware").glob("myproject-*.so"))  # g++-built C simulation
    assert "hls_config" not in prj.summary()["conversion"]  # the summary is serialisable
    x = np.random.default_rng(0).standard_normal((32, 3, SIZE, SIZE)).astype(np.float32)
    result = compare_with_qonnx(prj, qonnx_file, x)
    assert result["n"] == 32
    assert result["top1_agreement"] >= 0.99, result
    assert result["max_abs_diff"] <= 0.05 * result["max_abs_logit"], result


@needs_gxx
def test_hls_predict_takes_nchw_only(project):
    _, prj = project
    x = np.zeros((2, SIZE, SIZE, 3), dtype=np.float32)
    with pytest.raises(EdgeCNNError, match="NCHW") as err:
        hls_predict(prj, x)
    assert "\n" not in str(err.value)
    assert hls_predict(prj, np.zeros((3, SIZE, SIZE), dtype=np.float32)).shape == (1, 10)


def test_unsupported_layer_is_a_one_line_error_naming_it(tmp_path):
    torch.set_num_threads(1)
    qonnx_file = _tiny_qonnx(tmp_path / "avg.onnx", residual=False, downsample="avg")
    with pytest.raises(EdgeCNNError) as err:
        export_hls(qonnx_file, tmp_path / "hls", compile=False)
    msg = str(err.value)
    assert "AveragePool" in msg and "layer" in msg and "\n" not in msg


def test_missing_compiler_is_reported(tmp_path, monkeypatch):
    qonnx_file = tmp_path / "m.qonnx.onnx"
    qonnx_file.write_bytes(b"")  # never read: the compiler check comes first
    monkeypatch.setattr(hls_mod.shutil, "which", lambda name: None)
    with pytest.raises(EdgeCNNError, match="g\\+\\+"):
        export_hls(qonnx_file, tmp_path / "hls", compile=True)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(EdgeCNNError, match="does not exist"):
        export_hls(tmp_path / "nope.qonnx.onnx", tmp_path / "hls")
