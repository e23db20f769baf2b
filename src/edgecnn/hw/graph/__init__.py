"""Graph reading: any ONNX / QONNX file or PyTorch module as a LayerGraph (the estimators' input).

ir (Layer, LayerGraph), onnxio (protobuf helpers), quant_ops (QONNX / FINN custom ops), reader (one ONNX node ->
layers), load (load_graph: folding, fusion), module (module_graph: a torch module through an in-memory export),
classes (network_groups: the classes an estimate's error is stated for).
"""
from __future__ import annotations

from edgecnn.hw.graph.classes import network_groups
from edgecnn.hw.graph.ir import Layer, LayerGraph
from edgecnn.hw.graph.load import load_graph
from edgecnn.hw.graph.module import module_graph

__all__ = ["Layer", "LayerGraph", "load_graph", "module_graph", "network_groups"]
