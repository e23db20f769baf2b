"""The LayerGraph of a PyTorch module, through an in-memory ONNX export: how the search prices an untrained
candidate and how the validation rebuilds published networks."""
from __future__ import annotations

import io
import warnings
from typing import Any

from edgecnn.hw.graph.ir import LayerGraph
from edgecnn.hw.graph.load import load_graph
from edgecnn.models.profile import example_input


def module_graph(model: Any, input_hw: tuple[int, int] | list[int], name: str = "model") -> LayerGraph:
    """The LayerGraph of a PyTorch module, through an in-memory ONNX export (fast: no file, no checks)."""
    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # the TorchScript exporter writes to a file object too; torch's annotation names paths only
        torch.onnx.export(model.eval(), (example_input(model, tuple(input_hw)),), buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    graph = load_graph(onnx.load_from_string(buf.getvalue()))
    graph.name = name
    return graph
