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
