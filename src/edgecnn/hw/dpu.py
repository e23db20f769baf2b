"""Xilinx DPUCZDX8G model: per-layer compute cycles from the PP x ICP x OCP array, memory time from DDR
traffic, and a calibrated efficiency per op class.

Compute (AMD PG338: the array multiplies PP output pixels x ICP input channels x OCP output channels per
cycle):  cycles = ceil(OC/OCP) * ceil(IC/ICP) * ceil(OW/PP) * OH * Kh * Kw   (per group; x N images).
Depthwise convolutions use one input channel per output channel, so only the ICP x PP plane is busy:
cycles = ceil(C/ICP) * ceil(OW/PP) * OH * Kh * Kw. A fully connected layer has no pixel parallelism:
ceil(OC/OCP) * ceil(IC/ICP). Pooling and element-wise adds run in the misc engine at ICP x PP per cycle.
Memory: every layer reads its input feature map and weights from DDR and writes its output (INT8, bias
INT32); time = bytes / (effective DDR bandwidth shared by the active cores). Layer time = max(compute /
efficiency, memory). A single thread adds a per-frame host/runtime overhead; more threads than cores hide
it and run the cores concurrently (they then share the DDR bandwidth).

The efficiencies, the host overhead and the usable fraction of the DDR peak are not published; they are
fitted by benchmarks/estimators.py on the ZCU102 (3 x B4096 @ 281 MHz) model-zoo figures only, and the
ZCU104 and KV260 figures are held out to validate the fit (see CALIBRATION).
"""
from __future__ import annotations

import math
from typing import Any

from edgecnn.hw.energy import energy_mj_per_image, power_of
from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.estimator import Estimate, Estimator, LayerEstimate, host_cost, register_estimator
from edgecnn.hw.graph import Layer, LayerGraph
from edgecnn.hw.targets import Target

#: Fitted by `python benchmarks/estimators.py --calibrate-dpu` on the ZCU102 model-zoo (v2.5) figures
#: ResNet-50 87.95 / 191.05 FPS and MobileNetV2 268.07 / 707.03 FPS (single / multi thread). Held out for
#: validation: ZCU104 (93.84 / 175; 284.18 / 609.18) and KV260 (94.21 / 99.01; - / 336.82).
CALIBRATION: dict[str, float] = {
    "eff_conv": 0.9835,     # fraction of the array's cycles doing useful work in dense conv / fc layers
    "eff_dw": 0.3529,       # the same for depthwise convolutions
    "eff_misc": 0.5,        # pooling / element-wise engine (not fitted: no published figure isolates it)
    "host_ms": 1.0279,      # per-frame runtime overhead of one thread (ms), hidden by more threads
    "ddr_fraction": 0.7698,  # usable fraction of the DDR peak for DPU traffic (all cores together)
}
FUSED_ACTS = ("relu", "clip", "leakyrelu", "prelu", "hardsigmoid", "hardswish", "threshold")
FREE_OPS = ("reshape", "transpose", "concat", "bn", "scale", "pad", "slice")
CPU_NOTE = "the DPU leaves it to the Arm CPU"


def conv_cycles(layer: Layer, pp: int, icp: int, ocp: int) -> int:
    """PG338 array cycles of a (grouped) convolution: ceil(OC/OCP)*ceil(IC/ICP)*ceil(OW/PP)*OH*Kh*Kw per group."""
    oh, ow = layer.out_hw
    kh, kw = layer.kernel
    g = max(layer.groups, 1)
    per_group = math.ceil(layer.cout / g / ocp) * math.ceil(layer.cin / g / icp) * math.ceil(ow / pp) * oh * kh * kw
    return int(per_group * g * layer.batch)


def depthwise_cycles(layer: Layer, pp: int, icp: int) -> int:
    """Depthwise: one input channel per output channel, ICP channels x PP pixels per cycle."""
    oh, ow = layer.out_hw
    kh, kw = layer.kernel
    return int(math.ceil(layer.cout / icp) * math.ceil(ow / pp) * oh * kh * kw * layer.batch)


