"""The intsim executor: IntegerModel walks an INT8 QDQ ONNX graph and runs each node with integer arithmetic.

One ``_op_<OnnxOp>`` handler per supported op; the arithmetic is in hw.intarith, the scheme in hw.intsim.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.hw.graph.onnxio import read_onnx_file
from edgecnn.intsim.arith import (
    Acc,
    FloatPool,
    IntSimError,
    PendingAdd,
    QTensor,
    apply_multiplier,
    conv_int,
    int_range,
    mlas_add,
    pool_windows,
    pow2_exponent,
    quantize_multiplier,
    requantize,
)

SUPPORTED = ("QuantizeLinear, DequantizeLinear, Conv (grouped/depthwise), Gemm, MatMul, Relu, Clip, MaxPool, "
             "AveragePool, GlobalAveragePool, ReduceMean (spatial), Add, Concat, Flatten, Reshape, Squeeze, "
             "Unsqueeze, Transpose, Identity, Mul (by a scalar constant)")
ADD_SHIFT = 20  # TFLite's left shift before rescaling the inputs of an integer Add


class IntegerModel:
    """An INT8 QDQ ONNX model executed with integer-only arithmetic (the scheme: see hw.intsim)."""

    def __init__(self, model: str | Path | Any, requant: str = "ort") -> None:
        import onnx
        from onnx import numpy_helper

        if requant not in ("ort", "q31", "shift"):
            raise IntSimError(f"unknown requantization scheme '{requant}' — use 'ort', 'q31' or 'shift'")
        self.mode = requant

        if isinstance(model, onnx.ModelProto):
            proto = model
        else:
            proto = read_onnx_file(model, IntSimError, expect="an INT8 QDQ .onnx file", fix="")
        self.graph = proto.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "Constant":
                attr = node.attribute[0]
                self.consts[node.output[0]] = numpy_helper.to_array(attr.t) \
                    if attr.name == "value" else np.asarray(onnx.helper.get_attribute_value(attr))
        if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
            raise IntSimError("the model has no QuantizeLinear nodes — intsim runs INT8 QDQ models (quantize it first)")
        self.input_name = next(i.name for i in proto.graph.input if i.name not in self.consts)
        self.output_names = [o.name for o in proto.graph.output]
        self.nodes = _topological(list(proto.graph.node), {self.input_name, *self.consts})

    def run(self, x: np.ndarray, keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """Graph outputs (and the tensors named in ``keep``) as QTensor (quantized) or Acc (float accumulator)."""
        env: dict[str, Any] = {self.input_name: np.asarray(x, dtype=np.float32)}
        env.update(self.consts)
        for node in self.nodes:
            if node.op_type == "Constant":
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise IntSimError(f"op '{node.op_type}' (node {node.name}) is not supported by intsim — it covers "
                                  f"{SUPPORTED}")
            ins = [env.get(i) if i else None for i in node.input]
            attrs = {a.name: _attr(a) for a in node.attribute}
            env[node.output[0]] = handler(node, ins, attrs)
        return {name: env[name] for name in (*self.output_names, *keep)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.run(x)[self.output_names[0]]
        return out.real() if isinstance(out, (QTensor, Acc, PendingAdd, FloatPool)) else np.asarray(out)

    # ---- quantization boundary
    def _op_QuantizeLinear(self, node, ins, a):
        x, scale = ins[0], np.asarray(ins[1], np.float64)
        zp_arr = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), np.uint8)
        qmin, qmax = int_range(zp_arr.dtype)
        zp = np.asarray(zp_arr, np.int64)
        if scale.size > 1:
            raise IntSimError(f"per-channel activation quantization at {node.name} is not supported")
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):  # a float tensor (the input image)
            q = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.int64) + zp  # ONNX: float32 x / scale
            return QTensor(np.clip(q, qmin, qmax), scale, zp, qmin, qmax)
        if isinstance(x, QTensor):
            if np.allclose(x.scale, scale, rtol=0, atol=0) and np.all(x.zp == zp):
                return QTensor(np.clip(x.q, qmin, qmax), scale, zp, qmin, qmax)
            x = Acc(x.q - x.zp, x.scale)
        if isinstance(x, FloatPool):
            q = np.rint((x.y / np.float32(scale)).astype(np.float32) + np.float32(zp)).astype(np.int64)
            return QTensor(np.clip(q, qmin, qmax), scale, zp, qmin, qmax)
        if isinstance(x, PendingAdd) and self.mode == "shift":
            x = self._add_on_finer_grid(x)
        if isinstance(x, PendingAdd):
            if self.mode == "ort":
                out = mlas_add(x, scale, zp, qmin, qmax)
                if out is not None:
                    return out
            (va, vb), grid = self._to_grid([x.a, x.b])
            x = Acc(va + vb, np.asarray(grid), x.lo, x.hi)
        if isinstance(x, Acc):
            return requantize(x, scale, zp, qmin, qmax, self.mode)
        raise IntSimError(f"QuantizeLinear {node.name} gets a value intsim cannot quantize ({type(x).__name__})")

    def _op_DequantizeLinear(self, node, ins, a):
        x = ins[0]
        if isinstance(x, QTensor):
            return x  # stays integer: the consumer works on (q - zp) and the scale
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer):
            raise IntSimError(f"DequantizeLinear {node.name} has a non-integer input")
        scale = np.asarray(ins[1], np.float64)
        zp = np.asarray(ins[2] if len(ins) > 2 and ins[2] is not None else 0, np.int64)
        axis = int(a.get("axis", 1))
        if scale.size > 1:  # per-channel: broadcast along axis
            shape = [1] * x.ndim
            shape[axis % x.ndim] = -1
            scale, zp = scale.reshape(shape), (zp.reshape(shape) if zp.size > 1 else zp)
        qmin, qmax = int_range(x.dtype)
        return QTensor(x.astype(np.int64), scale, zp, qmin, qmax)

    # ---- compute
    def _bias(self, b, acc_scale: np.ndarray, node) -> np.ndarray | int:
        if b is None:
            return 0
        if isinstance(b, QTensor):
            bs = np.broadcast_to(b.scale.reshape(-1), acc_scale.reshape(-1).shape)
            if np.allclose(bs, acc_scale.reshape(-1), rtol=1e-5, atol=0):
                return (b.q - b.zp).reshape(-1)
            real = b.real().reshape(-1)
        else:
            real = np.asarray(b, np.float64).reshape(-1)
        return np.rint(real / acc_scale.reshape(-1)).astype(np.int64)  # bias re-expressed in int32 LSBs

    @staticmethod
    def _need_q(v, node, what: str) -> QTensor:
        if not isinstance(v, QTensor):
            raise IntSimError(f"{node.op_type} {node.name}: {what} is not quantized (float layer?) — intsim runs "
                              "fully-INT8 models only; do not exclude layers from quantization")
        return v

    def _op_Conv(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        w = self._need_q(ins[1], node, "weight")
        strides, dil = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
        pads = a.get("pads", [0, 0, 0, 0])
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise IntSimError(f"Conv {node.name}: auto_pad {a['auto_pad']} is not supported; export explicit pads")
        acc = conv_int(x.q - x.zp, w.q - w.zp, strides, pads, dil, int(a.get("group", 1)))
        m = w.q.shape[0]
        s = np.broadcast_to(np.asarray(x.scale * w.scale.reshape(-1), np.float64), (m,))
        acc = acc + np.asarray(self._bias(ins[2] if len(ins) > 2 else None, s, node)).reshape(1, -1, 1, 1)
        return Acc(acc, s.reshape(1, m, 1, 1))

    def _op_Gemm(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        w = self._need_q(ins[1], node, "weight")
        if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or a.get("transA", 0):
            raise IntSimError(f"Gemm {node.name}: alpha/beta != 1 or transA are not supported")
        wq, ws = w.q - w.zp, w.scale
        if a.get("transB", 0):
            wq, ws = wq.T, (ws.T if np.ndim(ws) == 2 else ws)
        return self._matmul(x, wq, ws, ins[2] if len(ins) > 2 else None, node)

    def _op_MatMul(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        w = self._need_q(ins[1], node, "weight")
        if w.q.ndim != 2:
            raise IntSimError(f"MatMul {node.name}: only a constant 2-D weight matrix is supported")
        return self._matmul(x, w.q - w.zp, w.scale, None, node)

    def _matmul(self, x: QTensor, wq: np.ndarray, ws: np.ndarray, b, node) -> Acc:
        n_out = wq.shape[1]
        acc = np.rint((x.q - x.zp).astype(np.float64) @ wq.astype(np.float64)).astype(np.int64)
        s = np.broadcast_to(np.asarray(x.scale * np.asarray(ws).reshape(-1), np.float64), (n_out,))
        acc = acc + np.asarray(self._bias(b, s, node)).reshape(1, -1)
        return Acc(acc, s.reshape(1, n_out))

    # ---- activations
    def _op_Relu(self, node, ins, a):
        x = ins[0]
        if isinstance(x, Acc):
            return Acc(x.v, x.scale, max(x.lo, 0.0), x.hi)
        if isinstance(x, PendingAdd):
            return PendingAdd(x.a, x.b, max(x.lo, 0.0), x.hi)
        x = self._need_q(x, node, "input")
        return QTensor(np.maximum(x.q, x.zp), x.scale, x.zp, x.qmin, x.qmax)

    def _op_Clip(self, node, ins, a):
        lo = float(np.asarray(ins[1])) if len(ins) > 1 and ins[1] is not None else float(a.get("min", -math.inf))
        hi = float(np.asarray(ins[2])) if len(ins) > 2 and ins[2] is not None else float(a.get("max", math.inf))
        x = ins[0]
        if isinstance(x, Acc):
            return Acc(x.v, x.scale, max(x.lo, lo), min(x.hi, hi))
        if isinstance(x, PendingAdd):
            return PendingAdd(x.a, x.b, max(x.lo, lo), min(x.hi, hi))
        x = self._need_q(x, node, "input")
        qlo = x.zp + np.round(lo / x.scale) if lo > -math.inf else x.qmin
        qhi = x.zp + np.round(hi / x.scale) if hi < math.inf else x.qmax
        return QTensor(np.clip(x.q, qlo, qhi).astype(np.int64), x.scale, x.zp, x.qmin, x.qmax)

    # ---- pooling
    def _op_MaxPool(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        win = pool_windows(x.q, a["kernel_shape"], a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0]),
                            fill=-np.inf, ceil_mode=int(a.get("ceil_mode", 0)))
        return QTensor(win.max(axis=(4, 5)).astype(np.int64), x.scale, x.zp, x.qmin, x.qmax)

    def _op_AveragePool(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        pads = a.get("pads", [0, 0, 0, 0])
        strides = a.get("strides", [1, 1])
        win = pool_windows(x.q - x.zp, a["kernel_shape"], strides, pads, fill=0.0)
        sums = np.rint(win.sum(axis=(4, 5))).astype(np.int64)
        kh, kw = a["kernel_shape"]
        if int(a.get("count_include_pad", 0)) or not any(pads):
            count = np.full(sums.shape[2:], kh * kw, np.float64)
        else:
            ones = np.ones((1, 1) + x.q.shape[2:])
            count = pool_windows(ones, a["kernel_shape"], strides, pads, fill=0.0).sum(axis=(4, 5))[0, 0]
        if self.mode == "ort":
            return self._ort_average_pool(x, win, count)
        return Acc(sums, x.scale / count)

    @staticmethod
    def _ort_average_pool(x: QTensor, win: np.ndarray, count: np.ndarray) -> "FloatPool":
        """ORT's QLinearAveragePool (contrib/quantization/qlinear_pool.cc): float32 dequantize, window sum in
        order, divide by the count; its quantize_value adds the zero point before rounding (see FloatPool)."""
        f32 = np.float32
        vals = (f32(x.scale) * win.astype(f32)).astype(f32)
        flat: np.ndarray = vals.reshape(vals.shape[:4] + (-1,))
        total = flat[..., 0].copy()
        for j in range(1, flat.shape[-1]):
            total = (total + flat[..., j]).astype(f32)
        return FloatPool((total / count.astype(f32)).astype(f32))

    def _op_GlobalAveragePool(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        count = x.q.shape[2] * x.q.shape[3]
        return Acc((x.q - x.zp).sum(axis=(2, 3), keepdims=True), x.scale / count, count=count)

    def _op_ReduceMean(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
        axes = sorted(int(v) % x.q.ndim for v in axes) if axes is not None else list(range(x.q.ndim))
        if x.q.ndim != 4 or axes != [2, 3]:
            raise IntSimError(f"ReduceMean {node.name}: only the spatial mean (axes 2, 3) is supported")
        keep = bool(a.get("keepdims", 1))
        return self._mean(x, keep)

    def _mean(self, x: QTensor, keep: bool):
        """Spatial mean: an integer sum requantized by s/(count*s_y); in 'ort' mode the float32 mean ORT
        computes (it has no integer kernel for it: DequantizeLinear -> float mean -> QuantizeLinear)."""
        if self.mode == "ort":
            real = ((x.q - x.zp).astype(np.float32) * np.float32(x.scale)).astype(np.float32)
            return real.mean(axis=(2, 3), keepdims=keep, dtype=np.float32)
        count = x.q.shape[2] * x.q.shape[3]
        return Acc((x.q - x.zp).sum(axis=(2, 3), keepdims=keep), x.scale / count)

    # ---- element-wise and structure
    def _to_grid(self, xs: list[QTensor]) -> tuple[list[np.ndarray], float]:
        """Inputs rescaled to a common grid of 2*max(s)/2^20 with fixed-point multipliers (TFLite integer add)."""
        twice_max = 2.0 * max(float(np.max(x.scale)) for x in xs)
        out = []
        for x in xs:
            if np.size(x.scale) > 1:
                raise IntSimError("per-channel scales on an Add/Concat input are not supported")
            m0, shift = quantize_multiplier(float(x.scale) / twice_max)
            out.append(apply_multiplier((x.q - x.zp) << ADD_SHIFT, m0, shift))
        return out, twice_max / (1 << ADD_SHIFT)

    @staticmethod
    def _add_on_finer_grid(x: PendingAdd) -> Acc:
        """Power-of-two scales: both inputs shifted onto the finer of the two grids and added exactly."""
        grid = min(float(np.max(x.a.scale)), float(np.max(x.b.scale)))
        vals = []
        for t in (x.a, x.b):
            k = pow2_exponent(np.asarray(t.scale, np.float64) / grid)
            vals.append((t.q - t.zp) << k)
        return Acc(vals[0] + vals[1], np.asarray(grid), x.lo, x.hi)

    def _op_Mul(self, node, ins, a):
        """Multiplication by a positive scalar constant (Quark's average-pool correction): a scale change."""
        consts = [v for v in ins if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and v.size == 1]
        other = [v for v in ins if not any(v is c for c in consts)]
        if len(consts) != 1 or len(other) != 1 or float(consts[0].reshape(-1)[0]) <= 0:
            raise IntSimError(f"Mul {node.name}: intsim supports a multiplication by one positive scalar constant")
        c, x = float(consts[0].reshape(-1)[0]), other[0]
        if isinstance(x, Acc):
            return Acc(x.v, np.asarray(x.scale, np.float64) * c, x.lo * c, x.hi * c, x.count)
        if isinstance(x, FloatPool):
            return FloatPool((x.y * np.float32(c)).astype(np.float32))
        x = self._need_q(x, node, "input")
        return Acc(x.q - x.zp, np.asarray(x.scale, np.float64) * c)

    def _op_Add(self, node, ins, a):
        xs = [self._need_q(v, node, "input") for v in ins[:2]]
        return PendingAdd(xs[0], xs[1])

    def _op_Concat(self, node, ins, a):
        axis = int(a.get("axis", 1))
        if all(isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.integer) for v in ins):
            return np.concatenate(ins, axis=axis)  # shape arithmetic
        xs = [self._need_q(v, node, "input") for v in ins]
        first = xs[0]
        if all(np.array_equal(x.scale, first.scale) and np.array_equal(x.zp, first.zp) for x in xs):
            return QTensor(np.concatenate([x.q for x in xs], axis=axis), first.scale, first.zp, first.qmin, first.qmax)
        vals, scale = self._to_grid(xs)
        return Acc(np.concatenate(vals, axis=axis), np.asarray(scale))

    def _reshape(self, x, fn):
        if isinstance(x, QTensor):
            return QTensor(fn(x.q), x.scale, x.zp, x.qmin, x.qmax)
        if isinstance(x, Acc):
            return Acc(fn(x.v), fn(np.broadcast_to(x.scale, x.v.shape)), x.lo, x.hi)
        return fn(np.asarray(x))

    def _op_Flatten(self, node, ins, a):
        axis = int(a.get("axis", 1))
        return self._reshape(ins[0], lambda v: v.reshape(int(np.prod(v.shape[:axis])), -1))

    def _op_Reshape(self, node, ins, a):
        target = [int(d) for d in np.asarray(ins[1]).reshape(-1)]

        def fn(v):
            dims = [v.shape[i] if d == 0 and not a.get("allowzero", 0) else d for i, d in enumerate(target)]
            return v.reshape(dims)

        return self._reshape(ins[0], fn)

    def _op_Squeeze(self, node, ins, a):
        axes = a.get("axes") or ([int(v) for v in np.asarray(ins[1]).reshape(-1)] if len(ins) > 1 else None)
        return self._reshape(ins[0], lambda v: np.squeeze(v, axis=tuple(axes) if axes else None))

    def _op_Unsqueeze(self, node, ins, a):
        axes = a.get("axes") or [int(v) for v in np.asarray(ins[1]).reshape(-1)]
        return self._reshape(ins[0], lambda v: np.expand_dims(v, tuple(axes)))

    def _op_Transpose(self, node, ins, a):
        perm = a.get("perm")
        return self._reshape(ins[0], lambda v: np.transpose(v, perm))

    def _op_Identity(self, node, ins, a):
        return ins[0]

    _op_Dropout = _op_Identity

    # ---- shape arithmetic of exported graphs (constants only)
    def _op_Shape(self, node, ins, a):
        x = ins[0]
        shape = (x.q if isinstance(x, QTensor) else x.v if isinstance(x, Acc) else np.asarray(x)).shape
        return np.asarray(shape, np.int64)

    def _op_Gather(self, node, ins, a):
        return np.take(np.asarray(ins[0]), np.asarray(ins[1]), axis=int(a.get("axis", 0)))

    def _op_Cast(self, node, ins, a):
        from onnx import helper

        return np.asarray(ins[0]).astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))


def _topological(nodes: list, known: set[str]) -> list:
    """The nodes in an order where every input is made before it is used (some tools append nodes at the end)."""
    ready, ordered, pending = set(known), [], list(nodes)
    while pending:
        rest = [n for n in pending if not all(not i or i in ready for i in n.input)]
        done = [n for n in pending if n not in rest]
        if not done:
            raise IntSimError(f"the graph has a cycle or an input no node makes (at {rest[0].name})")
        ordered += done
        ready.update(o for n in done for o in n.output)
        pending = rest
    return ordered


def _attr(a) -> Any:
    from onnx import helper

    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [int(x) if isinstance(x, (int, np.integer)) else x for x in v]
    return v
