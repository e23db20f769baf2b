"""Xilinx DPUCZDX8G model: per-layer compute cycles from the PP x ICP x OCP array, memory time from DDR
traffic, a fixed cost per layer, the host work of the runtime threads, and the operator table.

Compute (AMD PG338: the array multiplies PP output pixels x ICP input channels x OCP output channels per
cycle):  cycles = ceil(OC/OCP) * ceil(IC/ICP) * ceil(OW/PP) * OH * Kh * Kw   (per group; x N images).
Depthwise convolutions use one input channel per output channel at half the pixel parallelism (PG338):
cycles = ceil(C/ICP) * ceil(OW/(PP/2)) * OH * Kh * Kw. A fully connected layer has no pixel parallelism:
ceil(OC/OCP) * ceil(IC/ICP). Pooling and element-wise add/multiply run in the misc engine at ICP x PP.
Memory: every layer reads its input feature map and weights from DDR and writes its output (INT8, bias
INT32); time = bytes / (effective DDR bandwidth shared by the active cores). Layer time = max(compute /
efficiency + fixed cycles per layer, memory). One thread adds its host work per frame; several threads (one
per Arm core) overlap it with the DPU jobs until the DPU cores, or the threads' round trip, bound the rate.
Layers the DPU cannot run (UG1414's operator table) are costed on the Arm CPU.

The efficiencies, the per-layer cycles, the host work and the usable fraction of the DDR peak are not
published; benchmarks/claims/estimators.py fits them on the ZCU102 (3 x B4096 @ 281 MHz, Vitis AI 2.5) model-zoo
figures only and reports the error on every other published figure (hw/validation/published.yaml, hw.validation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

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
from edgecnn.hw.estimators.error_bars import validation_note
from edgecnn.hw.graph import Layer, LayerGraph
from edgecnn.hw.targets import DPUConfig, Target

#: Fitted by `python benchmarks/claims/estimators.py` on the ZCU102 (3 x B4096 @ 281 MHz, Vitis AI 2.5) model-zoo
#: figures only; every other published figure (ZCU104, KV260, Ultra96, older releases) is held out, see
#: published.yaml and benchmarks/results/estimators.json for the per-class errors.
CALIBRATION: dict[str, float] = {
    "eff_conv": 0.9976,     # fraction of the array's cycles doing useful work in dense conv / fc layers
    "eff_dw": 0.8179,       # the same for depthwise convolutions (on PG338's PP/2 pixel parallelism)
    "eff_misc": 0.2205,     # pooling / element-wise engine
    "layer_cycles": 4296.875,  # fixed cycles per DPU layer: instruction fetch, pipeline fill and drain
    "host_ms": 0.1105,      # per-frame work of one thread on the Arm CPU (ms): pre/post-processing, job submission
    "ddr_fraction": 0.69,   # usable fraction of the DDR peak for DPU traffic (all cores together)
}
#: Zynq UltraScale+ application processor: four Arm Cortex-A53 cores (AMD DS891) share the host work.
ARM_CORES = 4
#: UG1414 (Vitis AI 3.0, "Currently Supported Operators", DPUCZDX8G_ISA1_B4096): activations fused into a
#: convolution or an element-wise layer. Sigmoid and swish (x * sigmoid) are replaced by hard-sigmoid /
#: hard-swish by the Vitis AI quantizer by default (UG1414, "vai_q_tensorflow2 Supported Operations").
FUSED_ACTS = ("relu", "clip", "leakyrelu", "hardsigmoid", "hardswish", "threshold")
REPLACED_ACTS = {"sigmoid": "hard-sigmoid", "silu": "hard-swish", "swish": "hard-swish"}
FREE_OPS = ("reshape", "transpose", "concat", "bn", "scale", "pad", "slice", "resize")
CPU_NOTE = "the DPU leaves it to the Arm CPU"
#: UG1414 limits of DPUCZDX8G_ISA1 (bank_depth 2048, channel_parallel = ICP): kernel, stride, channels.
MAX_KERNEL, MAX_STRIDE, MAX_POOL, BANK_DEPTH = 16, 8, 256, 2048


def conv_cycles(layer: Layer, pp: int, icp: int, ocp: int) -> int:
    """PG338 array cycles of a (grouped) convolution: ceil(OC/OCP)*ceil(IC/ICP)*ceil(OW/PP)*OH*Kh*Kw per group."""
    oh, ow = layer.out_hw
    kh, kw = layer.kernel
    g = max(layer.groups, 1)
    per_group = math.ceil(layer.cout / g / ocp) * math.ceil(layer.cin / g / icp) * math.ceil(ow / pp) * oh * kh * kw
    return int(per_group * g * layer.batch)


def depthwise_cycles(layer: Layer, pp: int, icp: int) -> int:
    """Depthwise: one input channel per output channel; PG338: "the parallelism of depthwise convolution is half
    that of the pixel parallelism", so ICP channels x PP/2 pixels per cycle."""
    oh, ow = layer.out_hw
    kh, kw = layer.kernel
    return int(math.ceil(layer.cout / icp) * math.ceil(ow / max(pp // 2, 1)) * oh * kh * kw * layer.batch)


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


def mappable(layer: Layer, icp: int = 16) -> tuple[bool, str]:
    """Whether the DPUCZDX8G runs the layer, and why not, from the UG1414 operator table (Vitis AI 3.0,
    DPUCZDX8G_ISA1) and PG338's feature list; ``icp`` is the channel parallelism of the configuration."""
    op = layer.op
    if not layer.known:
        return False, f"{layer.note}; {CPU_NOTE}"
    if op == "act":
        if layer.act_type in FUSED_ACTS or layer.act_type in REPLACED_ACTS:
            return True, ""
        return False, f"activation '{layer.act_type}' is not a DPUCZDX8G activation (UG1414: ReLU, ReLU6, " \
                      f"LeakyReLU, Hard-Swish, Hard-Sigmoid); {CPU_NOTE}"
    if op in ("conv", "deconv", "dwconv"):
        kh, kw = layer.kernel
        sh, sw = layer.stride
        kmax = MAX_POOL if op == "dwconv" else MAX_KERNEL
        if max(kh, kw) > kmax:
            return False, f"kernel {kh}x{kw} exceeds the DPU's {kmax}x{kmax} (UG1414); {CPU_NOTE}"
        if op == "conv" and max(sh, sw) > MAX_STRIDE:
            return False, f"stride {sh}x{sw} exceeds the DPU's {MAX_STRIDE} (UG1414); {CPU_NOTE}"
        if op == "conv" and kh * kw * math.ceil(layer.cin / icp) > BANK_DEPTH:
            return False, f"kernel_w*kernel_h*ceil(in_channels/{icp}) > {BANK_DEPTH} (UG1414 bank depth); {CPU_NOTE}"
        if max(layer.cin, layer.cout) > 256 * icp:
            return False, f"more than {256 * icp} channels (UG1414: 256 x channel_parallel); {CPU_NOTE}"
        return True, ""
    if op == "gconv":
        return False, "grouped convolution (groups neither 1 nor the channel count) is compiled to the CPU " \
                      f"(UG1414, operators supported by PyTorch); {CPU_NOTE}"
    if op in ("maxpool", "avgpool") and max(layer.kernel) > MAX_POOL:
        return False, f"pooling kernel {layer.kernel[0]}x{layer.kernel[1]} exceeds {MAX_POOL} (UG1414); {CPU_NOTE}"
    if op == "softmax":
        return False, "softmax runs on the Arm CPU unless the DPU is built with PG338's optional softmax module; " \
                      + CPU_NOTE
    if op in ("topk", "reduce", "lrn", "matmul", "div", "sub", "max", "min"):
        return False, f"'{op}' is not a DPUCZDX8G operator (UG1414); {CPU_NOTE}"
    return True, ""


@dataclass(frozen=True)
class DPUOptions(EstimatorOptions):
    """The DPU estimator's options: ``threads`` (runtime threads, default one per Arm core) and ``calibration``
    (constants overriding CALIBRATION), beside fps (a note when not reached) and budget (dataflow only)."""

    calibration: dict[str, float] = field(default_factory=dict)


@register_estimator("dpu")
class DPUEstimator(Estimator[DPUOptions]):
    """DPUCZDX8G on a Zynq UltraScale+ board (cores x B512..B4096)."""

    options_type = DPUOptions

    def estimate(self, graph: LayerGraph, target: Target, options: DPUOptions | None = None) -> Estimate:
        options = options or DPUOptions()
        fps, threads = options.fps, options.threads
        cfg = target.dpu
        if cfg is None:  # Target's validator gives every dpu target its dpu section
            raise HardwareModelError(f"target '{target.name}' has no dpu section")
        cal = {**CALIBRATION, **options.calibration}
        if threads is not None and threads < 1:
            raise HardwareModelError(f"threads must be >= 1, got {threads}")
        threads = threads or ARM_CORES
        clk = target.clock_hz
        active = min(cfg.cores, threads)
        rows, unmapped, replaced, t1, tn = _cost_layers(graph, cfg, cal, clk, active)
        if not rows:
            raise HardwareModelError(f"no layer of '{graph.name}' runs on the DPU — is it a CNN?")
        notes = _notes(graph, replaced)
        cpu_ms = sum(u.cost_ms for u in unmapped)
        host_ms = cal["host_ms"]
        single_ms, fps_single, fps_multi = _frame_rates(t1, tn, host_ms, cpu_ms, threads, active)
        out_fps = fps_multi if threads > 1 else fps_single
        if fps is not None and out_fps < fps:
            notes.append(f"target {fps:g} FPS not reached ({out_fps:.1f} FPS with {threads} thread(s))")
        bottleneck = max(rows, key=lambda r: r.time_ms).name
        watts, source = power_of(target)
        available = target.resources.as_dict()
        used = _place_memory(_resources(cfg, clk), available, notes)
        return Estimate(
            target=target.name, kind="dpu", model=graph.name, layers=rows, bottleneck=bottleneck, fps=out_fps,
            latency_ms=single_ms, resources_used=used, resources_available=available,
            power_w=watts, power_source=source, energy_mj_per_image=energy_mj_per_image(watts, out_fps),
            unmapped=unmapped, clock_mhz=target.clock_mhz, notes=notes,
            extra={"threads": threads, "cores_active": active, "fps_single_thread": fps_single,
                   "fps_multi_thread": fps_multi, "dpu_ms_per_frame": t1 * 1e3, "host_ms_per_frame": host_ms,
                   "calibration": cal,
                   "gops": 2 * graph.total_macs / 1e9})


def _cost_layers(graph: LayerGraph, cfg: DPUConfig, cal: dict[str, float], clk: float, active: int
                 ) -> tuple[list[LayerEstimate], list[Unmapped], set[str], float, float]:
    """Every layer on the DPU or, where UG1414 rules it out, on the Arm CPU: (the DPU layers' rows, the CPU
    layers, the activations costed as their hard versions, the DPU seconds per frame with the DDR to one core,
    the same with the DDR shared by the ``active`` cores)."""
    bw = cfg.ddr_gbps * 1e9 * cal["ddr_fraction"]
    rows, unmapped = [], []
    replaced: set[str] = set()
    t1 = tn = 0.0
    for layer in graph.layers:
        ok, why = mappable(layer, cfg.icp)
        if not ok:
            u = host_cost(layer, "the Arm CPU")
            u.why = why
            unmapped.append(u)
            continue
        if layer.op == "act" and layer.act_type in REPLACED_ACTS:
            replaced.add(layer.act_type)
        cost = _layer_cost(layer, cfg, cal, clk, bw, active)
        if cost is None:
            continue
        row, time_1, time_n = cost
        t1 += time_1
        tn += time_n
        rows.append(row)
    return rows, unmapped, replaced, t1, tn


def _array_cycles(layer: Layer, cfg: DPUConfig, cal: dict[str, float]) -> tuple[int, float, str] | None:
    """(cycles, efficiency, parallelism) of a layer on the array or the misc engine; None for the layers without
    DPU time of their own (fused activations, reshapes, concat by addressing, folded BatchNorm)."""
    if layer.op in ("conv", "deconv"):
        return conv_cycles(layer, cfg.pp, cfg.icp, cfg.ocp), cal["eff_conv"], "PPxICPxOCP"
    if layer.op == "dwconv":
        return depthwise_cycles(layer, cfg.pp, cfg.icp), cal["eff_dw"], "PP/2xICP (depthwise)"
    if layer.op == "fc":
        return fc_cycles(layer, cfg.icp, cfg.ocp), cal["eff_conv"], "ICPxOCP"
    if layer.op in ("maxpool", "avgpool", "gap", "gmp", "add", "mul"):
        return misc_cycles(layer, cfg.pp, cfg.icp), cal["eff_misc"], "misc engine"
    return None


def _layer_cost(layer: Layer, cfg: DPUConfig, cal: dict[str, float], clk: float, bw: float, active: int
                ) -> tuple[LayerEstimate, float, float] | None:
    """One layer's DPU time, max(compute / efficiency + fixed cycles, DDR traffic / bandwidth): (its row, seconds
    with the DDR to itself, seconds with the DDR shared by ``active`` cores); None without DPU time of its own."""
    array = _array_cycles(layer, cfg, cal)
    if array is None:
        return None
    cyc, eff, par = array
    nbytes = layer_bytes(layer)
    t_compute = (cyc / eff + cal["layer_cycles"]) / clk
    t_mem1, t_memn = nbytes / bw, nbytes / (bw / active)
    ideal = layer.macs / (cfg.pp * cfg.icp * cfg.ocp) if layer.macs else None
    row = LayerEstimate(
        name=layer.name, op=layer.op, in_shape=list(layer.in_shape or []) or None,
        out_shape=list(layer.out_shape or []) or None, macs=layer.macs, w_bits=8 if layer.weights else 0,
        a_bits=8, cycles=round(max(t_compute, t_mem1) * clk), time_ms=max(t_compute, t_mem1) * 1e3,
        parallelism={"array": par, "PP": cfg.pp, "ICP": cfg.icp, "OCP": cfg.ocp},
        resources={"ddr_bytes": nbytes}, bound="memory" if t_mem1 > t_compute else "compute",
        utilization=round(ideal / cyc, 4) if ideal and cyc else None)
    return row, max(t_compute, t_mem1), max(t_compute, t_memn)


def _frame_rates(t1: float, tn: float, host_ms: float, cpu_ms: float, threads: int, active: int
                 ) -> tuple[float, float, float]:
    """The threading model: (one frame's latency in ms, FPS of one thread, FPS of ``threads`` threads). One
    thread runs host work, DPU layers and CPU layers in turn. Several threads (one per Arm core) each alternate
    host work and a blocking DPU job: the DPU cores bound the rate when busy, else the threads' round trip (host
    + DPU + CPU layers) does."""
    single_ms = t1 * 1e3 + host_ms + cpu_ms
    fps_single = 1e3 / single_ms
    fps_multi = min(active / tn, min(threads, ARM_CORES) * 1e3 / (host_ms + tn * 1e3 / active + cpu_ms))
    return single_ms, fps_single, fps_multi


def _notes(graph: LayerGraph, replaced: set[str]) -> list[str]:
    """What the reader of a DPU estimate should know: replaced activations, the validation of this kind of
    network, float layers costed as INT8."""
    notes = []
    if replaced:
        hard = ", ".join(sorted({REPLACED_ACTS[a] for a in replaced}))
        notes.append(f"{', '.join(sorted(replaced))} costed as {hard} on the DPU: the Vitis AI quantizer "
                     "replaces them by default (check the accuracy after)")
    checked = validation_note("dpu", graph)
    if checked:
        notes.append(checked)
    if any(l.w_bits > 8 or l.a_bits > 8 for l in graph.compute_layers()):
        notes.append("the DPU runs INT8: float layers are costed as if quantized with vitis_ai_quantizer")
    return notes


URAM_PER_BRAM36 = 8  # one UltraRAM block (288 Kb) holds eight 36 Kb BRAM blocks' worth


def _place_memory(used: dict[str, float], available: dict[str, float], notes: list[str]) -> dict[str, float]:
    """The DPU's on-chip buffers on the board's memories: BRAM first; what does not fit goes to UltraRAM, as the
    DPU's URAM option does on boards that have it (PG338: the ZCU104's and KV260's reference designs use it); a
    configuration larger than both is said to not fit, never reported as more BRAM than the chip has."""
    need, bram = used.get("bram36"), available.get("bram36")
    if need is None or not bram or need <= bram:
        return used
    uram = available.get("uram") or 0
    spill = math.ceil((need - bram) / URAM_PER_BRAM36)
    if spill <= uram:
        notes.append(f"the DPU's buffers take {need:g} BRAM36 blocks' worth; the board has {bram:g}, so {spill} "
                     f"UltraRAM blocks hold the rest (the DPU's URAM option)")
        return {**used, "bram36": bram, "uram": spill}
    notes.append(f"the DPU configuration does not fit this board: its buffers take {need:g} BRAM36 blocks' worth, the "
                 f"board has {bram:g} BRAM36 and {uram:g} UltraRAM blocks ({bram + uram * URAM_PER_BRAM36:g} "
                 "worth); choose a smaller DPU (fewer cores or a smaller size)")
    return used


def _resources(cfg: DPUConfig, clk: float) -> dict[str, float]:
    """The DPU cores, their peak GOPS and (PG338, low RAM usage) their BRAM."""
    bram_per_core = {"B4096": 257, "B1152": 123, "B512": 73.5}.get(cfg.arch)  # PG338 low RAM usage
    used = {"dpu_cores": cfg.cores, "peak_gops": cfg.peak_ops_per_cycle * clk * cfg.cores / 1e9}
    if bram_per_core:
        used["bram36"] = bram_per_core * cfg.cores
    return used
