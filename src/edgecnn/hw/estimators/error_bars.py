"""The validation error an estimate quotes: the held-out error of its class of network on published figures.

The figures come from benchmarks/claims/estimators.py (validation_summary.json beside this module); an estimate of a
depthwise network on a DPU says "depthwise: held-out MAE x% over n figures", so a user knows how far to trust it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgecnn.hw.graph import network_groups
from edgecnn.hw.graph.ir import LayerGraph

SUMMARY = Path(__file__).with_name("validation_summary.json")
CLASS_NAMES = {"plain": "plain CNN", "depthwise": "depthwise CNN", "small": "small net (< 1 GMAC)",
               "se_swish": "SE/swish net", "fc_heavy": "FC-heavy net", "mlp": "MLP"}


@lru_cache(maxsize=1)
def _summary() -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads(SUMMARY.read_text())
        return summary
    except (OSError, ValueError):
        return {}


def validation_note(kind: str, graph: LayerGraph) -> str | None:
    """One line with the validation error of ``graph``'s classes for estimator ``kind`` (dpu or dataflow)."""
    summary = _summary().get(kind)
    if not summary:
        return None
    groups = network_groups(graph)
    if kind == "dpu":
        classes = summary.get("classes", {})
        parts = [f"{CLASS_NAMES.get(g, g)}: held-out MAE {classes[g]['mae']:.0%} (worst {classes[g]['worst']:+.0%}, "
                 f"{classes[g]['n']} figures)" for g in groups if g in classes]
        if not parts and "all" in classes:
            parts = [f"all networks: held-out MAE {classes['all']['mae']:.0%}"]
        return "validation on published DPU measurements — " + "; ".join(parts) if parts else None
    key = "fps_mae_mlp" if "mlp" in groups else "fps_mae_cnn"
    mae, lut = summary.get(key), summary.get("lut_mae")
    if mae is None:
        return None
    what = "MLP" if "mlp" in groups else "dataflow CNN"
    text = f"validation on published FINN builds — {what}: FPS MAE {mae:.0%}"
    return text + (f"; LUT MAE {lut:.0%} over {summary.get('lut_designs')} builds" if lut is not None else "")
