"""Options of the measurements (the ``evaluate:`` section of an experiment)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from edgecnn.schema import StrictModel

Backend = Literal["torch", "onnxruntime", "openvino", "litert"]


def _default_backends() -> list[Backend]:
    return ["torch", "onnxruntime"]


class EvaluateConfig(StrictModel):
    latency_batches: list[PositiveInt] = Field(default_factory=lambda: [1, 64], description="Batch sizes at which "
                                               "latency and throughput are measured.")
    latency_repeats: int = Field(20, ge=3, description="Timed repetitions per batch size (the median and p90 are "
                                 "reported).")
    threads: int | None = Field(None, ge=1, description="Threads of the runtimes while measuring; null: PyTorch's "
                                "default (the machine's cores).")
    backends: list[Backend] = Field(default_factory=_default_backends, description="Runtimes timed.")
    # eager PyTorch latency in the fastest memory layout (auto: both timed, the faster kept and named in the row), or
    # in the one given; accuracy does not depend on it
    layout: Literal["auto", "channels_last", "contiguous"] = Field("auto", description="Memory layout of the eager "
                                                                   "PyTorch latency: auto times both and reports "
                                                                   "the faster, naming it in the row.")
