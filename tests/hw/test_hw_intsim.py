"""Integer-only reference: fixed-point helpers by hand, and agreement with ONNX Runtime on QDQ models."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.intsim.arith import IntSimError, apply_multiplier, mlas_multiply, quantize_multiplier, rne_shift
from edgecnn.intsim.model import IntegerModel
from edgecnn.intsim.run import compare_with_onnxruntime, run_int8


def test_quantize_multiplier_and_rounding_by_hand():
    m0, shift = quantize_multiplier(0.75)
    assert int(m0) == 3 << 29 and int(shift) == 31  # 0.75 = 0.75 * 2^0 -> M0 = 0.75 * 2^31
    # round(v * 0.75), half away from zero: 2 -> 1.5 -> 2 ; -2 -> -1.5 -> -2 ; 3 -> 2.25 -> 2
    assert apply_multiplier(np.array([2, -2, 3, 10]), m0, shift).tolist() == [2, -2, 2, 8]
    # round half to even: 5/2 = 2.5 -> 2, 7/2 = 3.5 -> 4, -5/2 -> -2, 3/4 -> 1
    assert rne_shift(np.array([5, 7, -5, 3]), np.array([1, 1, 1, 2])).tolist() == [2, 4, -2, 1]
    with pytest.raises(IntSimError, match="exceeds 32 bits"):
        apply_multiplier(np.array([2 ** 40]), m0, shift)


def test_mlas_multiply_is_float32_exact():
    """The integer emulation equals rne(float32(float32(v) * m)) for any v < 2^31 and float32 m."""
    rng = np.random.default_rng(0)
    v = rng.integers(-(2 ** 30), 2 ** 30, size=20000)
    m = rng.uniform(1e-6, 4.0, size=20000).astype(np.float32)
    expected = np.rint((v.astype(np.float32) * m).astype(np.float32)).astype(np.int64)
    assert np.array_equal(mlas_multiply(v, m), expected)


def test_intsim_matches_onnxruntime(qdq_model):
    x = np.random.default_rng(1).normal(size=(96, 3, 16, 16)).astype(np.float32)
    ort_mode = compare_with_onnxruntime(qdq_model, x, requant="ort")
    assert ort_mode["identical"] >= 0.999 and ort_mode["max_lsb_diff"] <= 1
    assert ort_mode["top1_agreement"] == 1.0
    q31 = compare_with_onnxruntime(qdq_model, x, requant="q31")
    assert q31["within_1_lsb"] == 1.0  # the pure fixed-point scheme differs from ORT's float32 rescale by <= 1 LSB


def test_intsim_output_is_close_to_float_model(qdq_model):
    """Dequantized intsim logits track the QDQ model run in float by ORT (sanity of scales and layout)."""
    import onnxruntime as ort

    x = np.random.default_rng(2).normal(size=(16, 3, 16, 16)).astype(np.float32)
    ours = run_int8(qdq_model, x)
    ref = ort.InferenceSession(str(qdq_model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    lsb = IntegerModel(qdq_model).run(x[:1])["logits"].scale
    assert np.max(np.abs(ours - ref)) <= float(lsb) + 1e-6


def test_edgecnn_ptq_export_runs_integer_only(tmp_path):
    """edgecnn's own INT8 export (ORT static PTQ, per-channel, QDQ) runs in intsim and agrees with ORT."""
    import warnings

    import torch

    from edgecnn.compress.quantize import quantize_int8_ptq
    from edgecnn.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("customnet", num_classes=4, input_size=32, channels=(8, 16), stem_channels=8).eval()
    fp32 = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(fp32), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    calib = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    q = quantize_int8_ptq(fp32, tmp_path / "m-int8.onnx", calib)
    x = np.random.default_rng(3).normal(size=(64, 3, 32, 32)).astype(np.float32)
    result = compare_with_onnxruntime(q, x)
    assert result["identical"] >= 0.999 and result["top1_agreement"] == 1.0


def test_unsupported_models_are_refused(tmp_path, make_conv_model):
    with pytest.raises(IntSimError, match="no QuantizeLinear"):
        IntegerModel(make_conv_model())
    with pytest.raises(IntSimError, match="requantization scheme"):
        IntegerModel(make_conv_model(), requant="float")
