"""Latency and throughput on real runtimes: median and p90 of repeated timed runs after warm-up.

Eager PyTorch is timed here; deployable files (ONNX Runtime, OpenVINO) are timed with the same helpers through
the backend registry of measure.runtimes. Thread count is set explicitly and recorded, since it dominates CPU
numbers.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from edgecnn.models.profile import input_channels


@dataclass
class LatencyResult:
    backend: str
    batch: int
    threads: int
    warmup: int
    repeats: int
    median_ms: float
    p90_ms: float
    images_per_s: float  # batch / median time
    unavailable: str | None = None  # why this runtime could not be timed here ("n/a" row), else None
    layout: str | None = None  # eager PyTorch: the memory layout timed (contiguous / channels_last)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def not_available(cls, backend: str, batch: int, why: str) -> LatencyResult:
        """An explicit "n/a (why)" row for a runtime this machine lacks (no GPU, no provider)."""
        nan = float("nan")
        return cls(backend, batch, 0, 0, 0, nan, nan, nan, why)


def time_callable(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def summarize(backend: str, batch: int, threads: int, warmup: int, times: list[float]) -> LatencyResult:
    med = statistics.median(times)
    p90 = float(np.percentile(times, 90))
    return LatencyResult(backend, batch, threads, warmup, len(times), med * 1e3, p90 * 1e3, batch / med)


def torch_latency(model: nn.Module, input_size: int, batch: int, *, repeats: int = 20, warmup: int = 5,
                  threads: int | None = None, channels_last: bool = True, dtype: torch.dtype = torch.float32,
                  in_channels: int | None = None) -> LatencyResult:
    """Eager PyTorch inference time of ``model`` on random inputs of (batch, channels, size, size), the model's
    own channels unless ``in_channels`` says otherwise."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.eval()
        x = torch.randn(batch, in_channels or input_channels(model), input_size, input_size, dtype=dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            times = time_callable(lambda: model(x), warmup, repeats)
        result = summarize("torch", batch, torch.get_num_threads(), warmup, times)
        result.layout = "channels_last" if channels_last else "contiguous"
        return result
    finally:
        torch.set_num_threads(previous)


#: Memory layouts of eager PyTorch inference: the same fp32 arithmetic, different kernels and speed.
LAYOUTS = {"contiguous": False, "channels_last": True}


@dataclass
class LayoutTiming:
    """The fastest layout's timing, which layout it was, and every layout's median in milliseconds."""

    result: LatencyResult
    layout: str
    median_ms: dict[str, float]


def torch_latency_layouts(model: nn.Module, input_size: int, batch: int, *, layout: str = "auto",
                          timer: Callable[..., LatencyResult] = torch_latency, **kwargs) -> LayoutTiming:
    """Time ``model`` in every layout ``layout`` leaves open (auto: contiguous and channels_last) and keep the fastest.

    Layout changes speed, not the format: each timing runs the variant's own dtype, so the choice never changes a
    reported accuracy (which is computed once, in a fixed layout). ``timer`` is torch_latency; a test replaces it."""
    names = list(LAYOUTS) if layout == "auto" else [layout]
    timings = {name: timer(model, input_size, batch, channels_last=LAYOUTS[name], **kwargs) for name in names}
    best = min(names, key=lambda name: timings[name].median_ms)
    return LayoutTiming(timings[best], best, {name: round(t.median_ms, 4) for name, t in timings.items()})
