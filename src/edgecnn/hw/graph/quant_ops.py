"""What the ONNX reader needs to know about QONNX / FINN files beyond standard ONNX.

QONNX quantizers (Quant, BipolarQuant, Trunc) and FINN's MultiThreshold live in custom domains: ONNX shape
inference does not know them, and their bit widths come from constant inputs or FINN datatype names.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general", "finn")
#: Custom ops that keep their input's shape; shape inference sees them as Identity.
SHAPE_PRESERVING = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold", "IntQuant", "FloatQuant")


def finn_dtype_bits(name: str) -> int:
    """Bits of a FINN datatype name ('UINT4' -> 4, 'BIPOLAR' -> 1, 'TERNARY' -> 2; 32 when it names none)."""
    name = name.upper()
    if name in ("BIPOLAR", "BINARY", "TERNARY"):
        return 1 if name != "TERNARY" else 2
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 32


def quantizer_bits(node: Any, const: Callable[[str], np.ndarray | None], bits: int) -> int:
    """Output bit width of a Quant / BipolarQuant / Trunc node (``bits`` where the bit width is no constant)."""
    if node.op_type == "BipolarQuant":
        return 1
    # Trunc v1: (x, scale, zero_pt, in_bitwidth, out_bitwidth); v2 (qonnx >= 0.4, Brevitas' TruncAvgPool2d export):
    # (x, scale, zero_pt, in_bitwidth, out_scale, out_bitwidth)
    index = 3 if node.op_type == "Quant" else len(node.input) - 1
    bw = const(node.input[index]) if len(node.input) > index else None
    return int(np.asarray(bw).reshape(-1)[0]) if bw is not None else bits
