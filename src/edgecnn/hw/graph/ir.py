"""The LayerGraph IR: Layer and LayerGraph records and the op vocabulary the ONNX reader maps nodes onto.

Every estimator works on these records, never on the ONNX protobuf; the reader (hw.reader) fills them in.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Data-path ops that only (de)quantize or relabel a tensor; they become bit widths, not layers.
TRANSPARENT = {"QuantizeLinear", "DequantizeLinear", "Quant", "BipolarQuant", "Trunc", "Identity", "Cast", "Dropout",
               "IntQuant", "FloatQuant"}
#: Index of the weight input of the ops that carry weights.
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "QLinearConv": 3, "QLinearMatMul": 3,
                "ConvInteger": 1, "MatMulInteger": 1, "QGemm": 3}
ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
               "Softplus", "Mish", "Gelu", "Erf", "MultiThreshold", "Abs", "Neg", "Sign"}
ELTWISE = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min", "Sum": "add",
           "QLinearAdd": "add", "QLinearMul": "mul"}
SIMPLE = {"MaxPool": "maxpool", "AveragePool": "avgpool", "GlobalAveragePool": "gap", "GlobalMaxPool": "gmp",
          "QLinearGlobalAveragePool": "gap", "QLinearAveragePool": "avgpool", "Concat": "concat",
          "QLinearConcat": "concat", "Flatten": "reshape", "Reshape": "reshape", "Squeeze": "reshape",
          "Unsqueeze": "reshape", "Transpose": "transpose", "Softmax": "softmax", "LogSoftmax": "softmax",
          "QLinearSoftmax": "softmax", "Pad": "pad", "Resize": "resize", "Upsample": "resize",
          "BatchNormalization": "bn", "Slice": "slice", "Split": "slice", "LRN": "lrn", "TopK": "topk",
          "ArgMax": "topk", "ReduceMean": "reduce", "ReduceMax": "reduce", "ReduceSum": "reduce"}
#: Ops that move values without arithmetic: their output has the bit width of their input.
BIT_PRESERVING = ("maxpool", "gmp", "reshape", "transpose", "pad", "slice", "concat", "topk")
COMPUTE_OPS = ("conv", "dwconv", "gconv", "deconv", "fc", "matmul")


@dataclass
class Layer:
    """One layer of the data path. Shapes are NCHW (or N x features); bits are 32 for float tensors."""

    name: str
    op: str
    onnx_op: str
    inputs: list[str] = field(default_factory=list)
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    other_in_shapes: list[tuple[int, ...] | None] = field(default_factory=list)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    cin: int = 0
    cout: int = 0
    macs: int = 0
    weights: int = 0
    w_bits: int = 0
    a_bits: int = 32
    out_bits: int = 32
    sparsity: float = 0.0
    act_type: str = ""
    folded: list[str] = field(default_factory=list)
    known: bool = True
    note: str = ""

    @property
    def is_compute(self) -> bool:
        return self.op in COMPUTE_OPS

    @property
    def out_elements(self) -> int:
        return int(np.prod(self.out_shape)) if self.out_shape else 0

    @property
    def in_elements(self) -> int:
        return int(np.prod(self.in_shape)) if self.in_shape else 0

    @property
    def out_hw(self) -> tuple[int, int]:
        """(H, W) of the output (1, 1 for vectors)."""
        s = self.out_shape or ()
        return (int(s[2]), int(s[3])) if len(s) == 4 else (1, 1)

    @property
    def in_hw(self) -> tuple[int, int]:
        s = self.in_shape or ()
        return (int(s[2]), int(s[3])) if len(s) == 4 else (1, 1)

    @property
    def channels(self) -> int:
        """Channels of the output (features for vectors)."""
        s = self.out_shape or ()
        return int(s[1]) if len(s) >= 2 else 1

    @property
    def batch(self) -> int:
        s = self.out_shape or self.in_shape or (1,)
        return int(s[0]) if s else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("in_shape", "out_shape", "kernel", "stride", "pads", "dilation"):
            d[k] = list(d[k]) if d[k] is not None else None
        d["other_in_shapes"] = [list(s) if s else None for s in self.other_in_shapes]
        return d


@dataclass
class LayerGraph:
    """The layers of one model file in topological order, plus what the reader noticed about it."""

    name: str
    layers: list[Layer]
    batch: int = 1
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    format: str = "onnx"
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {layer.name: layer for layer in self.layers}

    def __getitem__(self, name: str) -> Layer:
        return self._by_name[name]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def unknown(self) -> list[Layer]:
        return [layer for layer in self.layers if not layer.known]

    def compute_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.is_compute]

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    def consumers(self, name: str) -> list[Layer]:
        return [layer for layer in self.layers if name in layer.inputs]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "batch": self.batch, "format": self.format, "source": self.source,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}, "outputs": self.outputs,
                "total_macs": self.total_macs, "total_weights": self.total_weights, "notes": self.notes,
                "layers": [layer.to_dict() for layer in self.layers]}
