"""ONNX nodes -> Layers: one pass in topological order that turns quantizers into bit widths and the data-path
ops into Layer records (shapes, kernel geometry, MACs, weights, sparsity).

The one place that knows how each ONNX op maps onto the IR of hw.layers; hw.graph.load_graph drives it.
"""
from __future__ import annotations

import numpy as np

from edgecnn.hw.graph.ir import ACTIVATIONS, BIT_PRESERVING, ELTWISE, SIMPLE, TRANSPARENT, WEIGHT_INPUT, Layer
from edgecnn.hw.graph.onnxio import bits_from_dtype, conv_out, fix_inputs, node_attrs, shape_inference_copy, tensor_info
from edgecnn.hw.graph.quant_ops import QONNX_DOMAINS, finn_dtype_bits, quantizer_bits


class LayerReader:
    """One pass over the ONNX nodes in topological order, building layers."""

    def __init__(self, proto, batch: int) -> None:
        from onnx import numpy_helper

        self.proto = proto
        self.batch = batch
        self.input_shapes = fix_inputs(proto, batch)
        inferred = shape_inference_copy(proto)
        self.shapes, self.dtypes = tensor_info(inferred)
        self.np = numpy_helper
        self.inits = {i.name: i for i in proto.graph.initializer}
        self.consts: dict[str, np.ndarray | None] = {}  # None: not a constant (remembered too)
        self.producer = {o: n for n in proto.graph.node for o in n.output}
        self.data: set[str] = set(self.input_shapes)
        self.alias: dict[str, str] = {name: f"input:{name}" for name in self.input_shapes}
        self.bits: dict[str, int] = {name: bits_from_dtype(self.dtypes.get(name)) for name in self.input_shapes}
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
                    bits = bits_from_dtype(self.dtypes.get(cur, 1)) if cur in self.inits else 32
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
                bits = bits_from_dtype(self.dtypes.get(node.input[0])) if bits is None else bits
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
            a = node_attrs(node)
            zp_dtype = self.dtypes.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            bits = bits_from_dtype(a.get("output_dtype") or zp_dtype or 2)
        elif op in ("Quant", "BipolarQuant", "Trunc"):
            bits = quantizer_bits(node, self.const, bits)
        elif op == "Cast":
            bits = min(bits, bits_from_dtype(node_attrs(node).get("to", 1)))
        self.bits[out] = bits
        layer = self.root_layer.get(src)
        if layer is not None:
            self.root_layer[out] = layer
            if op in ("QuantizeLinear", "Quant", "BipolarQuant", "Trunc"):
                self.layers[layer].out_bits = bits

    def producer_name(self, tensor: str) -> str:
        root = self.alias.get(tensor, tensor)
        return self.root_layer.get(tensor) or root

    def layer(self, node, ins: list[str]) -> None:
        name = node.name or f"{node.op_type}_{len(self.order)}"
        while name in self.layers:
            name += "_"
        op_type = node.op_type
        in_shape = self.shape(ins[0])
        out_shape = self.shape(node.output[0])
        layer = Layer(name=name, op="unknown", onnx_op=op_type, inputs=[self.producer_name(i) for i in ins],
                      in_shape=in_shape, out_shape=out_shape, other_in_shapes=[self.shape(i) for i in ins[1:]],
                      a_bits=self.bits.get(ins[0], 32))
        a = node_attrs(node)
        if op_type in WEIGHT_INPUT and node.domain in ("", "ai.onnx", "com.microsoft"):
            self._weighted(node, layer, a)
        elif op_type in ACTIVATIONS:
            layer.op = "act"
            layer.act_type = self._act_type(node, a)
            if op_type == "MultiThreshold":
                layer.out_bits = finn_dtype_bits(a.get("out_dtype", "UINT8"))
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
            self.bits[out] = bits_from_dtype(self.dtypes.get(out, 1))
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
                    oh = conv_out(layer.in_shape[2], kh, strides[0], layer.pads[0], layer.pads[2], dil[0])
                    ow = conv_out(layer.in_shape[3], kw, strides[1], layer.pads[1], layer.pads[3], dil[1])
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
            in_shape = layer.in_shape or ()
            rank = len(in_shape)
            axes = sorted(int(x) % rank for x in axes) if axes is not None and rank else None
            if rank == 4 and axes == [2, 3] and node.op_type in ("ReduceMean", "ReduceMax"):
                layer.op = "gap" if node.op_type == "ReduceMean" else "gmp"
                layer.kernel = (int(in_shape[2]), int(in_shape[3]))
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
            return (s[0], s[1], conv_out(s[2], kh, sh, p[0], p[2], 1, ceil),
                    conv_out(s[3], kw, sw, p[1], p[3], 1, ceil))
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
        others = [o for o in layer.other_in_shapes if o]
        if layer.op == "concat" and len(others) == len(layer.other_in_shapes):
            axis = int(a.get("axis", 1)) % len(s)
            out = list(s)
            out[axis] = s[axis] + sum(int(o[axis]) for o in others)
            return tuple(out)
        if not layer.known:
            layer.note += "; output shape assumed equal to its input's"
        return tuple(s)
