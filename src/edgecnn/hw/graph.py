"""LayerGraph: the layers of any ONNX / QDQ / QONNX file, with shapes, MACs, weights, bit widths and sparsity.

The estimators work on this IR, never on the ONNX protobuf, so that they handle files edgecnn did not write.
Quantizers (QuantizeLinear/DequantizeLinear, QONNX Quant/BipolarQuant/Trunc) are not layers: they annotate
the tensors they quantize with a bit width. BatchNormalization and constant scale/shift nodes that follow a
Conv/Gemm are folded into it (as every deployment flow does). Ops the IR does not know are kept as layers
with ``known=False`` so that every estimator lists them; nothing on the data path is dropped silently.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.hw.errors import HardwareModelError

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general", "finn")
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
_DTYPE_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 1, 10: 16, 11: 64, 12: 32, 13: 64, 16: 16, 21: 4, 22: 4}


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

    def __iter__(self):
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


# ----------------------------------------------------------------------------------------------- loading


def _load_proto(path_or_model: Any):
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, "model"
    path = Path(path_or_model)
    if not path.is_file():
        raise HardwareModelError(f"model file '{path}' does not exist — pass the path of an .onnx file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise HardwareModelError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}) — pass a valid .onnx "
                                 "file (re-export it with torch.onnx.export)") from None
    if not proto.graph.node:
        raise HardwareModelError(f"'{path}' holds an empty ONNX graph (no nodes) — pass a model exported with its layers")
    return proto, str(path)


def _fix_inputs(proto, batch: int) -> dict[str, tuple[int, ...]]:
    """Set the batch dim of every graph input to ``batch``; refuse other dynamic dims with a clear message."""
    inits = {i.name for i in proto.graph.initializer}
    shapes = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        if not tt.HasField("shape"):
            raise HardwareModelError(f"input '{inp.name}' has no shape — export the model with a fixed input size")
        dims = []
        for axis, dim in enumerate(tt.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                value = dim.dim_value
                if axis == 0 and value != batch:
                    value = batch
            elif axis == 0:
                value = batch
            else:
                label = dim.dim_param or "?"
                raise HardwareModelError(f"input '{inp.name}' has a dynamic dimension '{label}' on axis {axis} — "
                                         "export the model with a fixed image size (only the batch may be dynamic)")
            dim.Clear()
            dim.dim_value = value
            dims.append(value)
        shapes[inp.name] = tuple(dims)
    if not shapes:
        raise HardwareModelError("the ONNX graph has no data input — pass a model that takes an image tensor")
    return shapes


def _shape_inference_copy(proto):
    """A copy where QONNX quantizers are Identity (ONNX shape inference does not know them), shapes inferred."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {i.name for i in model.graph.initializer}
    keep_inputs = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep_inputs)
    del model.graph.value_info[:]
    for out in model.graph.output:  # outputs may carry a stale dynamic batch: let inference redo them
        out.type.tensor_type.ClearField("shape")
    nodes = []
    for node in model.graph.node:
        if node.domain in QONNX_DOMAINS and node.op_type in ("Quant", "BipolarQuant", "Trunc", "MultiThreshold",
                                                              "IntQuant", "FloatQuant"):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


def _tensor_info(model) -> tuple[dict[str, tuple[int, ...] | None], dict[str, int]]:
    shapes: dict[str, tuple[int, ...] | None] = {}
    dtypes: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            shapes[vi.name] = tuple(dims) if all(d is not None and d > 0 for d in dims) else None
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    return shapes, dtypes


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _conv_out(size: int, k: int, s: int, p0: int, p1: int, d: int, ceil: bool = False) -> int:
    span = d * (k - 1) + 1
    q = (size + p0 + p1 - span) / s
    return int(math.ceil(q) if ceil else math.floor(q)) + 1


def _bits_from_dtype(dtype: int | None) -> int:
    return _DTYPE_BITS.get(int(dtype or 1), 32)


def _finn_dtype_bits(name: str) -> int:
    name = name.upper()
    if name in ("BIPOLAR", "BINARY", "TERNARY"):
        return 1 if name != "TERNARY" else 2
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 32


