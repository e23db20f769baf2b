"""FINN's analytical cycle and resource formulas for its streaming nodes (no FINN install needed).

Each function cites the FINN source it transcribes (Xilinx/finn, src/finn/custom_op/fpgadataflow/). The
resource formulas are FINN's own estimates (FINN-R, Blott et al. 2018), which the FINN compiler reports
before synthesis; they are estimates, not post-place-and-route numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

# --------------------------------------------------------------------------------------------- MVAU


def mvau_cycles(mw: int, mh: int, pe: int, simd: int, vectors: int) -> int:
    """matrixvectoractivation.py get_exp_cycles: (MH/PE) * (MW/SIMD) * number of input vectors."""
    return int((mh // pe) * (mw // simd) * vectors)


def mvau_wmem(mw: int, mh: int, pe: int, simd: int) -> int:
    """matrixvectoractivation.py calc_wmem: MW*MH/(PE*SIMD) weight words per PE."""
    return mw * mh // (pe * simd)


def bram18_for_weights(omega: float, mem_width: int) -> int:
    """matrixvectoractivation.py bram_estimation (FINN-R table, SDP RAMB18s, UG573 Table 1-10)."""
    if mem_width == 1:
        return math.ceil(omega / 16384)
    if mem_width == 2:
        return math.ceil(omega / 8192)
    if mem_width <= 4:
        return math.ceil(omega / 4096) * math.ceil(mem_width / 4)
    if mem_width <= 9:
        return math.ceil(omega / 2048) * math.ceil(mem_width / 9)
    if mem_width <= 18 or omega > 512:
        return math.ceil(omega / 1024) * math.ceil(mem_width / 18)
    return math.ceil(omega / 512) * math.ceil(mem_width / 36)


def uram_for_weights(omega: float, mem_width: int) -> int:
    """matrixvectoractivation.py uram_estimation: ceil(width/72) * ceil(omega/4096)."""
    return math.ceil(mem_width / 72) * math.ceil(omega / 4096)


def acc_bits(dot_len: int, w: int, a: int, signed_input: bool, acc_max_bits: int = 32) -> int:
    """Minimal accumulator width (arXiv 2301.13376) as FINN's lut_estimation uses it:
    alpha = log2(dot length) + W + A - 1 - signed(A); bits = ceil(alpha + log2(1 + 2^-alpha) + 1)."""
    alpha = math.log2(max(dot_len, 1)) + w + a - 1 - int(signed_input)
    return int(min(acc_max_bits, math.ceil(alpha + math.log2(1 + 2 ** -alpha) + 1)))


def thresholds_in_lutram(b: int | None) -> TypeGuard[int]:
    """Where the thresholds of a B-bit output live: 2^B-1 per channel fit LUTRAM for B <= 4; wider outputs
    use block RAM (FINN's ram_style_thresholds 'auto', for which lut_estimation counts no threshold LUTs)."""
    return b is not None and b <= 4


def mvau_lut(pe: int, simd: int, mw: int, w: int, a: int, b: int | None, wmem: int, tmem: int, *,
             res_dsp: bool, weights_in_lutram: bool, signed_input: bool = False) -> int:
    """hls/matrixvectoractivation_hls.py lut_estimation (FINN-R): c0 + c1*PE*(mult+adder+acc+thr+comp) + c2.

    ``b`` is the output (threshold) bit width, None for noActivation; threshold LUTs count only when the
    thresholds are in distributed RAM (thresholds_in_lutram).
    """
    c0, c1 = 300, 1.1
    c2 = pe * simd * w * math.ceil(wmem / 64) if weights_in_lutram else 0
    mult = 0 if res_dsp else simd * (2 * math.ceil((w + a) / 6) - 1) * (w + a)
    adder = (w + a) * (2 * simd - 1)
    acc = acc_bits(mw, w, a, signed_input)
    thr = comp = 0
    if thresholds_in_lutram(b):
        thr = (2 ** b - 1) * acc * math.ceil(tmem / 64)
        comp = (2 ** b - 1) * acc
    return int(c0 + c1 * (pe * (mult + adder + acc + thr + comp)) + c2)


def mvau_dsp(pe: int, simd: int, w: int, a: int, res_dsp: bool) -> int:
    """hls/matrixvectoractivation_hls.py dsp_estimation: PE*SIMD*ceil((W+A)/48) with resType dsp, else 0."""
    return int(pe * simd * math.ceil((w + a) / 48)) if res_dsp else 0


# --------------------------------------------------------------------------------------------- VVAU


def vvau_cycles(ch: int, kh: int, kw: int, pe: int, simd: int, oh: int, ow: int, batch: int = 1) -> int:
    """vectorvectoractivation.py get_exp_cycles: (Channels/PE) * (Kh*Kw/SIMD) * OH*OW."""
    return int((ch // pe) * ((kh * kw) // simd) * oh * ow * batch)


def vvau_lut(pe: int, simd: int, kh: int, kw: int, w: int, a: int, b: int | None, wmem: int, tmem: int, *,
             res_dsp: bool, weights_in_lutram: bool, signed_input: bool = False) -> int:
    """hls/vectorvectoractivation_hls.py lut_estimation: as the MVAU's with alpha over Kh*Kw and
    thr = (2^B-1)*acc*TMEM/64 (no ceil)."""
    c0, c1 = 300, 1.1
    c2 = pe * simd * w * math.ceil(wmem / 64) if weights_in_lutram else 0
    mult = 0 if res_dsp else simd * (2 * math.ceil((w + a) / 6) - 1) * (w + a)
    adder = (w + a) * (2 * simd - 1)
    acc = acc_bits(kh * kw, w, a, signed_input)
    thr = comp = 0.0
    if thresholds_in_lutram(b):
        thr = (2 ** b - 1) * acc * tmem / 64
        comp = (2 ** b - 1) * acc
    return int(c0 + c1 * (pe * (mult + adder + acc + thr + comp)) + c2)


def vvau_dsp(pe: int, simd: int, w: int, a: int, res_dsp: bool) -> int:
    """hls/vectorvectoractivation_hls.py dsp_estimation: PE*SIMD*ceil((W+A)/48) with resType dsp."""
    return int(pe * simd * math.ceil((w + a) / 48)) if res_dsp else 0


# --------------------------------------------------------------------------------------------- sliding window


def swg_cycles(ifm_ch: int, kh: int, kw: int, ifm_h: int, ifm_w: int, ofm_h: int, ofm_w: int,
               stride_w: int, dil_h: int, simd: int) -> int:
    """hls/convolutioninputgenerator_hls.py get_exp_cycles (2D, mmv=1):
    write = OFM_w*Kw*Kh*(C/SIMD); read = stride_w*IFM_w*(C/SIMD);
    cycles = IFM_w*Kh*dil_h*(C/SIMD) + OFM_h*max(write, read)."""
    fold = ifm_ch / simd
    write = ofm_w * kw * kh * fold
    read = stride_w * ifm_w * fold
    return int(ifm_w * kh * dil_h * fold + ofm_h * max(write, read))


def swg_bram18(ifm_ch: int, ifm_dim: int, k: int, stride: int, simd: int, a: int) -> int:
    """hls/convolutioninputgenerator_hls.py bram_estimation (2D, ram_style block/auto)."""
    depth = ifm_dim * ifm_ch / simd
    width = 36 if depth <= 512 else 18 if depth <= 1024 else 9 if depth <= 2048 else 4 if depth <= 4096 \
        else 2 if depth <= 8192 else 1
    width_mul = math.ceil(simd * a / width)
    depth_mul = math.ceil(ifm_dim * ifm_ch / simd / depth)
    return int((k + stride) * width_mul * depth_mul)


def swg_lut(ifm_ch: int, ifm_dim: int, k: int, stride: int, simd: int, a: int, distributed: bool) -> int:
    """hls/convolutioninputgenerator_hls.py lut_estimation: 300 + RAM LUTs when ram_style is distributed."""
    ram = (k + stride) * (simd * a * math.ceil(ifm_dim * ifm_ch / simd / 64)) if distributed else 0
    return int(300 + ram)


# --------------------------------------------------------------------------------------------- small streaming nodes


def thresholding_cycles(ch: int, pe: int, h: int, w: int, batch: int = 1) -> int:
    """thresholding.py get_exp_cycles: (C/PE) * H * W."""
    return int((ch // pe) * h * w * batch)


def thresholding_lut(ch: int, pe: int, a: int, distributed: bool = True) -> int:
    """hls/thresholding_hls.py lut_estimation: A*PE (+ PE*A*ceil(TMEM/64) when thresholds in LUTRAM, TMEM>1)."""
    tmem = ch // pe
    lut = a * pe
    if distributed and tmem > 1:
        lut += pe * a * math.ceil(tmem / 64)
    return int(lut)


def thresholding_bram18(ch: int, pe: int, a: int, distributed: bool = True) -> int:
    """hls/thresholding_hls.py bram_estimation: ceil(A*PE/16)*ceil(TMEM/1024) with thresholds in block RAM."""
    return 0 if distributed else int(math.ceil(a * pe / 16) * math.ceil((ch // pe) / 1024))


def streaming_maxpool_cycles(ifm_dim: int, k: int) -> int:
    """streamingmaxpool.py get_exp_cycles (2D): IFM_dim^2 * (1 + 1/k^2)."""
    return int(ifm_dim * ifm_dim * (1 + 1 / (k * k)))


def pool_cycles(ch: int, k: int, pe: int, oh: int, ow: int, batch: int = 1) -> int:
    """pool.py get_exp_cycles: (Channels * K*K / PE) * OH*OW * batch."""
    return int((ch * k) / pe * oh * ow * batch)


def stream_cycles(elements_per_pixel: int, par: int, h: int, w: int, batch: int = 1) -> int:
    """addstreams.py / duplicatestreams.py / globalaccpool.py / concat.py / fmpadding.py / channelwise_op.py:
    the folded stream length, (C/PE) * H * W."""
    return int((elements_per_pixel // par) * h * w * batch)


def divisors(n: int) -> list[int]:
    """Legal PE/SIMD values: the divisors of n (set_folding.py divisors)."""
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------------------------- node


@dataclass
class HWNode:
    """One FINN streaming node with its folding (PE/SIMD) and the formulas above behind it."""

    name: str
    layer: str
    kind: str
    p: dict[str, Any]
    pe: int = 1
    simd: int = 1
    notes: list[str] = field(default_factory=list)

    # ---- folding limits
    @property
    def max_pe(self) -> int:
        k = self.kind
        if k == "MVAU":
            return self.p["mh"]
        if k in ("VVAU", "Thresholding", "Pool", "AddStreams", "DuplicateStreams", "GlobalAccPool", "ChannelwiseOp",
                 "LabelSelect"):
            return self.p["ch"]
        return 1

    @property
    def max_simd(self) -> int:
        k = self.kind
        if k == "MVAU":
            return self.p["mw"]
        if k == "VVAU":
            return self.p["kh"] * self.p["kw"]
        if k in ("SWG", "FMPadding", "StreamingConcat"):
            return self.p["ch"]
        return 1

    def legal(self, pe: int, simd: int) -> bool:
        return self.max_pe % pe == 0 and self.max_simd % simd == 0

    # ---- cycles
    def cycles(self, pe: int | None = None, simd: int | None = None) -> int:
        pe = self.pe if pe is None else pe
        simd = self.simd if simd is None else simd
        p, k = self.p, self.kind
        if k == "MVAU":
            return mvau_cycles(p["mw"], p["mh"], pe, simd, p["vectors"])
        if k == "VVAU":
            return vvau_cycles(p["ch"], p["kh"], p["kw"], pe, simd, p["oh"], p["ow"], p["batch"])
        if k == "SWG":
            return swg_cycles(p["ch"], p["kh"], p["kw"], p["ih"], p["iw"], p["oh"], p["ow"], p["stride"], p["dil"],
                              simd) * p["batch"]
        if k == "Thresholding":
            return thresholding_cycles(p["ch"], pe, p["h"], p["w"], p["batch"])
        if k == "StreamingMaxPool":
            return streaming_maxpool_cycles(p["ih"], p["k"]) * p["batch"]
        if k == "Pool":
            return pool_cycles(p["ch"], p["kh"] * p["kw"], pe, p["oh"], p["ow"], p["batch"])
        if k in ("AddStreams", "DuplicateStreams", "GlobalAccPool", "ChannelwiseOp"):
            return stream_cycles(p["ch"], pe, p["h"], p["w"], p["batch"])
        if k in ("FMPadding", "StreamingConcat"):
            return stream_cycles(p["ch"], simd, p["h"], p["w"], p["batch"])
        if k == "LabelSelect":
            return int(p["ch"] // pe * p["batch"])  # labelselect.py: one pass over the labels
        return 0

    # ---- resources
    def resources(self, pe: int | None = None, simd: int | None = None) -> dict[str, float]:
        pe = self.pe if pe is None else pe
        simd = self.simd if simd is None else simd
        p, k = self.p, self.kind
        zero: dict[str, float] = {"lut": 0, "bram18": 0, "uram": 0, "dsp": 0}
        if k in ("MVAU", "VVAU"):
            w, a, b = p["wbits"], p["abits"], p["obits"]
            res_dsp = p["res_dsp"]
            if k == "MVAU":
                wmem = mvau_wmem(p["mw"], p["mh"], pe, simd)
                tmem = p["mh"] // pe if b is not None else 0
            else:
                wmem = p["ch"] * p["kh"] * p["kw"] // (pe * simd)
                tmem = p["ch"] // pe if b is not None else 0
            lutram = wmem <= 128  # small weight memories go to LUTRAM (FINN: internal_embedded WMEM <= 128)
            if k == "MVAU":
                lut = mvau_lut(pe, simd, p["mw"], w, a, b, wmem, tmem, res_dsp=res_dsp, weights_in_lutram=lutram,
                               signed_input=p.get("signed", False))
                dsp = mvau_dsp(pe, simd, w, a, res_dsp)
            else:
                lut = vvau_lut(pe, simd, p["kh"], p["kw"], w, a, b, wmem, tmem, res_dsp=res_dsp,
                               weights_in_lutram=lutram, signed_input=p.get("signed", False))
                dsp = vvau_dsp(pe, simd, w, a, res_dsp)
            bram = 0 if lutram else bram18_for_weights(wmem, simd * w * pe)
            if b is not None and not thresholds_in_lutram(b):  # thresholding_hls.py bram_estimation
                bram += thresholding_bram18(tmem * pe, pe, acc_bits(p.get("mw", p.get("kh", 1) * p.get("kw", 1)),
                                                                    w, a, False), distributed=False)
            return {"lut": lut, "bram18": bram, "uram": 0, "dsp": dsp}
        if k == "SWG":
            distributed = p["ih"] * p["ch"] / simd <= 64 * 4  # tiny line buffers in LUTRAM, as finn-examples' CNV
            lut = swg_lut(p["ch"], p["iw"], p["kh"], p["stride"], simd, p["abits"], distributed)
            bram = 0 if distributed else swg_bram18(p["ch"], p["iw"], p["kh"], p["stride"], simd, p["abits"])
            return {"lut": lut, "bram18": bram, "uram": 0, "dsp": 0}
        if k == "Thresholding":
            return {**zero, "lut": thresholding_lut(p["ch"], pe, p["abits"])}
        return zero  # FINN has no estimate for the remaining streaming nodes (counted as 0, as FINN does)

    def parallelism(self) -> dict[str, int]:
        out = {}
        if self.max_pe > 1 or self.kind in ("MVAU", "VVAU"):
            out["PE"] = self.pe
        if self.max_simd > 1 or self.kind in ("MVAU", "VVAU"):
            out["SIMD"] = self.simd
        return out
