"""Inference runtimes for deployable files: ONNX Runtime sessions (CPU, CUDA when present), OpenVINO and LiteRT.

Each backend gives ``predict(batch) -> logits`` so that accuracy and latency are measured through the same
runtime a deployment would use. Backends live in a registry: ``@register_backend(name)`` on a
``factory(path, threads) -> predict``, ``list_backends(pattern)`` to see them.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgecnn.data.batches import Normalization, TensorSet, iterate_batches
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.measure.latency import LatencyResult, summarize, time_callable
from edgecnn.quiet import silenced_output
from edgecnn.registry import Registry

Predictor = Callable[[np.ndarray], np.ndarray]
BACKENDS: Registry[Callable[..., Predictor]] = Registry("backend", "edgecnn.measure.runtimes.list_backends()")


def register_backend(name: str) -> Callable[[Callable[..., Predictor]], Callable[..., Predictor]]:
    """Decorator: ``factory(path, threads) -> predict`` becomes the backend ``name`` of file_predictor."""
    return BACKENDS.register(name)


def list_backends(pattern: str = "*") -> list[str]:
    """Names of the registered backends matching the fnmatch ``pattern``, sorted."""
    return BACKENDS.names(pattern)


def ort_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """An ONNX Runtime session with full graph optimizations (QDQ pairs fused into integer kernels; on the CPU after
    the exact rewrites of edgecnn.measure.ort_fusion, so that DPU-style power-of-two files fuse too)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    available = ort.get_available_providers()
    wanted = providers or ["CPUExecutionProvider"]  # GPU providers only when asked for (onnxruntime-cuda)
    missing = [p for p in wanted if p not in available]
    if missing:
        raise RuntimeUnavailable(f"ONNX Runtime here has no {missing[0]} (it has {', '.join(available)}); install "
                                 "onnxruntime-gpu on a machine with a GPU")
    try:
        model = _cpu_fused_bytes(path) if wanted == ["CPUExecutionProvider"] else None
        return ort.InferenceSession(model or str(path), sess_options=opts, providers=wanted)
    except Exception as exc:
        raise EdgeCNNError(f"ONNX Runtime cannot load {path} ({type(exc).__name__}: {str(exc)[:200]})") from None


def _cpu_fused_bytes(path: str | Path) -> bytes | None:
    """The file with edgecnn.measure.ort_fusion's exact rewrites applied, when it needs any (DPU-style QDQ files that
    ONNX Runtime's CPU kernels would otherwise run in float); None when it fuses as written."""
    import onnx

    from edgecnn.measure.ort_fusion import fuse_for_cpu

    proto = onnx.load(str(path))
    return proto.SerializeToString() if fuse_for_cpu(proto).changed else None


@register_backend("onnxruntime")
def ort_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


class RuntimeUnavailable(EdgeCNNError):
    """The runtime or execution provider is not on this machine (a benchmark shows it as an "n/a (why)" row)."""


def _ort_provider_predictor(path: str | Path, threads: int | None, provider: str) -> Predictor:
    from edgecnn.devices import cuda_missing_reason

    if (reason := cuda_missing_reason()) is not None:
        raise RuntimeUnavailable(reason)
    session = ort_session(path, threads, [provider, "CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


@register_backend("onnxruntime-cuda")
def ort_cuda_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """ONNX Runtime's CUDA execution provider (nodes it lacks fall back to the CPU)."""
    return _ort_provider_predictor(path, threads, "CUDAExecutionProvider")


@register_backend("onnxruntime-tensorrt")
def ort_tensorrt_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """ONNX Runtime's TensorRT execution provider, where it is installed."""
    return _ort_provider_predictor(path, threads, "TensorrtExecutionProvider")


@register_backend("openvino")
def openvino_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    try:
        import openvino as ov
    except ImportError:
        raise EdgeCNNError("the openvino backend needs OpenVINO: pip install 'edgecnn[openvino]'") from None
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    return lambda x: compiled(np.ascontiguousarray(x, dtype=np.float32))[0]


@register_backend("litert")
def litert_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A .tflite file in the LiteRT interpreter (XNNPACK): NCHW batches in, float logits out (NHWC models get their
    input transposed; int8 input/output tensors are (de)quantized with the file's own parameters)."""
    if Path(path).suffix != ".tflite":
        raise EdgeCNNError(f"the litert backend runs .tflite files, not {Path(path).name}")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise EdgeCNNError("the litert backend needs the LiteRT interpreter: pip install 'edgecnn[tflite]'") from None
    try:
        with silenced_output():  # LiteRT's C++ prints "Created TensorFlow Lite XNNPACK delegate" itself
            interp = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EdgeCNNError(f"LiteRT cannot load {path} ({str(exc)[:200]})") from None
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    state: dict[str, int | None] = {"batch": None}

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        shape = list(inp["shape"])
        if x.ndim == 4 and shape[-1] == x.shape[1] and shape[1] != x.shape[1]:
            x = np.transpose(x, (0, 2, 3, 1))  # the file is NHWC
        if state["batch"] != len(x):
            interp.resize_tensor_input(inp["index"], [len(x), *x.shape[1:]])
            interp.allocate_tensors()
            state["batch"] = len(x)
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.rint(x / scale) + zp, info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], np.ascontiguousarray(x))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y

    return predict


def file_predictor(path: str | Path, backend: str = "onnxruntime", threads: int | None = None) -> Predictor:
    """``predict(batch) -> logits`` for a deployable file on the registered ``backend``."""
    if backend not in BACKENDS:
        names = BACKENDS.names()
        raise EdgeCNNError(f"unknown backend '{backend}'{did_you_mean(backend, names)}; "
                           f"choose one of {', '.join(names)}")
    return BACKENDS.get(backend)(path, threads)


def predict_file(predict: Predictor, data: TensorSet, norm: Normalization, batch_size: int = 256) -> torch.Tensor:
    """Logits of a deployable model over a tensor set (same pre-processing as the PyTorch path)."""
    outs = [predict(x.numpy()) for x, _ in iterate_batches(data, batch_size, norm)]
    return torch.from_numpy(np.concatenate(outs)).float() if outs else torch.zeros(0)


def file_latency(predict: Predictor, input_shape: tuple[int, ...], batch: int, backend: str, threads: int,
                 repeats: int = 20, warmup: int = 5) -> LatencyResult:
    x = np.random.default_rng(0).standard_normal((batch, *input_shape[1:])).astype(np.float32)
    return summarize(backend, batch, threads, warmup, time_callable(lambda: predict(x), warmup, repeats))
