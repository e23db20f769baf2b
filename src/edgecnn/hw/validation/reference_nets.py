"""Reference topologies built directly as (Q)ONNX, to check the estimators against published figures.

CNV is the BNN-PYNQ CIFAR-10 network (Umuroglu et al., FINN, FPGA 2017; brevitas_examples/bnn_pynq/models/CNV.py)
whose finn-examples builds publish their folding (build/bnn-pynq/folding_config/cnv-w*a*_folding_config.json).
Weights are random: cycle and resource figures depend on shapes and bit widths only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

QONNX_DOMAIN = "qonnx.custom_op.general"

#: finn-examples folding (PE, SIMD) of the nine MVAUs of CNV, in graph order.
CNV_FOLDING = {
    (1, 1): [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)],
    (2, 2): [(8, 3), (16, 16), (8, 16), (8, 16), (4, 8), (1, 8), (1, 2), (2, 2), (5, 1)],
}


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.i = 0

    def name(self, prefix: str) -> str:
        self.i += 1
        return f"{prefix}_{self.i}"

    def init(self, prefix: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def quant(self, x: str, bits: int, signed: bool = True) -> str:
        """QONNX Quant (bits >= 2) or BipolarQuant (1 bit) of tensor x."""
        scale = self.init("scale", np.array(1.0, dtype=np.float32))
        if bits == 1:
            return self.node("BipolarQuant", [x, scale], domain=QONNX_DOMAIN)
        zp = self.init("zeropt", np.array(0.0, dtype=np.float32))
        bw = self.init("bitwidth", np.array(float(bits), dtype=np.float32))
        return self.node("Quant", [x, scale, zp, bw], domain=QONNX_DOMAIN, signed=int(signed), narrow=0,
                         rounding_mode="ROUND")

    def bn(self, x: str, ch: int) -> str:
        ones, zeros = np.ones(ch, np.float32), np.zeros(ch, np.float32)
        return self.node("BatchNormalization", [x, self.init("gamma", ones), self.init("beta", zeros),
                                                self.init("mean", zeros), self.init("var", ones)])


def cnv_qonnx(w_bits: int = 1, a_bits: int = 1, in_bits: int = 8, seed: int = 0, classes: int = 10):
    """BNN-PYNQ CNV (input 32x32x3) as a QONNX ModelProto with ``w_bits`` weights and ``a_bits`` activations
    (``classes`` outputs: BNN-PYNQ's hand-written builds pad the last layer to 64)."""
    from onnx import TensorProto, helper

    b = _Builder(seed)
    x = b.quant("x", in_bits, signed=False)
    cin = 3
    for i, cout in enumerate((64, 64, 128, 128, 256, 256)):
        w = b.rng.choice([-1.0, 1.0], size=(cout, cin, 3, 3)).astype(np.float32)
        wq = b.quant(b.init("conv_w", w), w_bits)
        x = b.node("Conv", [x, wq], kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1])
        x = b.quant(b.bn(x, cout), a_bits)
        if i in (1, 3):
            x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        cin = cout
    x = b.node("Flatten", [x], axis=1)
    for i, (k, m) in enumerate(((256, 512), (512, 512), (512, classes))):
        w = b.rng.choice([-1.0, 1.0], size=(k, m)).astype(np.float32)
        x = b.node("MatMul", [x, b.quant(b.init("fc_w", w), w_bits)])
        x = b.bn(x, m)
        if i < 2:
            x = b.quant(x, a_bits)
    graph = helper.make_graph(b.nodes, f"cnv_w{w_bits}a{a_bits}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, classes])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8
    return model


def plain_cnn(convs: list[tuple[int, int, int, int]], input_hw: int, fc: list[int], *, w_bits: int | None = None,
              a_bits: int | None = None, in_channels: int = 3, pool: int = 0, softmax: bool = False,
              batch: int | str = 1, seed: int = 0):
    """A Conv(+Relu)(+MaxPool)... -> Flatten -> Gemm... model; convs are (cout, kernel, stride, pad).

    With ``w_bits``/``a_bits`` the weights/activations get QONNX Quant nodes (a QONNX model), else it is FP32.
    """
    from onnx import TensorProto, helper

    b = _Builder(seed)
    x, cin, hw = "x", in_channels, input_hw
    if a_bits:
        x = b.quant(x, 8, signed=False)
    for cout, k, s, p in convs:
        w = b.rng.normal(size=(cout, cin, k, k)).astype(np.float32) * 0.1
        wn = b.init("conv_w", w)
        if w_bits:
            wn = b.quant(wn, w_bits)
        x = b.node("Conv", [x, wn, b.init("conv_b", np.zeros(cout, np.float32))], kernel_shape=[k, k],
                   pads=[p] * 4, strides=[s, s])
        x = b.node("Relu", [x])
        if a_bits:
            x = b.quant(x, a_bits, signed=False)
        hw = (hw + 2 * p - k) // s + 1
        if pool:
            x = b.node("MaxPool", [x], kernel_shape=[pool, pool], strides=[pool, pool])
            hw //= pool
        cin = cout
    x = b.node("Flatten", [x], axis=1)
    feat = cin * hw * hw
    for i, m in enumerate(fc):
        w = b.rng.normal(size=(m, feat)).astype(np.float32) * 0.05
        wn = b.init("fc_w", w)
        if w_bits:
            wn = b.quant(wn, w_bits)
        x = b.node("Gemm", [x, wn, b.init("fc_b", np.zeros(m, np.float32))], transB=1)
        if i < len(fc) - 1:
            x = b.node("Relu", [x])
            if a_bits:
                x = b.quant(x, a_bits, signed=False)
        feat = m
    if softmax:
        x = b.node("Softmax", [x], axis=1)
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(QONNX_DOMAIN, 1)] if (w_bits or a_bits) else [])
    graph = helper.make_graph(b.nodes, "plain_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, in_channels, input_hw,
                                                                                       input_hw])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, feat])], b.inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def mlp_qonnx(hidden: list[int], w_bits: int = 1, a_bits: int = 1, in_features: int = 784, classes: int = 10,
              in_bits: int | None = None, seed: int = 0):
    """The BNN-PYNQ / FINN MNIST MLPs (TFC 64x3, SFC 256x3, LFC 1024x3; brevitas_examples/bnn_pynq/models/FC.py):
    quantized input, then MatMul -> BN -> activation quantizer per hidden layer, MatMul -> BN to ``classes``.

    The input quantizer has ``in_bits`` (default: the activation width, as in the bnn_pynq configurations).
    """
    from onnx import TensorProto, helper

    b = _Builder(seed)
    x = b.quant("x", in_bits or a_bits, signed=(in_bits or a_bits) == 1)
    k = in_features
    widths = list(hidden) + [classes]
    for i, m in enumerate(widths):
        w = b.rng.choice([-1.0, 1.0], size=(k, m)).astype(np.float32)
        x = b.node("MatMul", [x, b.quant(b.init("fc_w", w), w_bits)])
        x = b.bn(x, m)
        if i < len(widths) - 1:
            x = b.quant(x, a_bits)
        k = m
    graph = helper.make_graph(b.nodes, f"mlp_{'x'.join(map(str, hidden))}_w{w_bits}a{a_bits}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_features])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, classes])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8
    return model
