"""The classes of network an estimate's error is stated for (plain, depthwise, SE/swish, small, FC-heavy, MLP)."""
from __future__ import annotations

from edgecnn.hw.graph.ir import LayerGraph


def network_groups(graph: LayerGraph) -> list[str]:
    """Error classes a network belongs to (a network may be in several): the validation reports MAE per class.

    plain (convolutions without depthwise or SE/swish), depthwise, se_swish (channel attention or x*sigmoid(x)),
    small (< 1 GMAC per image), fc_heavy (fully connected layers hold most weights), mlp (no convolution).
    """
    ops = {layer.op for layer in graph.layers}
    acts = {layer.act_type for layer in graph.layers if layer.op == "act"}
    compute = graph.compute_layers()
    groups = []
    convs = [l for l in compute if l.op in ("conv", "dwconv", "gconv", "deconv")]
    if not convs:
        groups.append("mlp")
    else:
        se = "mul" in ops or bool(acts & {"sigmoid", "hardsigmoid", "hardswish", "silu", "swish"})
        if "dwconv" in ops:
            groups.append("depthwise")
        if se:
            groups.append("se_swish")
        if "dwconv" not in ops and not se:
            groups.append("plain")
        fc_weights = sum(l.weights for l in compute if l.op in ("fc", "matmul"))
        if fc_weights > 0.5 * max(graph.total_weights, 1):
            groups.append("fc_heavy")
    if graph.total_macs < 1e9 and "mlp" not in groups:
        groups.append("small")
    return groups
