"""Systolic-array model (SCALE-Sim's analytical cycles) for Edge-TPU-like and TPUv1-like targets.

Every Conv/Gemm is a GEMM of Sr output pixels x Sc filters with T = Kh*Kw*Cin/groups operands per output
(SCALE-Sim v2, scalesim/compute/systolic_compute_{os,ws,is}.py; Samajdar et al., ISPASS 2020). On an R x C
array the dataflow decides which dimensions map to rows, columns and time:
  output stationary (os): rows <- Sr, cols <- Sc, time <- T
  weight stationary (ws): rows <- T,  cols <- Sc, time <- Sr
  input stationary  (is): rows <- T,  cols <- Sr, time <- Sc
and cycles = (2R + C + time - 2) * ceil(rows_dim / R) * ceil(cols_dim / C). Mapping efficiency is SCALE-Sim's
average over folds of used rows x used cols / (R x C); utilisation = MACs / (cycles x R x C).
Weights stream from off-chip memory when they do not fit the on-chip SRAM; layer time = max(compute, memory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.estimators.base import (
    Estimate,
    Estimator,
    EstimatorOptions,
    LayerEstimate,
    Unmapped,
    host_cost,
    register_estimator,
)
from edgecnn.hw.estimators.energy import energy_mj_per_image, power_of
from edgecnn.hw.graph import Layer, LayerGraph
from edgecnn.hw.targets import SystolicConfig, Target

VECTOR_OPS = ("maxpool", "avgpool", "gap", "gmp", "add", "sub", "mul", "act", "bn", "scale", "concat", "pad")
FUSED_ACTS = ("relu", "clip", "leakyrelu", "prelu", "threshold")
DATAFLOWS = ("os", "ws", "is")


def scalesim_cycles(rows_dim: int, cols_dim: int, time_dim: int, r: int, c: int) -> int:
    """SCALE-Sim analytical compute cycles: (2R + C + T - 2) * ceil(Sr/R) * ceil(Sc/C)."""
    return int((2 * r + c + time_dim - 2) * math.ceil(rows_dim / r) * math.ceil(cols_dim / c))


def mapping_efficiency(rows_dim: int, cols_dim: int, r: int, c: int) -> float:
    """Mean over folds of rows_used*cols_used/(R*C) = Sr*Sc / (folds_r*folds_c*R*C)."""
    return rows_dim * cols_dim / (math.ceil(rows_dim / r) * math.ceil(cols_dim / c) * r * c)


def gemm_dims(layer: Layer) -> tuple[int, int, int, int]:
    """(Sr pixels, Sc filters per group, T operands per output, groups) of a Conv/Gemm layer."""
    g = max(layer.groups, 1)
    if layer.op == "fc":
        rows = max(1, layer.macs // max(layer.cin * layer.cout, 1))
        return rows, layer.cout, layer.cin, 1
    oh, ow = layer.out_hw
    kh, kw = layer.kernel
    return layer.batch * oh * ow, layer.cout // g, kh * kw * layer.cin // g, g


def map_layer(layer: Layer, dataflow: str, r: int, c: int) -> tuple[int, float]:
    """(cycles, mapping efficiency) of one Conv/Gemm layer under a dataflow; groups run one after another."""
    sr, sc, t, g = gemm_dims(layer)
    dims = {"os": (sr, sc, t), "ws": (t, sc, sr), "is": (t, sr, sc)}[dataflow]
    return g * scalesim_cycles(*dims, r, c), mapping_efficiency(dims[0], dims[1], r, c)


@dataclass(frozen=True)
class SystolicOptions(EstimatorOptions):
    """The systolic estimator's options: ``dataflow`` (os, ws or is; default the target's), beside fps (a note
    when not reached)."""

    dataflow: str | None = None


@register_estimator("systolic")
class SystolicEstimator(Estimator[SystolicOptions]):
    """An R x C INT8 systolic array with on-chip SRAM for weights and a vector unit for the rest."""

    options_type = SystolicOptions

    def estimate(self, graph: LayerGraph, target: Target, options: SystolicOptions | None = None) -> Estimate:
        options = options or SystolicOptions()
        fps = options.fps
        cfg = target.systolic
        if cfg is None:  # Target's validator gives every systolic target its systolic section
            raise HardwareModelError(f"target '{target.name}' has no systolic section")
        dataflow = options.dataflow or cfg.dataflow
        if dataflow not in DATAFLOWS:
            raise HardwareModelError(f"unknown systolic dataflow '{dataflow}' — use one of os, ws, is")
        r, c, clk = cfg.rows, cfg.cols, target.clock_hz
        rows, unmapped, total_s, eff_sum, mac_sum = _cost_layers(graph, cfg, dataflow, clk)
        if not rows:
            raise HardwareModelError(f"no layer of '{graph.name}' maps to the systolic array — is it a CNN?")
        host_ms = sum(u.cost_ms for u in unmapped) + cfg.host_overhead_ms
        latency_ms = total_s * 1e3 + host_ms
        out_fps = 1e3 / latency_ms
        notes = []
        if fps is not None and out_fps < fps:
            notes.append(f"target {fps:g} FPS not reached ({out_fps:.1f} FPS at batch {graph.batch})")
        watts, source = power_of(target)
        bottleneck = max(rows, key=lambda x: x.time_ms).name
        weights_mb = sum(l.weights * max(min(l.w_bits, 8), 1) / 8 for l in graph.compute_layers()) / 1e6
        return Estimate(
            target=target.name, kind="systolic", model=graph.name, layers=rows, bottleneck=bottleneck, fps=out_fps,
            latency_ms=latency_ms, resources_used={"pe": r * c, "weights_mb": round(weights_mb, 3)},
            resources_available={"pe": r * c, "sram_mb": cfg.sram_mb}, power_w=watts, power_source=source,
            energy_mj_per_image=energy_mj_per_image(watts, out_fps), unmapped=unmapped, clock_mhz=target.clock_mhz,
            notes=notes,
            extra={"dataflow": dataflow, "mapping_efficiency": round(eff_sum / mac_sum, 4) if mac_sum else None,
                   "utilization": round(graph.total_macs / (total_s * clk * r * c), 4) if total_s else None})


def _cost_layers(graph: LayerGraph, cfg: SystolicConfig, dataflow: str, clk: float
                 ) -> tuple[list[LayerEstimate], list[Unmapped], float, float, float]:
    """Every layer on the array, its vector unit or the host: (the rows of the layers it runs, the host's
    layers, the array's seconds per batch, and the MAC-weighted mapping efficiency's sum and weight). Weights
    stay in the on-chip SRAM in layer order while it lasts; the rest stream from DRAM."""
    r, c = cfg.rows, cfg.cols
    sram_left = cfg.sram_mb * 1e6
    rows, unmapped, total_s = [], [], 0.0
    eff_sum = mac_sum = 0.0
    for layer in graph.layers:
        if not layer.known or layer.op in ("softmax", "topk", "reduce", "lrn", "resize", "matmul", "deconv") or (
                layer.op == "act" and layer.act_type not in FUSED_ACTS + ("hardswish", "hardsigmoid", "sigmoid")):
            u = host_cost(layer)
            u.why = layer.note if not layer.known else f"'{layer.op}' is not run by the array or its vector unit"
            unmapped.append(u)
            continue
        if layer.is_compute:
            cyc, eff = map_layer(layer, dataflow, r, c)
            wbytes = layer.weights * max(min(layer.w_bits, 8), 1) / 8
            if wbytes <= sram_left:
                sram_left -= wbytes
                mem_s = 0.0
            else:
                mem_s = wbytes / (cfg.dram_gbps * 1e9)
            util = layer.macs / (cyc * r * c) if cyc else 0.0
            eff_sum += eff * layer.macs
            mac_sum += layer.macs
            par = {"dataflow": dataflow, "array": f"{r}x{c}", "mapping_eff": round(eff, 4)}
        elif layer.op == "act" and layer.act_type in FUSED_ACTS:
            continue  # applied as outputs leave the array
        elif layer.op in VECTOR_OPS:
            k = layer.kernel[0] * layer.kernel[1] if layer.op in ("maxpool", "avgpool", "gap", "gmp") else 1
            cyc, mem_s, util = math.ceil(layer.out_elements * k / c), 0.0, None
            par = {"unit": f"vector ({c} lanes)"}
        else:
            continue  # reshape / transpose: addressing only
        t = max(cyc / clk, mem_s)
        total_s += t
        rows.append(LayerEstimate(
            name=layer.name, op=layer.op, in_shape=list(layer.in_shape or []) or None,
            out_shape=list(layer.out_shape or []) or None, macs=layer.macs, w_bits=min(layer.w_bits, 8),
            a_bits=min(layer.a_bits, 8), cycles=round(t * clk), time_ms=t * 1e3, parallelism=par,
            bound="memory" if mem_s > cyc / clk else "compute",
            utilization=round(util, 4) if util is not None else None))
    return rows, unmapped, total_s, eff_sum, mac_sum
