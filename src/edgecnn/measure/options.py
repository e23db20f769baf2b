"""Options of the measurements (the ``evaluate:`` section of an experiment)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgecnn.schema import StrictModel


class EvaluateConfig(StrictModel):
    latency_batches: list[int] = Field(default_factory=lambda: [1, 64])
    latency_repeats: int = Field(20, ge=3)
    threads: int | None = Field(None, ge=1)
    backends: list[Literal["torch", "onnxruntime", "openvino", "litert"]] = Field(default_factory=lambda: ["torch",
                                                                                                 "onnxruntime"])
    # eager PyTorch latency in the fastest memory layout (auto: both timed, the faster kept and named in the row), or
    # in the one given; accuracy does not depend on it
    layout: Literal["auto", "channels_last", "contiguous"] = "auto"
