"""PyTorch latency on a CUDA GPU (fp32, fp16, bf16), synchronised so the GPU's work is inside the timing; an
explicit "n/a (why)" row on a machine without one."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from edgecnn.devices import cuda_missing_reason
from edgecnn.measure.latency import LatencyResult, summarize, time_callable
from edgecnn.models.profile import input_channels

#: backend name -> dtype of the PyTorch CUDA rows
TORCH_CUDA = {"torch-cuda": torch.float32, "torch-cuda-fp16": torch.float16, "torch-cuda-bf16": torch.bfloat16}


def torch_cuda_latency(model: nn.Module, input_size: int, batch: int, backend: str = "torch-cuda", *,
                       repeats: int = 20, warmup: int = 5, device: str = "cuda") -> LatencyResult:
    """Inference time of ``model`` on the GPU in the backend's dtype (channels_last), or an n/a row."""
    if (reason := cuda_missing_reason()) is not None:
        return LatencyResult.not_available(backend, batch, reason)
    dtype = TORCH_CUDA[backend]
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return LatencyResult.not_available(backend, batch, f"{torch.cuda.get_device_name()} has no bf16")
    gpu = copy.deepcopy(model).eval().to(device, dtype).to(memory_format=torch.channels_last)
    x = torch.randn(batch, input_channels(model), input_size, input_size, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last)

    def step() -> None:
        gpu(x)
        torch.cuda.synchronize()

    with torch.inference_mode():
        times = time_callable(step, warmup, repeats)
    return summarize(backend, batch, 1, warmup, times)
