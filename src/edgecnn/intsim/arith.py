"""The integer arithmetic of intsim: quantized values, fixed-point requantization and integer conv/pool kernels.

Three requantization schemes (see hw.intsim): ONNX Runtime's MLAS float32-exact arithmetic done with integer
operations, and the gemmlowp / TFLite q31 fixed-point multiplier. Kept apart from the graph executor
(hw.intmodel) so that each can be read and tested on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgecnn.hw.errors import HardwareModelError


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
    elif mode == "shift":  # power-of-two scales: the requantization is a rounding shift, no multiplier
        k = pow2_exponent(np.broadcast_to(np.asarray(acc.scale, np.float64) / np.asarray(scale, np.float64), shape))
        v = acc.v.astype(np.int64)
        y = np.where(k >= 0, v << np.maximum(k, 0), rne_shift(v, np.maximum(-k, 0))) + zp
    else:
        m0, shift = quantize_multiplier(np.broadcast_to(acc.scale / scale, shape))
        y = apply_multiplier(acc.v, m0, shift) + zp
    lo: int | np.ndarray = qmin
    hi: int | np.ndarray = qmax
    if acc.lo > -math.inf:  # Q(relu(x)) = max(Q(x), Q(0)) exactly: rounding is monotonic
        lo = np.maximum(lo, zp + np.round(acc.lo / scale)).astype(np.int64)
    if acc.hi < math.inf:
        hi = np.minimum(hi, zp + np.round(acc.hi / scale)).astype(np.int64)
    return QTensor(np.clip(y, lo, hi).astype(np.int64), np.asarray(scale, np.float64), np.asarray(zp, np.int64),
                   qmin, qmax)


def pow2_exponent(m: np.ndarray) -> np.ndarray:
    """k with m == 2^k exactly (element-wise); an error naming the scale when m is not a power of two."""
    m = np.asarray(m, np.float64)
    frac, exp = np.frexp(m)
    if np.any(m <= 0) or np.any(frac != 0.5):
        bad = float(np.asarray(m).reshape(-1)[np.argmax((frac != 0.5).reshape(-1))])
        raise IntSimError(f"shift-only requantization needs power-of-two scales, got a ratio of {bad:.6g} — "
                          "use a power-of-two INT8 file (precision int8-pow2) or requant='ort'/'q31'")
    return (exp - 1).astype(np.int64)


def int_range(dtype: np.dtype) -> tuple[int, int]:
    """(min, max) of an integer dtype: the clamp range of a tensor quantized to it."""
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


def pool_windows(q: np.ndarray, kernel, strides, pads, fill: float, ceil_mode: int = 0) -> np.ndarray:
    """(N, C, OH, OW, kh, kw) pooling windows of q, padded with ``fill`` (and extended for ceil_mode)."""
    kh, kw = kernel
    h, w = q.shape[2] + pads[0] + pads[2], q.shape[3] + pads[1] + pads[3]
    extra_h = extra_w = 0
    if ceil_mode:
        extra_h = (-(h - kh) % strides[0])
        extra_w = (-(w - kw) % strides[1])
    xp = np.pad(q.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2] + extra_h), (pads[1], pads[3] + extra_w)),
                constant_values=fill)
    return _windows(xp, kh, kw, strides[0], strides[1], 1, 1)
