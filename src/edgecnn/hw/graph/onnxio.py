"""Reading ONNX files for the hardware models: load and check a file, fix the batch, infer the tensor shapes.

Also the small node helpers (attributes, dtype bit widths, convolution output size) the LayerGraph reader uses.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.graph.quant_ops import QONNX_DOMAINS, SHAPE_PRESERVING

#: Bits of the ONNX TensorProto data types (by enum value); 32 for the ones not listed.
DTYPE_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 1, 10: 16, 11: 64, 12: 32, 13: 64, 16: 16, 21: 4, 22: 4}


def read_onnx_file(path: str | Path, error: type[HardwareModelError] = HardwareModelError, *,
                   expect: str = "the path of an .onnx file",
                   fix: str = " — pass a valid .onnx file (re-export it with torch.onnx.export)"):
    """The ModelProto in ``path``; ``error`` names a missing file (pass ``expect``) or an unreadable one."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise error(f"model file '{path}' does not exist — pass {expect}")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise error(f"'{path}' is not a readable ONNX model ({type(exc).__name__}){fix}") from None


def load_proto(path_or_model: Any):
    """(ModelProto, source) of a path or a ModelProto; refuses a missing, unreadable or empty model."""
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, "model"
    path = Path(path_or_model)
    proto = read_onnx_file(path)
    if not proto.graph.node:
        raise HardwareModelError(f"'{path}' holds an empty ONNX graph (no nodes) — "
                                 "pass a model exported with its layers")
    return proto, str(path)


def fix_inputs(proto, batch: int) -> dict[str, tuple[int, ...]]:
    """Set the batch dim of every graph input to ``batch``; refuse other dynamic dims with a clear message."""
    inits = {i.name for i in proto.graph.initializer}
    shapes = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        if not tt.HasField("shape"):
            raise HardwareModelError(f"input '{inp.name}' has no shape — export the model with a fixed input size")
        dims = []
        for axis, dim in enumerate(tt.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                value = dim.dim_value
                if axis == 0 and value != batch:
                    value = batch
            elif axis == 0:
                value = batch
            else:
                label = dim.dim_param or "?"
                raise HardwareModelError(f"input '{inp.name}' has a dynamic dimension '{label}' on axis {axis} — "
                                         "export the model with a fixed image size (only the batch may be dynamic)")
            dim.Clear()
            dim.dim_value = value
            dims.append(value)
        shapes[inp.name] = tuple(dims)
    if not shapes:
        raise HardwareModelError("the ONNX graph has no data input — pass a model that takes an image tensor")
    return shapes


def shape_inference_copy(proto):
    """A copy where QONNX quantizers are Identity (ONNX shape inference does not know them), shapes inferred."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {i.name for i in model.graph.initializer}
    keep_inputs = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep_inputs)
    del model.graph.value_info[:]
    for out in model.graph.output:  # outputs may carry a stale dynamic batch: let inference redo them
        out.type.tensor_type.ClearField("shape")
    nodes = []
    for node in model.graph.node:
        if node.domain in QONNX_DOMAINS and node.op_type in SHAPE_PRESERVING:
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return model


def tensor_info(model) -> tuple[dict[str, tuple[int, ...] | None], dict[str, int]]:
    """(shapes, ONNX dtypes) of every named tensor; a shape with an unknown or dynamic dim is None."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    dtypes: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            known = [d for d in dims if d is not None and d > 0]
            shapes[vi.name] = tuple(known) if len(known) == len(dims) else None
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    return shapes, dtypes


def node_attrs(node) -> dict[str, Any]:
    """A node's attributes as Python values (bytes decoded to str)."""
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def conv_out(size: int, k: int, s: int, p0: int, p1: int, d: int, ceil: bool = False) -> int:
    """Output size of a convolution or pool along one axis (kernel k, stride s, pads p0/p1, dilation d)."""
    span = d * (k - 1) + 1
    q = (size + p0 + p1 - span) / s
    return int(math.ceil(q) if ceil else math.floor(q)) + 1


def bits_from_dtype(dtype: int | None) -> int:
    """Bits of an ONNX data type (None counts as float32)."""
    return DTYPE_BITS.get(int(dtype or 1), 32)
