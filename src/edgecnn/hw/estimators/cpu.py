"""The measured CPU of this machine as a sanity row: time = MACs / measured MAC rate (+ element-wise work).

The rate is measured once (benchmarks/claims/estimators.py --measure-cpu) and stored in targets.yaml, so this
row shows how far a plain roofline-free MAC count is from a real runtime on known hardware.
"""
from __future__ import annotations

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.estimators.base import Estimate, Estimator, EstimatorOptions, LayerEstimate, register_estimator
from edgecnn.hw.estimators.energy import energy_mj_per_image, power_of
from edgecnn.hw.graph import LayerGraph
from edgecnn.hw.targets import Target

FUSED = ("relu", "clip", "leakyrelu", "hardswish", "hardsigmoid", "sigmoid")


@register_estimator("cpu")
class CPUEstimator(Estimator[EstimatorOptions]):
    """Every layer runs on the CPU: MACs at the measured rate, unfused element-wise layers at their own rate;
    activations that runtimes fuse into the convolution before them cost nothing extra. It reads none of the
    options (EstimatorOptions: fps, budget and threads are accepted and have no effect)."""

    options_type = EstimatorOptions

    def estimate(self, graph: LayerGraph, target: Target, options: EstimatorOptions | None = None) -> Estimate:
        cfg = target.cpu
        if cfg is None:  # Target's validator gives every cpu target its cpu section
            raise HardwareModelError(f"target '{target.name}' has no cpu section")
        rows, total_s = [], 0.0
        for layer in graph.layers:
            if layer.macs:
                t = layer.macs / (cfg.gmacs * 1e9)
            elif layer.op in ("reshape", "transpose", "bn") or (layer.op == "act" and layer.act_type in FUSED):
                continue  # folded / fused into the preceding convolution by the runtime
            else:
                t = max(layer.out_elements, layer.in_elements) / (cfg.elementwise_gops * 1e9)
            total_s += t
            rows.append(LayerEstimate(
                name=layer.name, op=layer.op if layer.known else layer.onnx_op,
                in_shape=list(layer.in_shape or []) or None, out_shape=list(layer.out_shape or []) or None,
                macs=layer.macs, w_bits=layer.w_bits, a_bits=layer.a_bits, cycles=0, time_ms=t * 1e3,
                parallelism={"rate": f"{cfg.gmacs:g} GMAC/s" if layer.macs else f"{cfg.elementwise_gops:g} Gelem/s"}))
        if not rows or total_s <= 0:
            raise HardwareModelError(f"'{graph.name}' has no layer with work to estimate")
        out_fps = 1.0 / total_s
        watts, source = power_of(target)
        notes = [f"rate measured: {cfg.measured}"] if cfg.measured else []
        return Estimate(
            target=target.name, kind="cpu", model=graph.name, layers=rows,
            bottleneck=max(rows, key=lambda r: r.time_ms).name, fps=out_fps, latency_ms=total_s * 1e3,
            resources_used={}, resources_available={}, power_w=watts, power_source=source,
            energy_mj_per_image=energy_mj_per_image(watts, out_fps), unmapped=[], clock_mhz=target.clock_mhz,
            notes=notes, extra={"gmacs": cfg.gmacs})
