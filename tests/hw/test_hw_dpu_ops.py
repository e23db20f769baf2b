"""The DPU operator table: every op the graph reader produces is classified for the DPUCZDX8G, each decision
against AMD's UG1414 (Vitis AI 3.0, "Currently Supported Operators", DPUCZDX8G_ISA1_B4096) and PG338."""
from __future__ import annotations

import pytest

from edgecnn.hw.estimators.dpu import mappable
from edgecnn.hw.graph import Layer
from edgecnn.hw.graph.ir import ACTIVATIONS, ELTWISE, SIMPLE

# op -> runs on the DPU (True) or the Arm CPU (False), with the reference row.
EXPECTED = {
    "conv": True,          # UG1414 conv2d
    "deconv": True,        # UG1414 transposed-conv2d
    "dwconv": True,        # UG1414 depthwise-conv2d
    "gconv": False,        # UG1414 PyTorch table: groups neither 1 nor C -> CPU
    "fc": True,            # UG1414: matmul / dense transformed to conv2d
    "matmul": False,       # two activations: no DPU engine
    "maxpool": True, "avgpool": True, "gap": True, "gmp": True,  # UG1414 max-/average-pooling
    "add": True,           # PG338 Elementwise-Sum
    "mul": True,           # PG338 Elementwise-Multiply
    "sub": False, "div": False, "max": False, "min": False,  # no DPU element-wise op
    "concat": True, "reshape": True, "transpose": True, "pad": True, "slice": True, "bn": True,  # compiled away
    "resize": True,        # UG1414 resize / upsample
    "softmax": False,      # optional PG338 module, not in the zoo boards' DPU
    "lrn": False, "reduce": False, "topk": False,
}
ACT_EXPECTED = {"relu": True, "clip": True, "leakyrelu": True, "hardswish": True, "hardsigmoid": True,
                "sigmoid": True, "silu": True,   # replaced by hard-sigmoid / hard-swish by the Vitis AI quantizer
                "prelu": False, "tanh": False, "elu": False, "selu": False, "softplus": False, "mish": False,
                "gelu": False, "erf": False, "abs": False, "neg": False, "sign": False}


def _layer(op: str, **kw) -> Layer:
    base = dict(name="l", op=op, onnx_op="X", in_shape=(1, 32, 14, 14), out_shape=(1, 32, 14, 14), cin=32, cout=32,
                kernel=(3, 3))
    base.update(kw)
    return Layer(**base)


def test_every_reader_op_is_classified():
    reader_ops = set(SIMPLE.values()) | set(ELTWISE.values()) | {"conv", "dwconv", "gconv", "deconv", "fc", "matmul"}
    assert reader_ops <= set(EXPECTED), f"classify these ops for the DPU: {reader_ops - set(EXPECTED)}"
    for op, runs in EXPECTED.items():
        ok, why = mappable(_layer(op))
        assert ok is runs, f"{op}: expected {'DPU' if runs else 'CPU'}, got {ok} ({why})"
        assert ok or "Arm CPU" in why


@pytest.mark.parametrize("onnx_act", sorted(ACTIVATIONS - {"MultiThreshold"}))
def test_every_activation_is_classified(onnx_act):
    act = onnx_act.lower()
    assert act in ACT_EXPECTED, f"classify activation {onnx_act} for the DPU"
    ok, why = mappable(_layer("act", act_type=act))
    assert ok is ACT_EXPECTED[act], why


def test_dpu_limits_from_ug1414():
    assert mappable(_layer("conv", kernel=(17, 17)))[0] is False          # kernel w, h: [1, 16]
    assert mappable(_layer("conv", stride=(9, 9)))[0] is False            # strides w, h: [1, 8]
    assert mappable(_layer("conv", cin=5000, cout=32))[0] is False        # input_channel <= 256 * cp
    # kernel_w * kernel_h * ceil(input_channel / channel_parallel) <= bank_depth (2048)
    assert mappable(_layer("conv", kernel=(16, 16), cin=16 * 9))[0] is False
    assert mappable(_layer("conv", kernel=(16, 16), cin=16 * 8))[0] is True
    assert mappable(_layer("maxpool", kernel=(300, 300)))[0] is False     # pooling kernel [1, 256]
    assert mappable(_layer("x", known=False, note="op 'Foo' unknown"))[0] is False
