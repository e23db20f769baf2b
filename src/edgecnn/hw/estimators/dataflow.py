"""FINN-style streaming dataflow: lower a LayerGraph to FINN nodes, fold them, estimate FPS and resources.

Lowering follows FINN's conversion (convert_to_hw_layers): a convolution becomes a sliding-window generator
(SWG) feeding a matrix-vector unit (MVAU; VVAU for depthwise), an activation after a Conv/Gemm becomes the
MVAU's thresholds (B output bits), pools become StreamingMaxPool or SWG + Pool, Add becomes AddStreams with a
DuplicateStreams at the fork. Throughput and latency follow dataflow_performance.py: FPS = f_clk / slowest
node's cycles, latency = cycles summed along the longest path / f_clk.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.estimators.base import (
    HOST_NS_PER_ELEMENT,  # noqa: F401  (importable from here, as before)
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
from edgecnn.hw.estimators.finn_formulas import HWNode
from edgecnn.hw.graph import Layer, LayerGraph
from edgecnn.hw.targets import Target

PASSTHROUGH = ("reshape", "transpose")


@dataclass
class Lowered:
    """FINN nodes of a graph, their dependencies, and what could not be mapped."""

    nodes: list[HWNode]
    deps: dict[str, list[str]]
    unmapped: list[Unmapped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Lowerer:
    def __init__(self, graph: LayerGraph) -> None:
        self.g = graph
        self.nodes: list[HWNode] = []
        self.deps: dict[str, list[str]] = {}
        self.last: dict[str, list[str]] = {}  # layer -> its output HW node(s) (through pass-through layers)
        self.absorbed: set[str] = set()
        self.unmapped: list[Unmapped] = []
        self.notes: set[str] = set()
        self.assumed: dict[str, list[str]] = defaultdict(list)  # "weights"/"activations" -> layers assumed 8-bit
        self.consumers: dict[str, list[Layer]] = defaultdict(list)
        for layer in graph.layers:
            for src in layer.inputs:
                self.consumers[src].append(layer)

    def bits(self, value: int, what: str, layer: Layer, fallback: int = 8) -> int:
        """A usable bit width: a float tensor (>= 16 bits) is assumed ``fallback``-bit, and the layer is named in a
        note (run)."""
        if value >= 16 or value <= 0:
            if layer.name not in self.assumed[what]:
                self.assumed[what].append(layer.name)
            return fallback
        return value

    def _assumption_notes(self) -> None:
        for what, names in self.assumed.items():
            more = f" and {len(names) - 4} more" if len(names) > 4 else ""
            self.notes.add(f"float {what} (no bit width in the model) assumed 8-bit at {', '.join(names[:4])}{more}; "
                           "quantize the model (QONNX/QDQ) for exact figures")

    def add(self, layer: Layer, kind: str, p: dict[str, Any], deps: list[str]) -> str:
        name = f"{layer.name}:{kind}"
        while name in self.deps:
            name += "'"
        self.nodes.append(HWNode(name, layer.name, kind, {"batch": layer.batch, **p}))
        self.deps[name] = deps
        return name

    def inputs_of(self, layer: Layer) -> list[str]:
        out = []
        for src in layer.inputs:
            out.extend(self.last.get(src, []))
        return out

    def out_bits(self, layer: Layer) -> tuple[int | None, Layer | None]:
        """MVAU output bits B: the activation right after it (absorbed as thresholds) or its own quantizer."""
        cons = self.consumers.get(layer.name, [])
        if len(cons) == 1 and cons[0].op == "act" and cons[0].act_type in ("relu", "clip", "threshold",
                                                                           "multithreshold", "hardtanh", "sign"):
            act = cons[0]
            bits = act.out_bits if act.out_bits < 16 else None
            if bits is None:
                bits = 8 if self.consumers.get(act.name) else None
            return bits, act
        if layer.out_bits < 16:
            return layer.out_bits, None
        if not cons or all(c.op in ("softmax", "topk") + PASSTHROUGH for c in cons) and not any(
                self.consumers.get(c.name) for c in cons if c.op in PASSTHROUGH):
            return None, None  # network output: accumulators leave the MVAU (noActivation)
        return 8, None

    def run(self) -> Lowered:
        for layer in self.g.layers:
            if layer.name in self.absorbed:
                self.last[layer.name] = self.last.get(layer.inputs[0], [])
                continue
            deps = self.inputs_of(layer)
            handler = getattr(self, f"_{layer.op}", None)
            if layer.op in PASSTHROUGH:
                self.last[layer.name] = deps
            elif handler is None or not layer.known:
                u = host_cost(layer)
                u.why = layer.note if not layer.known else f"FINN has no streaming node for '{layer.op}'"
                self.unmapped.append(u)
                self.last[layer.name] = deps
            else:
                self.last[layer.name] = [handler(layer, deps)]
        self._duplicate_streams()
        self._assumption_notes()
        return Lowered(self.nodes, self.deps, self.unmapped, sorted(self.notes))

    def _duplicate_streams(self) -> None:
        """FINN inserts a DuplicateStreams node where a stream feeds two consumers (residual forks)."""
        users: dict[str, list[str]] = defaultdict(list)
        for n, ds in self.deps.items():
            for d in ds:
                users[d].append(n)
        for src, us in list(users.items()):
            if len(us) < 2:
                continue
            node = next(n for n in self.nodes if n.name == src)
            layer = self.g[node.layer]
            h, w = layer.out_hw
            dup = HWNode(f"{node.layer}:DuplicateStreams", node.layer, "DuplicateStreams",
                         {"batch": layer.batch, "ch": layer.channels, "h": h, "w": w})
            self.nodes.insert(self.nodes.index(node) + 1, dup)
            self.deps[dup.name] = [src]
            for u in us:
                self.deps[u] = [dup.name if d == src else d for d in self.deps[u]]

    # ---- one handler per LayerGraph op
    def _mvau_bits(self, layer: Layer) -> tuple[int, int, int | None]:
        """(weight, input, output) bits of a Conv/Gemm's MVAU/VVAU; absorbs the activation made its thresholds."""
        w = self.bits(layer.w_bits, "weights", layer)
        a = self.bits(layer.a_bits, "activations", layer)
        b, act = self.out_bits(layer)
        if act is not None:
            self.absorbed.add(act.name)
        if b is not None and b >= 16:
            b = 8
        return w, a, b

    def _conv(self, layer: Layer, deps: list[str]) -> str:
        w, a, b = self._mvau_bits(layer)
        n, cin, hw_in = layer.batch, layer.cin, layer.in_hw
        oh, ow = layer.out_hw
        (kh, kw), (sh, sw) = layer.kernel, layer.stride
        if any(layer.pads):
            pad_h, pad_w = hw_in[0] + layer.pads[0] + layer.pads[2], hw_in[1] + layer.pads[1] + layer.pads[3]
            deps = [self.add(layer, "FMPadding", {"ch": cin, "h": pad_h, "w": pad_w, "abits": a}, deps)]
            hw_in = (pad_h, pad_w)
        depthwise = layer.op == "dwconv"
        if (kh, kw) != (1, 1) or (sh, sw) != (1, 1):
            deps = [self.add(layer, "SWG", {"ch": cin, "kh": kh, "kw": kw, "ih": hw_in[0], "iw": hw_in[1], "oh": oh,
                                            "ow": ow, "stride": sw, "dil": layer.dilation[0], "abits": a,
                                            "depthwise": depthwise}, deps)]
        res_dsp = 4 <= w <= 8 and 4 <= a <= 8
        if depthwise:
            return self.add(layer, "VVAU", {"ch": cin, "kh": kh, "kw": kw, "oh": oh, "ow": ow, "wbits": w, "abits": a,
                                            "obits": b, "res_dsp": res_dsp}, deps)
        mw = (cin // layer.groups) * kh * kw
        if layer.groups > 1:
            self.notes.add("grouped (non-depthwise) convolution modelled as a block-diagonal MVAU "
                           "(FINN has no grouped MVAU)")
        return self.add(layer, "MVAU", {"mw": mw, "mh": layer.cout, "vectors": n * oh * ow, "wbits": w, "abits": a,
                                        "obits": b, "res_dsp": res_dsp}, deps)

    _dwconv = _conv
    _gconv = _conv

    def _fc(self, layer: Layer, deps: list[str]) -> str:
        w, a, b = self._mvau_bits(layer)
        rows = max(1, layer.macs // max(layer.cin * layer.cout, 1))
        return self.add(layer, "MVAU", {"mw": layer.cin, "mh": layer.cout, "vectors": rows, "wbits": w, "abits": a,
                                        "obits": b, "res_dsp": 4 <= w <= 8 and 4 <= a <= 8}, deps)

    def _act(self, layer: Layer, deps: list[str]) -> str:
        h, w = layer.out_hw
        a = self.bits(layer.out_bits if layer.out_bits < 16 else 32, "activations", layer)
        return self.add(layer, "Thresholding", {"ch": layer.channels, "h": h, "w": w, "abits": a}, deps)

    def _feature_map_node(self, layer: Layer, kind: str, deps: list[str]) -> str:
        """A node of ``kind`` that streams the layer's output feature map (channels x H x W)."""
        h, w = layer.out_hw
        return self.add(layer, kind, {"ch": layer.channels, "h": h, "w": w}, deps)

    def _bn(self, layer: Layer, deps: list[str]) -> str:
        return self._feature_map_node(layer, "ChannelwiseOp", deps)

    _scale = _bn

    def _maxpool(self, layer: Layer, deps: list[str]) -> str:
        (kh, kw), (sh, sw) = layer.kernel, layer.stride
        ih, iw = layer.in_hw
        oh, ow = layer.out_hw
        a = self.bits(layer.a_bits, "activations", layer)
        if layer.op == "maxpool" and kh == kw == sh == sw and not any(layer.pads) and ih == iw:
            return self.add(layer, "StreamingMaxPool", {"ch": layer.channels, "ih": ih, "k": kh}, deps)
        deps = [self.add(layer, "SWG", {"ch": layer.channels, "kh": kh, "kw": kw, "ih": ih, "iw": iw, "oh": oh,
                                        "ow": ow, "stride": sw, "dil": 1, "abits": a, "depthwise": True}, deps)]
        return self.add(layer, "Pool", {"ch": layer.channels, "kh": kh, "kw": kw, "oh": oh, "ow": ow}, deps)

    _avgpool = _maxpool

    def _gap(self, layer: Layer, deps: list[str]) -> str:
        ih, iw = layer.in_hw
        return self.add(layer, "GlobalAccPool", {"ch": layer.channels, "h": ih, "w": iw}, deps)

    def _gmp(self, layer: Layer, deps: list[str]) -> str:
        ih, iw = layer.in_hw
        return self.add(layer, "Pool", {"ch": layer.channels, "kh": ih, "kw": iw, "oh": 1, "ow": 1}, deps)

    def _add(self, layer: Layer, deps: list[str]) -> str:
        return self._feature_map_node(layer, "AddStreams", deps)

    _sub = _add

    def _concat(self, layer: Layer, deps: list[str]) -> str:
        return self._feature_map_node(layer, "StreamingConcat", deps)

    def _pad(self, layer: Layer, deps: list[str]) -> str:
        return self._feature_map_node(layer, "FMPadding", deps)

    def _topk(self, layer: Layer, deps: list[str]) -> str:
        return self.add(layer, "LabelSelect", {"ch": layer.in_shape[-1] if layer.in_shape else 1}, deps)


def lower(graph: LayerGraph) -> Lowered:
    """FINN streaming nodes for ``graph`` (PE = SIMD = 1 until folded)."""
    return _Lowerer(graph).run()


def critical_path_cycles(nodes: list[HWNode], deps: dict[str, list[str]]) -> int:
    """Cycles along the longest path (dataflow_performance.py: latency = critical-path cycles)."""
    best: dict[str, int] = {}
    for n in nodes:  # nodes are in topological order
        best[n.name] = n.cycles() + max((best.get(d, 0) for d in deps.get(n.name, [])), default=0)
    return max(best.values(), default=0)


def io_dma_cycles(graph: LayerGraph, dma_bits: int) -> tuple[int, int]:
    """Cycles per image of the input and output DMAs: the image's bits (and the result's) over the stream width.

    FINN's shells move the input from DDR with an IODMA of ``dma_bits`` per cycle and the output back the same
    way (finn.transformation.fpgadataflow.insert_iodma); the slower of the two bounds the frame rate. The input
    is streamed at the width of its first quantizer (8 bits for an unquantized image), the output at the width
    of the last layer (32 bits when it is an accumulator).
    """
    first = graph.layers[0]
    in_bits = first.a_bits if first.a_bits < 32 else 8
    in_elems = sum(math.prod(s[1:]) for s in graph.input_shapes.values()) or first.in_elements // graph.batch
    last = next((layer for layer in graph.layers if layer.name in graph.outputs), graph.layers[-1])
    out_elems = last.out_elements // max(graph.batch, 1)
    out_bits = min(last.out_bits, 32)
    cycles = max(math.ceil(in_elems * in_bits / dma_bits), math.ceil(out_elems * out_bits / dma_bits))
    return int(cycles), dma_bits


@dataclass(frozen=True)
class DataflowOptions(EstimatorOptions):
    """The dataflow estimator's options: ``folding`` (a (PE, SIMD) per Conv/Gemm in graph order, or a dict by
    layer name), else ``fps`` (the cheapest folding reaching it), else the fastest folding within ``budget``
    (resource keys lut, bram36, dsp, uram; default the part times its utilization cap)."""

    folding: dict[str, Any] | list[Any] | None = None


@register_estimator("dataflow")
class DataflowEstimator(Estimator[DataflowOptions]):
    """FINN-style dataflow accelerator on an FPGA part."""

    options_type = DataflowOptions

    def estimate(self, graph: LayerGraph, target: Target, options: DataflowOptions | None = None) -> Estimate:
        from edgecnn.hw.estimators.folding import default_budget, fits_budget

        options = options or DataflowOptions()
        fps, budget = options.fps, options.budget

        lowered = lower(graph)
        nodes = lowered.nodes
        if not nodes:
            raise HardwareModelError(f"no layer of '{graph.name}' maps to a dataflow node — is it a CNN?")
        clk = target.clock_hz
        avail = {"lut": target.resources.lut, "bram36": target.resources.bram36, "dsp": target.resources.dsp,
                 "uram": target.resources.uram, "ff": target.resources.ff}
        limit = budget if budget is not None else default_budget(target)
        notes = list(lowered.notes)
        mode, fits_note = _fold(nodes, options.folding, fps, limit, clk)
        if fits_note:
            notes.append(fits_note)
        rows, used = _node_rows(nodes, graph, clk)
        slowest = max(nodes, key=lambda n: n.cycles())
        max_cycles = slowest.cycles()
        compute = [n for n in nodes if n.kind in ("MVAU", "VVAU")]
        max_compute = max((n.cycles() for n in compute), default=max_cycles)
        dma_cycles, dma_bits = io_dma_cycles(graph, target.dataflow.dma_bits if target.dataflow else 64)
        if dma_cycles > max_cycles:
            notes.append(f"bound by the {dma_bits}-bit input/output DMA ({dma_cycles} cycles per image), not by a "
                         "layer: widen the DMA or stream fewer input bits")
        checked = validation_note("dataflow", graph)
        if checked:
            notes.append(checked)
        fabric_fps = clk / max(max_cycles, dma_cycles)
        host_ms = sum(u.cost_ms for u in lowered.unmapped)
        fps_out = min(fabric_fps, 1e3 / host_ms) if host_ms > 0 else fabric_fps
        latency_ms = critical_path_cycles(nodes, lowered.deps) / clk * 1e3 + host_ms
        watts, source = power_of(target)
        fits = fits_budget(used, limit)
        return Estimate(
            target=target.name, kind="dataflow", model=graph.name, layers=rows, bottleneck=slowest.name,
            fps=fps_out, latency_ms=latency_ms, resources_used={k: round(v, 1) for k, v in used.items()},
            resources_available=avail, power_w=watts, power_source=source,
            energy_mj_per_image=energy_mj_per_image(watts, fps_out), unmapped=lowered.unmapped,
            clock_mhz=target.clock_mhz, notes=notes, fits=fits,
            extra={"folding_mode": mode, "budget": limit, "max_cycles": max_cycles,
                   "dma_cycles": dma_cycles,
                   "fps_compute_only": clk / max_compute, "fps_fabric": fabric_fps,
                   "folding": {n.name: n.parallelism() for n in nodes if n.parallelism()}})


def _fold(nodes: list[HWNode], folding: dict[str, Any] | list[Any] | None, fps: float | None, limit: dict[str, float],
          clk: float) -> tuple[str, str | None]:
    """Set every node's (PE, SIMD): as given, else the cheapest folding reaching ``fps``, else the fastest within
    the budget ``limit``; returns (the folding mode, a note when it does not fit)."""
    from edgecnn.hw.estimators.folding import apply_folding, fold_for_budget, fold_for_fps

    if folding is not None:
        apply_folding(nodes, folding)
        return "given", None
    if fps is not None:
        fits_note = fold_for_fps(nodes, clk / fps)
        return f"target {fps:g} FPS", fits_note
    return "max FPS within budget", fold_for_budget(nodes, limit)


def _node_rows(nodes: list[HWNode], graph: LayerGraph, clk: float) -> tuple[list[LayerEstimate], dict[str, float]]:
    """Each node's row (cycles, parallelism, resources) and the resources of all nodes together."""
    rows, used = [], {"lut": 0.0, "bram36": 0.0, "dsp": 0.0, "uram": 0.0}
    for n in nodes:
        res = n.resources()
        used["lut"] += res["lut"]
        used["bram36"] += res["bram18"] / 2
        used["dsp"] += res["dsp"]
        used["uram"] += res["uram"]
        layer = graph[n.layer]
        cyc = n.cycles()
        rows.append(LayerEstimate(
            name=n.name, op=f"{layer.op}/{n.kind}", in_shape=list(layer.in_shape or []) or None,
            out_shape=list(layer.out_shape or []) or None, macs=layer.macs if n.kind in ("MVAU", "VVAU") else 0,
            w_bits=n.p.get("wbits", 0), a_bits=n.p.get("abits", min(layer.a_bits, 32)), cycles=cyc,
            time_ms=cyc / clk * 1e3,
            parallelism=n.parallelism(), resources={"lut": res["lut"], "bram36": res["bram18"] / 2,
                                                    "dsp": res["dsp"], "uram": res["uram"]},
            note="; ".join(n.notes)))
    return rows, used
