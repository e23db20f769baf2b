"""Integer-only reference executor for INT8 QDQ ONNX models: what an MCU/accelerator port must compute.

It runs the graph the way integer hardware does (the scheme of the seed chapter; Jacob et al., CVPR 2018):
  acc = sum((x_q - z_x) * (w_q - z_w)) + b_q            int8 x int8 -> int32 accumulation, bias in int32
  y_q = clamp(z_y + round(acc * M), q_min, q_max)       M = s_x*s_w/s_y as a fixed-point multiplier
ReLU / Clip clamp the requantized value, MaxPool compares integers, average pooling is an integer sum
requantized by s_x/(count*s_y), Add rescales both inputs with integer multipliers before a rounding shift.
Only the image entering the first QuantizeLinear is float. Two requantization schemes (``requant=``):

* ``"ort"`` (default): the requantization arithmetic of ONNX Runtime's x86-64 integer kernels (MLAS), so a
  port can be checked bit-for-bit against ORT. Conv/Gemm: M is the float32 value s_x*s_w/s_y, a 24-bit
  multiplier M0 with an exponent; acc*M0 is normalised and rounded to 24 significant bits, then shifted with
  round-half-to-even (MlasRequantizeOutput's float32 multiply and round, done with integer operations).
  Add: MLAS's float32 fused multiply-add kernel. GlobalAveragePool: MLAS's integer sum with the float32
  multiplier s_x/(s_y*count); AveragePool and ReduceMean: the float32 arithmetic ORT uses for them
  (QLinearAveragePool dequantizes to float32; ReduceMean has no integer kernel). ORT rescales in float32, so this mode is integer in its
  accumulations and float32-exact in its rescaling.
* ``"q31"``: the integer-only scheme of gemmlowp / TFLite / CMSIS-NN, what an MCU port runs: M0 a 31-bit
  integer, rounding right shift (round half away from zero); Add and Concat rescale their inputs onto a
  common 2^-20 grid with such multipliers first (TFLite's integer add).

Products and sums are exact: the GEMMs run on integer-valued float64 arrays, exact below 2^53 (an
int8 x int8 dot product of length K stays below 2^15 * K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.hw.errors import HardwareModelError

SUPPORTED = ("QuantizeLinear, DequantizeLinear, Conv (grouped/depthwise), Gemm, MatMul, Relu, Clip, MaxPool, "
             "AveragePool, GlobalAveragePool, ReduceMean (spatial), Add, Concat, Flatten, Reshape, Squeeze, "
             "Unsqueeze, Transpose, Identity")
ADD_SHIFT = 20  # TFLite's left shift before rescaling the inputs of an integer Add


class IntSimError(HardwareModelError):
    """A model intsim cannot run as integer-only arithmetic."""


@dataclass
class QTensor:
    """Integer values with their scale and zero point (broadcastable to q)."""

    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    qmin: int
    qmax: int

    def real(self) -> np.ndarray:
        return (self.q.astype(np.float64) - self.zp) * self.scale


@dataclass
class Acc:
    """An integer accumulator waiting for requantization: real value = v * scale, clamped to [lo, hi]."""

    v: np.ndarray
    scale: np.ndarray
    lo: float = -math.inf
    hi: float = math.inf
    count: int = 0  # > 0: a sum of ``count`` inputs of scale ``scale * count`` (global average pooling)

    def real(self) -> np.ndarray:
        return np.clip(self.v.astype(np.float64) * self.scale, self.lo, self.hi)


@dataclass
class PendingAdd:
    """An integer Add waiting for its output scale (known at the QuantizeLinear that follows it)."""

    a: QTensor
    b: QTensor
    lo: float = -math.inf
    hi: float = math.inf

    def real(self) -> np.ndarray:
        return np.clip(self.a.real() + self.b.real(), self.lo, self.hi)


@dataclass
class FloatPool:
    """ORT's float32 average-pool result; its QuantizeLinear is quantize_value: rne(y / s + z) in float32."""

    y: np.ndarray

    def real(self) -> np.ndarray:
        return self.y.astype(np.float64)


# --------------------------------------------------------------------------------------- fixed point