def fc_cycles(layer: Layer, icp: int, ocp: int) -> int:
    """Fully connected: ceil(OC/OCP)*ceil(IC/ICP) per input vector (no pixel parallelism)."""
    rows = max(1, layer.macs // max(layer.cin * layer.cout, 1))
    return int(math.ceil(layer.cout / ocp) * math.ceil(layer.cin / icp) * rows)


def misc_cycles(layer: Layer, pp: int, icp: int) -> int:
    """Pool / element-wise engine: ICP channels x PP pixels per cycle, K*K reads per pooled output."""
    oh, ow = layer.out_hw
    kh, kw = layer.kernel if layer.op in ("maxpool", "avgpool", "gap", "gmp") else (1, 1)
    inputs = 2 if layer.op in ("add", "sub", "mul") else 1
    return int(math.ceil(layer.channels / icp) * math.ceil(ow / pp) * oh * kh * kw * inputs * layer.batch)


def layer_bytes(layer: Layer) -> int:
    """DDR traffic of one layer in INT8: input map(s) + output map + weights + INT32 bias."""
    inputs = layer.in_elements + sum(int(math.prod(s)) for s in layer.other_in_shapes if s)
    bias = 4 * layer.cout if layer.is_compute else 0
    return int(inputs + layer.out_elements + layer.weights + bias)


def _mappable(layer: Layer) -> tuple[bool, str]:
    """Whether the DPU runs the layer, and why not (Vitis AI's DPUCZDX8G operator list)."""
    if not layer.known:
        return False, f"{layer.note}; {CPU_NOTE}"
    if layer.op == "act":
        if layer.act_type in FUSED_ACTS:
            return True, ""
        return False, f"activation '{layer.act_type}' has no DPU implementation; {CPU_NOTE}"
    if layer.op in ("softmax", "topk", "reduce", "lrn", "matmul", "mul", "div", "max", "min"):
        return False, f"'{layer.op}' is not a DPUCZDX8G operator; {CPU_NOTE}"
    return True, ""


@register_estimator("dpu")
class DPUEstimator(Estimator):
    """DPUCZDX8G on a Zynq UltraScale+ board (cores x B512..B4096)."""

    def estimate(self, graph: LayerGraph, target: Target, *, fps: float | None = None,
                 budget: dict[str, float] | None = None, threads: int | None = None, **options: Any) -> Estimate:
        cfg = target.dpu
        cal = {**CALIBRATION, **options.get("calibration", {})}
        if threads is not None and threads < 1:
            raise HardwareModelError(f"threads must be >= 1, got {threads}")
        threads = threads or 2 * cfg.cores
        clk = target.clock_hz
        bw = cfg.ddr_gbps * 1e9 * cal["ddr_fraction"]
        active = min(cfg.cores, threads)
        rows, unmapped, notes = [], [], []
        t1 = tn = 0.0
        for layer in graph.layers:
            ok, why = _mappable(layer)
            if not ok:
                u = host_cost(layer, "the Arm CPU")
                u.why = why
                unmapped.append(u)
                continue
            if layer.op in ("conv", "gconv", "deconv"):
                cyc, eff, par = conv_cycles(layer, cfg.pp, cfg.icp, cfg.ocp), cal["eff_conv"], "PPxICPxOCP"
            elif layer.op == "dwconv":
                cyc, eff, par = depthwise_cycles(layer, cfg.pp, cfg.icp), cal["eff_dw"], "PPxICP (depthwise)"
            elif layer.op == "fc":
                cyc, eff, par = fc_cycles(layer, cfg.icp, cfg.ocp), cal["eff_conv"], "ICPxOCP"
            elif layer.op in ("maxpool", "avgpool", "gap", "gmp", "add", "sub"):
                cyc, eff, par = misc_cycles(layer, cfg.pp, cfg.icp), cal["eff_misc"], "misc engine"
            else:  # fused activations, reshapes, concat (addressing), folded BN: no DPU time of their own
                continue
            nbytes = layer_bytes(layer)
            t_compute = cyc / eff / clk
            t_mem1, t_memn = nbytes / bw, nbytes / (bw / active)
            t1 += max(t_compute, t_mem1)
            tn += max(t_compute, t_memn)
            ideal = layer.macs / (cfg.pp * cfg.icp * cfg.ocp) if layer.macs else None
            rows.append(LayerEstimate(
                name=layer.name, op=layer.op, in_shape=list(layer.in_shape or []) or None,
                out_shape=list(layer.out_shape or []) or None, macs=layer.macs, w_bits=8 if layer.weights else 0,
                a_bits=8, cycles=round(max(t_compute, t_mem1) * clk), time_ms=max(t_compute, t_mem1) * 1e3,
                parallelism={"array": par, "PP": cfg.pp, "ICP": cfg.icp, "OCP": cfg.ocp},
                resources={"ddr_bytes": nbytes}, bound="memory" if t_mem1 > t_compute else "compute",
                utilization=round(ideal / cyc, 4) if ideal and cyc else None))
        if not rows:
            raise HardwareModelError(f"no layer of '{graph.name}' runs on the DPU — is it a CNN?")
        if any(l.w_bits > 8 or l.a_bits > 8 for l in graph.compute_layers()):
            notes.append("the DPU runs INT8: float layers are costed as if quantized with vitis_ai_quantizer")
        cpu_ms = sum(u.cost_ms for u in unmapped)
        single_ms = t1 * 1e3 + cal["host_ms"] + cpu_ms
        fps_single = 1e3 / single_ms
        fps_multi = active / tn if threads > 1 else fps_single
        if cpu_ms > 0 and threads > 1:
            fps_multi = min(fps_multi, (threads - active + 1) * 1e3 / cpu_ms)
        out_fps = fps_multi if threads > 1 else fps_single
        if fps is not None and out_fps < fps:
            notes.append(f"target {fps:g} FPS not reached ({out_fps:.1f} FPS with {threads} thread(s))")
        bottleneck = max(rows, key=lambda r: r.time_ms).name
        watts, source = power_of(target)
        bram_per_core = {"B4096": 257, "B1152": 123, "B512": 73.5}.get(cfg.arch)  # PG338 low RAM usage
        used = {"dpu_cores": cfg.cores, "peak_gops": cfg.peak_ops_per_cycle * clk * cfg.cores / 1e9}
        if bram_per_core:
            used["bram36"] = bram_per_core * cfg.cores
        return Estimate(
            target=target.name, kind="dpu", model=graph.name, layers=rows, bottleneck=bottleneck, fps=out_fps,
            latency_ms=single_ms, resources_used=used, resources_available=target.resources.as_dict(),
            power_w=watts, power_source=source, energy_mj_per_image=energy_mj_per_image(watts, out_fps),
            unmapped=unmapped, clock_mhz=target.clock_mhz, notes=notes,
            extra={"threads": threads, "cores_active": active, "fps_single_thread": fps_single,
                   "fps_multi_thread": active / tn, "dpu_ms_per_frame": t1 * 1e3, "calibration": cal,
                   "gops": 2 * graph.total_macs / 1e9})