class _Reader:
    """One pass over the ONNX nodes in topological order, building layers."""

    def __init__(self, proto, batch: int) -> None:
        from onnx import numpy_helper

        self.proto = proto
        self.batch = batch
        self.input_shapes = _fix_inputs(proto, batch)
        inferred = _shape_inference_copy(proto)
        self.shapes, self.dtypes = _tensor_info(inferred)
        self.np = numpy_helper
        self.inits = {i.name: i for i in proto.graph.initializer}
        self.consts: dict[str, np.ndarray] = {}
        self.producer = {o: n for n in proto.graph.node for o in n.output}
        self.data: set[str] = set(self.input_shapes)
        self.alias: dict[str, str] = {name: f"input:{name}" for name in self.input_shapes}
        self.bits: dict[str, int] = {name: _bits_from_dtype(self.dtypes.get(name)) for name in self.input_shapes}
        self.layers: dict[str, Layer] = {}
        self.order: list[str] = []
        self.root_layer: dict[str, str] = {}  # data tensor -> producing layer name (through transparent ops)
        self.notes: list[str] = []
        self.saw_qdq = self.saw_qonnx = False

    # -- constants
    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.consts:
            return self.consts[name]
        value = None
        if name in self.inits:
            value = self.np.to_array(self.inits[name])
        else:
            node = self.producer.get(name)
            if node is not None and node.op_type == "Constant":
                a = {x.name: x for x in node.attribute}
                if "value" in a:
                    value = self.np.to_array(a["value"].t)
                elif "value_float" in a:
                    value = np.array(a["value_float"].f, dtype=np.float32)
                elif "value_int" in a:
                    value = np.array(a["value_int"].i, dtype=np.int64)
                elif "value_ints" in a:
                    value = np.array(list(a["value_ints"].ints), dtype=np.int64)
        self.consts[name] = value
        return value

    def trace_weight(self, name: str) -> tuple[np.ndarray | None, int, float]:
        """Follow a weight input back through quantizers to its constant: (float-or-int array, bits, sparsity)."""
        bits = None
        zero_value = 0.0
        quant_scale = None
        cur = name
        for _ in range(8):
            arr = self.const(cur)
            if arr is not None:
                if bits is None:
                    bits = _bits_from_dtype(self.dtypes.get(cur, 1)) if cur in self.inits else 32
                if quant_scale is not None and np.issubdtype(arr.dtype, np.floating):
                    q = np.round(arr / quant_scale)
                    sparsity = float(np.mean(q == 0))
                else:
                    sparsity = float(np.mean(arr == zero_value)) if arr.size else 0.0
                return arr, bits, sparsity
            node = self.producer.get(cur)
            if node is None:
                break
            if node.op_type == "DequantizeLinear":
                bits = _bits_from_dtype(self.dtypes.get(node.input[0])) if bits is None else bits
                zp = self.const(node.input[2]) if len(node.input) > 2 else None
                if zp is not None and zp.size == 1:
                    zero_value = float(zp.reshape(-1)[0])
            elif node.op_type == "Quant":
                bw = self.const(node.input[3])
                bits = int(np.asarray(bw).reshape(-1)[0]) if bw is not None else bits
                scale = self.const(node.input[1])
                quant_scale = np.asarray(scale, dtype=np.float64) if scale is not None else None
            elif node.op_type == "BipolarQuant":
                bits = 1
            elif node.op_type not in ("Identity", "Cast", "Transpose", "Reshape", "QuantizeLinear", "Constant"):
                break
            cur = node.input[0]
        return None, bits or 32, 0.0

    # -- data path
    def data_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and i in self.data]

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def run(self) -> list[Layer]:
        for node in self.proto.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                self.saw_qdq = True
            if node.domain in QONNX_DOMAINS:
                self.saw_qonnx = True
            ins = self.data_inputs(node)
            if not ins or node.op_type in ("Shape", "Size", "Constant", "ConstantOfShape"):
                continue  # constant or shape arithmetic, not the data path
            if node.op_type in TRANSPARENT:
                self.transparent(node, ins[0])
                continue
            self.layer(node, ins)
        return [self.layers[n] for n in self.order]

    def transparent(self, node, src: str) -> None:
        out = node.output[0]
        self.data.add(out)
        self.alias[out] = self.alias.get(src, src)
        bits = self.bits.get(src, 32)
        op = node.op_type
        if op == "QuantizeLinear":
            a = _attrs(node)
            zp_dtype = self.dtypes.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            bits = _bits_from_dtype(a.get("output_dtype") or zp_dtype or 2)
        elif op == "Quant":
            bw = self.const(node.input[3]) if len(node.input) > 3 else None
            bits = int(np.asarray(bw).reshape(-1)[0]) if bw is not None else bits
        elif op == "BipolarQuant":
            bits = 1
        elif op == "Trunc":
            bw = self.const(node.input[4]) if len(node.input) > 4 else None
            bits = int(np.asarray(bw).reshape(-1)[0]) if bw is not None else bits
        elif op == "Cast":
            bits = min(bits, _bits_from_dtype(_attrs(node).get("to", 1)))
        self.bits[out] = bits
        layer = self.root_layer.get(src)
        if layer is not None:
            self.root_layer[out] = layer
            if op in ("QuantizeLinear", "Quant", "BipolarQuant", "Trunc"):
                self.layers[layer].out_bits = bits

    def _producer_name(self, tensor: str) -> str:
        root = self.alias.get(tensor, tensor)
        return self.root_layer.get(tensor) or root

    def layer(self, node, ins: list[str]) -> None:
        name = node.name or f"{node.op_type}_{len(self.order)}"
        while name in self.layers:
            name += "_"
        op_type = node.op_type
        in_shape = self.shape(ins[0])
        out_shape = self.shape(node.output[0])
        layer = Layer(name=name, op="unknown", onnx_op=op_type, inputs=[self._producer_name(i) for i in ins],
                      in_shape=in_shape, out_shape=out_shape, other_in_shapes=[self.shape(i) for i in ins[1:]],
                      a_bits=self.bits.get(ins[0], 32))
        a = _attrs(node)
        if op_type in WEIGHT_INPUT and node.domain in ("", "ai.onnx", "com.microsoft"):
            self._weighted(node, layer, a)
        elif op_type in ACTIVATIONS:
            layer.op = "act"
            layer.act_type = self._act_type(node, a)
            if op_type == "MultiThreshold":
                layer.out_bits = _finn_dtype_bits(a.get("out_dtype", "UINT8"))
        elif op_type in ELTWISE:
            layer.op = ELTWISE[op_type] if len(ins) >= 2 else "scale"
            layer.act_type = op_type.lower()
        elif op_type in SIMPLE and node.domain in ("", "ai.onnx", "com.microsoft"):
            layer.op = SIMPLE[op_type]
            self._simple(node, layer, a)
        else:
            layer.known = False
            layer.note = f"op '{op_type}'" + (f" (domain {node.domain})" if node.domain else "") + " is not modelled"
        if layer.out_shape is None:
            layer.out_shape = self._fallback_shape(node, layer, a)
        for out in node.output:
            self.data.add(out)
            self.alias[out] = out
            self.root_layer[out] = name
            self.bits[out] = _bits_from_dtype(self.dtypes.get(out, 1))
        if op_type == "MultiThreshold":
            self.bits[node.output[0]] = layer.out_bits
        elif layer.op in BIT_PRESERVING and self.bits[node.output[0]] >= 16:
            self.bits[node.output[0]] = max(self.bits.get(i, 32) for i in ins)  # data movement keeps the width
        layer.out_bits = self.bits[node.output[0]]
        self.layers[name] = layer
        self.order.append(name)

    @staticmethod
    def _act_type(node, a: dict) -> str:
        if node.op_type == "Clip":
            return "clip"
        return node.op_type.lower()

    def _weighted(self, node, layer: Layer, a: dict) -> None:
        op_type = node.op_type
        w_name = node.input[WEIGHT_INPUT[op_type]] if len(node.input) > WEIGHT_INPUT[op_type] else ""
        w, w_bits, sparsity = self.trace_weight(w_name)
        if op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm"):
            w_bits = min(w_bits, 8)
        n = self.batch
        if op_type in ("Conv", "QLinearConv", "ConvInteger", "ConvTranspose"):
            if w is None:
                layer.known = False
                layer.note = "convolution weights are not a constant of the graph"
                return
            cout, cin_g = int(w.shape[0]), int(w.shape[1])
            kh, kw = (int(x) for x in a.get("kernel_shape", w.shape[2:4]))
            groups = int(a.get("group", 1))
            strides = tuple(a.get("strides", (1, 1)))
            dil = tuple(a.get("dilations", (1, 1)))
            pads = tuple(a.get("pads", (0, 0, 0, 0)))
            layer.kernel, layer.stride, layer.dilation, layer.groups = (kh, kw), strides, dil, groups
            layer.pads = (pads[0], pads[1], pads[2], pads[3]) if len(pads) == 4 else (0, 0, 0, 0)
            if op_type == "ConvTranspose":  # weight is (Cin, Cout/groups, kh, kw)
                layer.cin, layer.cout = cout, cin_g * groups
                layer.op = "deconv"
                ih, iw = layer.in_hw
                layer.macs = n * ih * iw * layer.cin * cin_g * kh * kw
            else:
                layer.cin, layer.cout = cin_g * groups, cout
                if layer.out_shape is None and layer.in_shape is not None and len(layer.in_shape) == 4:
                    oh = _conv_out(layer.in_shape[2], kh, strides[0], layer.pads[0], layer.pads[2], dil[0])
                    ow = _conv_out(layer.in_shape[3], kw, strides[1], layer.pads[1], layer.pads[3], dil[1])
                    layer.out_shape = (n, cout, oh, ow)
                oh, ow = layer.out_hw
                layer.macs = n * oh * ow * cout * cin_g * kh * kw
                if groups == 1:
                    layer.op = "conv"
                elif cin_g == 1 and groups == layer.cin:
                    layer.op = "dwconv"
                else:
                    layer.op = "gconv"
        else:  # Gemm / MatMul family
            trans_b = int(a.get("transB", 0)) if op_type in ("Gemm", "QGemm") else 0
            if w is None or w.ndim != 2:
                layer.op = "matmul"
                a_shape, b_shape = layer.in_shape, (layer.other_in_shapes or [None])[0]
                if a_shape and b_shape and layer.out_shape:
                    layer.macs = int(np.prod(layer.out_shape)) * int(a_shape[-1])
                layer.note = "matrix product of two activations (no constant weights)"
                return
            k, m = (int(w.shape[1]), int(w.shape[0])) if trans_b else (int(w.shape[0]), int(w.shape[1]))
            layer.op = "fc"
            layer.cin, layer.cout = k, m
            rows = int(np.prod(layer.in_shape[:-1])) if layer.in_shape else n
            if layer.out_shape is None and layer.in_shape is not None:
                layer.out_shape = tuple(layer.in_shape[:-1]) + (m,)
            layer.macs = rows * k * m
        layer.weights = int(w.size)
        layer.w_bits = int(w_bits)
        layer.sparsity = round(sparsity, 6)

    def _simple(self, node, layer: Layer, a: dict) -> None:
        op = layer.op
        if op in ("maxpool", "avgpool"):
            k = tuple(a.get("kernel_shape", (1, 1)))
            layer.kernel = (int(k[0]), int(k[-1]))
            layer.stride = tuple(a.get("strides", (1, 1)))
            pads = tuple(a.get("pads", (0, 0, 0, 0)))
            layer.pads = pads if len(pads) == 4 else (0, 0, 0, 0)
        elif op in ("gap", "gmp") and layer.in_shape and len(layer.in_shape) == 4:
            layer.kernel = (int(layer.in_shape[2]), int(layer.in_shape[3]))
        elif op == "reduce":
            axes = a.get("axes")
            if axes is None and len(node.input) > 1:
                c = self.const(node.input[1])
                axes = None if c is None else [int(x) for x in np.asarray(c).reshape(-1)]
            rank = len(layer.in_shape or ())
            axes = sorted(int(x) % rank for x in axes) if axes is not None and rank else None
            if rank == 4 and axes == [2, 3] and node.op_type in ("ReduceMean", "ReduceMax"):
                layer.op = "gap" if node.op_type == "ReduceMean" else "gmp"
                layer.kernel = (int(layer.in_shape[2]), int(layer.in_shape[3]))
        elif op == "bn":
            layer.cin = layer.cout = layer.channels

    def _fallback_shape(self, node, layer: Layer, a: dict) -> tuple[int, ...] | None:
        """Shapes ONNX inference could not give (after an unknown op): the op's own rule, else its input's."""
        s = layer.in_shape
        if s is None:
            return None
        if layer.op in ("maxpool", "avgpool") and len(s) == 4:
            (kh, kw), (sh, sw), p = layer.kernel, layer.stride, layer.pads
            ceil = bool(a.get("ceil_mode", 0))
            return (s[0], s[1], _conv_out(s[2], kh, sh, p[0], p[2], 1, ceil), _conv_out(s[3], kw, sw, p[1], p[3], 1, ceil))
        if layer.op in ("gap", "gmp") and len(s) == 4:
            return (s[0], s[1], 1, 1)
        if layer.op == "reshape" and node.op_type == "Flatten":
            axis = int(a.get("axis", 1))
            return (int(np.prod(s[:axis])), int(np.prod(s[axis:])))
        if layer.op == "reshape" and node.op_type == "Reshape":
            target = self.const(node.input[1])
            if target is not None:
                dims = [int(s[i]) if int(d) == 0 else int(d) for i, d in enumerate(target.reshape(-1))]
                if -1 in dims:
                    known = int(np.prod([d for d in dims if d != -1]))
                    dims[dims.index(-1)] = int(np.prod(s)) // max(known, 1)
                return tuple(dims)
        if layer.op == "concat" and all(layer.other_in_shapes):
            axis = int(a.get("axis", 1)) % len(s)
            out = list(s)
            out[axis] = s[axis] + sum(int(o[axis]) for o in layer.other_in_shapes)
            return tuple(out)
        if not layer.known:
            layer.note += "; output shape assumed equal to its input's"
        return tuple(s)