def quantize_multiplier(m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """M = M0 * 2^-shift with M0 in [2^30, 2^31) (gemmlowp QuantizeMultiplier)."""
    m = np.asarray(m, dtype=np.float64)
    if np.any(m <= 0):
        raise IntSimError("a requantization scale is <= 0 — the QDQ scales of the model are invalid")
    frac, exp = np.frexp(m)
    m0 = np.round(frac * (1 << 31)).astype(np.int64)
    over = m0 == (1 << 31)
    m0 = np.where(over, m0 // 2, m0)
    exp = np.where(over, exp + 1, exp)
    return m0, (31 - exp).astype(np.int64)


def apply_multiplier(v: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round(v * M0 / 2^shift), half away from zero, in int64 (|v| < 2^31 keeps the product below 2^62)."""
    v = v.astype(np.int64)
    if np.any(np.abs(v) >= (1 << 31)):
        raise IntSimError("an accumulator exceeds 32 bits — the model's scales overflow int32 accumulation")
    prod = v * m0
    shift = np.broadcast_to(shift, prod.shape)
    left = np.maximum(-shift, 0)
    right = np.maximum(shift, 0)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    mag = (np.abs(prod) + half) >> right
    return np.sign(prod) * (mag << left)


def rne_shift(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """round(x / 2^s), half to even, for s >= 0 (floor shift plus a remainder test; exact for negatives)."""
    x = x.astype(np.int64)
    s = np.broadcast_to(np.asarray(s, np.int64), x.shape)
    q = x >> s
    rem = x - (q << s)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 1)
    up = (rem > half) | ((rem == half) & (s > 0) & ((q & 1) == 1))
    return q + up.astype(np.int64)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bits of |x| (exact below 2^53)."""
    return np.frexp(np.abs(x).astype(np.float64))[1].astype(np.int64)


def _round_to_24_bits(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, e) with m * 2^e = x rounded to 24 significant bits, half to even (a float32 rounding)."""
    drop = np.maximum(_bit_length(x) - 24, 0)
    return rne_shift(x, drop), drop


def mlas_multiply(v: np.ndarray, m32: np.ndarray) -> np.ndarray:
    """round_half_even(float32(float32(v) * m32)) with integer operations: 24-bit mantissas, normalise, round."""
    frac, exp = np.frexp(np.asarray(m32, np.float32).astype(np.float64))
    mant = np.rint(frac * (1 << 24)).astype(np.int64)  # exact: a float32 has a 24-bit significand
    exp = exp.astype(np.int64) - 24
    v24, e_v = _round_to_24_bits(v.astype(np.int64))
    prod, e_p = _round_to_24_bits(v24 * mant)  # < 2^48: exact in int64
    shift = -(exp + e_v + e_p)
    right = rne_shift(prod, np.maximum(shift, 0))
    return np.where(shift >= 0, right, prod << np.maximum(-shift, 0))


def requantize(acc: Acc, scale: np.ndarray, zp: np.ndarray, qmin: int, qmax: int, mode: str = "ort") -> QTensor:
    """y_q = clamp(z + round(acc * s_acc/s_y), max(qmin, Q(lo)), min(qmax, Q(hi)))."""
    shape = np.broadcast(acc.scale, scale).shape
    if mode == "ort" and acc.count:  # MLAS QLinearGlobalAveragePool: s_x / (s_y * count) in float32
        s_x = np.float32(np.asarray(acc.scale, np.float64) * acc.count)
        m32 = np.broadcast_to(s_x / (np.float32(scale) * np.float32(acc.count)), shape)
        y = mlas_multiply(acc.v, m32) + zp
    elif mode == "ort":  # M as ORT computes it: float32(float32(s_x*s_w) / s_y)
        m32 = np.broadcast_to(np.float32(1) * np.asarray(acc.scale, np.float32) / np.asarray(scale, np.float32), shape)
        y = mlas_multiply(acc.v, m32) + zp
    else:
        m0, shift = quantize_multiplier(np.broadcast_to(acc.scale / scale, shape))
        y = apply_multiplier(acc.v, m0, shift) + zp
    lo, hi = qmin, qmax
    if acc.lo > -math.inf:  # Q(relu(x)) = max(Q(x), Q(0)) exactly: rounding is monotonic
        lo = np.maximum(lo, zp + np.round(acc.lo / scale)).astype(np.int64)
    if acc.hi < math.inf:
        hi = np.minimum(hi, zp + np.round(acc.hi / scale)).astype(np.int64)
    return QTensor(np.clip(y, lo, hi).astype(np.int64), np.asarray(scale, np.float64), np.asarray(zp, np.int64),
                   qmin, qmax)


def _range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def mlas_add(x: PendingAdd, scale: np.ndarray, zp: np.ndarray, qmin: int, qmax: int) -> QTensor | None:
    """ONNX Runtime's x86-64 QLinearAdd (mlas/lib/qladd_avx2.cpp, MlasQLinearAddKernelAvx2Helper_XNNFloatMultiply):
    r = s_in/s_out in float32, c = z_out - (r_a*z_a + r_b*z_b), y = rne(fma(a, r_a, fma(b, r_b, c))) saturated.
    The fused multiply-adds are evaluated in float64 and rounded to float32 (exact products of 8- and 24-bit
    values). None for per-channel scales (no MLAS kernel)."""
    a, b = x.a, x.b
    if np.size(a.scale) > 1 or np.size(b.scale) > 1:
        return None
    f32, f64 = np.float32, np.float64
    s_out = f32(scale)
    r_a, r_b = f32(f32(a.scale) / s_out), f32(f32(b.scale) / s_out)
    const = f32(f32(zp) - f32(f32(r_a * f32(a.zp)) + f32(r_b * f32(b.zp))))
    t = (b.q.astype(f64) * f64(r_b) + f64(const)).astype(f32)
    y = np.rint((a.q.astype(f64) * f64(r_a) + t.astype(f64)).astype(f32)).astype(np.int64)
    lo, hi = qmin, qmax
    if x.lo > -math.inf:
        lo = max(lo, int(zp + np.round(x.lo / scale)))
    if x.hi < math.inf:
        hi = min(hi, int(zp + np.round(x.hi / scale)))
    return QTensor(np.clip(y, lo, hi), np.asarray(scale, np.float64), np.asarray(zp, np.int64), qmin, qmax)


# --------------------------------------------------------------------------------------- integer kernels


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> np.ndarray:
    """(N, C, OH, OW, kh, kw) view of a padded NCHW array."""
    from numpy.lib.stride_tricks import sliding_window_view

    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = sliding_window_view(x, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    return win


def conv_int(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int) -> np.ndarray:
    """Integer convolution of zero-point-free x (N,C,H,W) and w (M,C/g,kh,kw); exact int64 result."""
    n, c, _, _ = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = _windows(xp, kh, kw, strides[0], strides[1], dilations[0], dilations[1])
    oh, ow = win.shape[2], win.shape[3]
    wf = w.astype(np.float64)
    if group == 1:
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
        out = cols @ wf.reshape(m, -1).T
        return np.rint(out).astype(np.int64).reshape(n, oh, ow, m).transpose(0, 3, 1, 2)
    if cg == 1 and m == c:  # depthwise
        out = np.einsum("ncopij,cij->ncop", win, wf[:, 0], optimize=True)
        return np.rint(out).astype(np.int64)
    mg = m // group
    outs = []
    for g in range(group):
        sub = win[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kh * kw)
        outs.append((sub @ wf[g * mg:(g + 1) * mg].reshape(mg, -1).T).reshape(n, oh, ow, mg))
    return np.rint(np.concatenate(outs, axis=3)).astype(np.int64).transpose(0, 3, 1, 2)


def _pool_windows(q: np.ndarray, kernel, strides, pads, fill: float, ceil_mode: int = 0) -> np.ndarray:
    kh, kw = kernel
    h, w = q.shape[2] + pads[0] + pads[2], q.shape[3] + pads[1] + pads[3]
    extra_h = extra_w = 0
    if ceil_mode:
        extra_h = (-(h - kh) % strides[0])
        extra_w = (-(w - kw) % strides[1])
    xp = np.pad(q.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2] + extra_h), (pads[1], pads[3] + extra_w)),
                constant_values=fill)
    return _windows(xp, kh, kw, strides[0], strides[1], 1, 1)


# --------------------------------------------------------------------------------------- executor


class IntegerModel:
    """An INT8 QDQ ONNX model executed with integer-only arithmetic (see the module docstring)."""

    def __init__(self, model: str | Path | Any, requant: str = "ort") -> None:
        import onnx
        from onnx import numpy_helper

        if requant not in ("ort", "q31"):
            raise IntSimError(f"unknown requantization scheme '{requant}' — use 'ort' or 'q31'")
        self.mode = requant

        if isinstance(model, onnx.ModelProto):
            proto = model
        else:
            path = Path(model)
            if not path.is_file():
                raise IntSimError(f"model file '{path}' does not exist — pass an INT8 QDQ .onnx file")
            try:
                proto = onnx.load(str(path))
            except Exception as exc:
                raise IntSimError(f"'{path}' is not a readable ONNX model ({type(exc).__name__})") from None
        self.graph = proto.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t) \
                    if node.attribute[0].name == "value" else np.asarray(onnx.helper.get_attribute_value(node.attribute[0]))
        if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
            raise IntSimError("the model has no QuantizeLinear nodes — intsim runs INT8 QDQ models (quantize it first)")
        self.input_name = next(i.name for i in proto.graph.input if i.name not in self.consts)
        self.output_names = [o.name for o in proto.graph.output]

    def run(self, x: np.ndarray, keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """Graph outputs (and the tensors named in ``keep``) as QTensor (quantized) or Acc (float accumulator)."""
        env: dict[str, Any] = {self.input_name: np.asarray(x, dtype=np.float32)}
        env.update(self.consts)
        for node in self.graph.node:
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
        qmin, qmax = _range(zp_arr.dtype)
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
        qmin, qmax = _range(x.dtype)
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
        win = _pool_windows(x.q, a["kernel_shape"], a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0]),
                            fill=-np.inf, ceil_mode=int(a.get("ceil_mode", 0)))
        return QTensor(win.max(axis=(4, 5)).astype(np.int64), x.scale, x.zp, x.qmin, x.qmax)

    def _op_AveragePool(self, node, ins, a):
        x = self._need_q(ins[0], node, "input")
        pads = a.get("pads", [0, 0, 0, 0])
        strides = a.get("strides", [1, 1])
        win = _pool_windows(x.q - x.zp, a["kernel_shape"], strides, pads, fill=0.0)
        sums = np.rint(win.sum(axis=(4, 5))).astype(np.int64)
        kh, kw = a["kernel_shape"]
        if int(a.get("count_include_pad", 0)) or not any(pads):
            count = np.full(sums.shape[2:], kh * kw, np.float64)
        else:
            ones = np.ones((1, 1) + x.q.shape[2:])
            count = _pool_windows(ones, a["kernel_shape"], strides, pads, fill=0.0).sum(axis=(4, 5))[0, 0]
        if self.mode == "ort":
            return self._ort_average_pool(x, win, count)
        return Acc(sums, x.scale / count)

    @staticmethod
    def _ort_average_pool(x: QTensor, win: np.ndarray, count: np.ndarray) -> "FloatPool":
        """ORT's QLinearAveragePool (contrib/quantization/qlinear_pool.cc): float32 dequantize, window sum in
        order, divide by the count; its quantize_value adds the zero point before rounding (see FloatPool)."""
        f32 = np.float32
        vals = (f32(x.scale) * win.astype(f32)).astype(f32)
        flat = vals.reshape(vals.shape[:4] + (-1,))
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


def _attr(a) -> Any:
    from onnx import helper

    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [int(x) if isinstance(x, (int, np.integer)) else x for x in v]
    return v


def run_int8(model: str | Path | Any, x: np.ndarray, batch: int = 64, requant: str = "ort") -> np.ndarray:
    """The model's (dequantized) first output for images x (N, C, H, W), computed integer-only."""
    sim = model if isinstance(model, IntegerModel) else IntegerModel(model, requant=requant)
    return np.concatenate([sim(x[i:i + batch]) for i in range(0, len(x), batch)])


def _last_quantized(graph, output: str) -> str | None:
    """The QuantizeLinear output feeding the op that makes a float graph output (e.g. the final Gemm's input)."""
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(output)
    for _ in range(8):
        if node is None:
            return None
        if node.op_type == "QuantizeLinear":
            return node.output[0]
        node = producer.get(node.input[0])
    return None


def compare_with_onnxruntime(model: str | Path, inputs: np.ndarray, batch: int = 64,
                             requant: str = "ort") -> dict[str, Any]:
    """Run intsim and ONNX Runtime on ``inputs`` and compare the last integer tensor and the top-1 class.

    For a quantized output the compared values are the output's int8/uint8 values (ORT's dequantized output
    is mapped back with the same scale and zero point). For a float output made by a final Gemm/MatMul, the
    compared values are the int8/uint8 input of that layer (exposed as an extra ORT output), and top-1 uses
    the float logits of both.
    """
    import onnx
    import onnxruntime as ort

    sim = IntegerModel(model, requant=requant)
    proto = onnx.load(str(model))
    out_name = sim.output_names[0]
    probe = sim.run(np.asarray(inputs[:1], np.float32))[out_name]
    extra = None
    if not isinstance(probe, QTensor):
        extra = _last_quantized(proto.graph, out_name)
        if extra is None:
            raise IntSimError("the model's float output is not fed by a quantized tensor — nothing integer to compare")
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(extra))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    diffs, top_sim, top_ort = [], [], []
    for i in range(0, len(inputs), batch):
        xb = np.asarray(inputs[i:i + batch], np.float32)
        got = sim.run(xb, keep=(extra,) if extra else ())
        ref = sess.run(None, {in_name: xb})
        out = got[out_name]
        if extra is None:
            q_ref = np.rint(ref[0].astype(np.float64) / out.scale + out.zp).astype(np.int64)
            diffs.append(np.abs(out.q - q_ref).reshape(-1))
        else:
            diffs.append(np.abs(got[extra].q - ref[-1].astype(np.int64)).reshape(-1))
        top_sim.append(out.real().reshape(len(xb), -1).argmax(axis=1))
        top_ort.append(ref[0].reshape(len(xb), -1).argmax(axis=1))
    d = np.concatenate(diffs)
    ts, to = np.concatenate(top_sim), np.concatenate(top_ort)
    return {"images": int(len(inputs)), "values": int(d.size), "requant": requant,
            "compared": "int8 output" if extra is None else f"int8 input of the float output layer ({extra})",
            "identical": float(np.mean(d == 0)), "within_1_lsb": float(np.mean(d <= 1)), "max_lsb_diff": int(d.max()),
            "top1_agreement": float(np.mean(ts == to))}
