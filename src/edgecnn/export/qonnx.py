"""QONNX export of Brevitas low-bit models (``*.qonnx.onnx``) and execution with qonnx's reference executor.

The file is Brevitas' QONNX export (``Quant`` / ``BipolarQuant`` nodes in the ``qonnx.custom_op.general`` domain,
weights stored as float tensors already on their quantization grid) after qonnx's ``cleanup_model`` (shape
inference, constant folding that keeps the quantizers, unique node and tensor names), the form FINN's build
flow and ``qonnx.core.onnx_exec.execute_onnx`` take. The batch size is fixed at export (1 by default);
``run_qonnx`` runs larger batches one image at a time.

Cleanup renames nodes (``Conv_0``, ``Gemm_0``, ...); the module name of each Conv/Gemm/MatMul node is kept in
the ``edgecnn.qonnx_layers`` metadata entry (JSON {node name: module name}) and in the node's doc_string.
"""
from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.models.profile import example_input

log = logging.getLogger(__name__)
SUFFIX = ".qonnx.onnx"
LAYERS_KEY = "edgecnn.qonnx_layers"
_WEIGHTED = ("Conv", "Gemm", "MatMul")


def qonnx_path(path: str | Path) -> Path:
    """``path`` with the ``.qonnx.onnx`` suffix (``model.onnx`` -> ``model.qonnx.onnx``, ``m`` -> ``m.qonnx.onnx``)."""
    path = Path(path)
    if path.name.endswith(SUFFIX):
        return path
    name = path.name.removesuffix(".onnx")
    return path.with_name(name + SUFFIX)


def _module_of(node_name: str) -> str:
    """Module name from a TorchScript-exporter node name: each scope level is named relative to the previous
    level ('/features/features.1/features.1.2/conv1/conv1.0/Conv' -> 'features.1.2.conv1.0')."""
    segments: list[str] = []
    for part in [p for p in node_name.split("/") if p][:-1]:
        if segments and part.startswith(segments[-1] + "."):
            segments[-1] = part
        else:
            segments.append(part)
    return ".".join(segments)


@contextmanager
def _onnxoptimizer_optional():
    """Brevitas refuses to export without ``onnxoptimizer``, which it only uses for two cleanup passes
    (constants to initializers, unused initializers) that qonnx's ``cleanup_model`` does as well. Without it,
    let the export run and skip those passes."""
    from brevitas.export.onnx import manager

    if manager.opt is not None and manager.onnx is not None:
        yield
        return
    import onnx

    class _NoOptimizer:
        @staticmethod
        def optimize(model, passes=None):
            return model

    saved = manager.onnx, manager.opt
    manager.onnx, manager.opt = onnx, manager.opt or _NoOptimizer
    try:
        yield
    finally:
        manager.onnx, manager.opt = saved


def export_qonnx(model: nn.Module, path: str | Path, input_size: int | tuple[int, ...], *,
                 meta: dict[str, Any] | None = None, batch: int = 1) -> Path:
    """Export a Brevitas model to ``path`` (suffix forced to ``.qonnx.onnx``), cleaned up for qonnx/FINN."""
    try:
        from brevitas.export import export_qonnx as brevitas_export_qonnx
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model
    except ImportError as exc:
        raise EdgeCNNError(f"QONNX export needs brevitas and qonnx ({exc.name} is missing); "
                           "pip install 'edgecnn[lowbit]' (brevitas, qonnx)") from None
    import onnx
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    if not any(isinstance(m, QuantWeightBiasInputOutputLayer) for m in model.modules()):
        raise EdgeCNNError("export_qonnx needs a Brevitas model; convert the float model with "
                           "edgecnn.compress.lowbit.to_lowbit first")
    path = qonnx_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.eval()
    example = example_input(model, input_size, batch).to(next((p.device for p in model.parameters()), "cpu"))
    raw = path.with_name(path.name[: -len(SUFFIX)] + ".brevitas.onnx")
    try:
        with warnings.catch_warnings(), _onnxoptimizer_optional():
            warnings.simplefilter("ignore")
            try:  # the TorchScript exporter keeps module scopes in node names and is what FINN's docs use
                brevitas_export_qonnx(model, args=example, export_path=str(raw), dynamo=False, opset_version=13)
            except Exception as exc:
                log.info("TorchScript QONNX export failed (%s: %s); trying the dynamo exporter",
                         type(exc).__name__, exc)
                brevitas_export_qonnx(model, args=example, export_path=str(raw), dynamo=True, verbose=False)
        proto = onnx.load(str(raw))
    finally:
        model.train(was_training)
        raw.unlink(missing_ok=True)
    modules = [_module_of(n.name) for n in proto.graph.node if n.op_type in _WEIGHTED]
    known = dict(model.named_modules())
    plan = getattr(model, "lowbit_plan", None)
    if plan is not None and not all(m and m in known for m in modules) and len(modules) == len(plan.layers):
        modules = [layer.name for layer in plan.layers]  # forward order = topological order of the export
    modules = [m if m in known else "" for m in modules]
    wrapper = cleanup_model(ModelWrapper(proto))
    names: dict[str, str] = {}
    weighted = [n for n in wrapper.graph.node if n.op_type in _WEIGHTED]
    if len(weighted) == len(modules):
        for node, module in zip(weighted, modules):
            if module:
                names[node.name] = module
                node.doc_string = module
    out = wrapper.model
    from edgecnn.export.onnx import set_metadata

    if meta is not None:
        set_metadata(out, {**meta, "input_size": input_size if isinstance(input_size, int) else list(input_size),
                           "format": "qonnx"})
    for prop in list(out.metadata_props):
        if prop.key == LAYERS_KEY:
            out.metadata_props.remove(prop)
    entry = out.metadata_props.add()
    entry.key, entry.value = LAYERS_KEY, json.dumps(names)
    onnx.save(out, str(path))
    return path


def qonnx_layer_names(path: str | Path) -> dict[str, str]:
    """{ONNX node name: module name} stored by ``export_qonnx``."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == LAYERS_KEY:
            return json.loads(prop.value)
    return {}


def run_qonnx(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Logits of the QONNX file for inputs ``x`` (N, ...) with ``qonnx.core.onnx_exec.execute_onnx``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    inp, out = model.graph.input[0].name, model.graph.output[0].name
    shape = tuple(model.get_tensor_shape(inp))
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != shape[1:]:
        raise EdgeCNNError(f"input of shape {x.shape} does not match the QONNX model's {shape}")
    step = shape[0]
    if len(x) % step:
        raise EdgeCNNError(f"batch {len(x)} is not a multiple of the exported batch {step}; re-export with batch=1")
    outputs = [execute_onnx(model, {inp: x[i:i + step]})[out] for i in range(0, len(x), step)]
    return np.concatenate(outputs, axis=0)