def _fold(layers: list[Layer]) -> list[Layer]:
    """Fold BN and constant scale/shift layers into the Conv/Gemm before them (single consumer only)."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for layer in layers:
        for src in layer.inputs:
            consumers[src].append(layer.name)
    by_name = {layer.name: layer for layer in layers}
    removed: dict[str, str] = {}
    for layer in layers:
        if layer.op not in ("bn", "scale") or len(layer.inputs) != 1:
            continue
        src = removed.get(layer.inputs[0], layer.inputs[0])
        prev = by_name.get(src)
        if prev is None or not prev.is_compute or prev.op == "matmul" or len(consumers[src]) != 1:
            continue
        prev.folded.append(layer.name)
        prev.out_bits = layer.out_bits
        prev.out_shape = layer.out_shape or prev.out_shape
        removed[layer.name] = prev.name
        consumers[prev.name] = consumers.pop(layer.name, [])
    kept = []
    for layer in layers:
        if layer.name in removed:
            continue
        layer.inputs = [_resolve(removed, i) for i in layer.inputs]
        kept.append(layer)
    return kept


def _resolve(removed: dict[str, str], name: str) -> str:
    while name in removed:
        name = removed[name]
    return name


def load_graph(path_or_model: Any, batch: int = 1) -> LayerGraph:
    """Read an ONNX, QDQ or QONNX model (path or ModelProto) into a LayerGraph at the given batch size."""
    if isinstance(path_or_model, LayerGraph):
        return path_or_model
    if not isinstance(batch, int) or batch < 1:
        raise HardwareModelError(f"batch must be a positive integer, got {batch!r}")
    proto, source = _load_proto(path_or_model)
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    reader = _Reader(copy, batch)
    layers = _fold(reader.run())
    if not layers:
        raise HardwareModelError(f"no layers on the data path of '{source}' — is the graph connected to its input?")
    fmt = "qonnx" if reader.saw_qonnx else "qdq" if reader.saw_qdq else "onnx"
    name = Path(source).stem if source != "model" else (proto.graph.name or "model")
    outputs = [reader._producer_name(o.name) for o in proto.graph.output if o.name in reader.data]
    notes = list(reader.notes)
    missing = [layer.name for layer in layers if layer.out_shape is None]
    if missing:
        notes.append(f"{len(missing)} layer(s) without an inferred shape: {', '.join(missing[:5])}")
    return LayerGraph(name=name, layers=layers, batch=batch, input_shapes=reader.input_shapes, outputs=outputs,
                      format=fmt, source=source, notes=notes)
