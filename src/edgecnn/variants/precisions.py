"""The precision registry: each precision is one registered handler that builds its deployable file.

A handler says where its file runs (``runtime``), whether it starts from the fp32 ONNX export, which options
section changes its file and the version of its recipe (both part of the pipeline's cache key). The config, the
pipeline, the CLI and the report ask this registry; adding a precision (fp8, int4, power-of-two INT8) is one
``@register_precision`` function plus its test.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

import torch
from torch import nn

from edgecnn.compress.options import LowbitConfig, QuantizeConfig
from edgecnn.compress.qat import QAT_RECIPE_VERSION
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.registry import Registry
from edgecnn.results import CheckpointMeta
from edgecnn.variants.lowbit_sweep import LOWBIT_RECIPE_VERSION

log = logging.getLogger(__name__)

Runtime = Literal["torch", "onnxruntime", "qonnx", "litert"]


@dataclass(frozen=True)
class PrecisionOptions:
    """The options a handler may read; each handler declares the one section its file depends on."""

    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    lowbit: LowbitConfig = field(default_factory=LowbitConfig)
    opset: int = 18
    seed: int = 0
    show_progress: bool = False
    device: str = "auto"  # where quantization-aware training runs (train.device)


@dataclass
class BuildJob:
    """One precision variant to build: the float model and its meta, data for calibration/QAT, where to write."""

    precision: str  # the name as asked (a registered name or a member of a family, e.g. w4a4)
    model: nn.Module
    meta: CheckpointMeta
    data: PreparedData
    out_dir: Path
    options: PrecisionOptions = field(default_factory=PrecisionOptions)
    fp32_onnx: Path | None = None  # the fp32 export, for handlers with needs_fp32_onnx

    @property
    def fp32_file(self) -> Path:
        """The fp32 export (every handler registered with needs_fp32_onnx is given one)."""
        if self.fp32_onnx is None:
            raise EdgeCNNError(f"precision {self.precision} needs the fp32 ONNX export; the job has none")
        return self.fp32_onnx
    start: nn.Module | None = None  # low-bit: warm-start weights (the previous variant's)


@dataclass
class Built:
    """What a handler made: the deployable file, and the measurements it took itself (low-bit QAT measures its own
    model and QONNX file; the other precisions are measured by variants/measuring.py)."""

    artefact: Path
    metrics: dict[str, Any] | None = None


BuildFn = Callable[[BuildJob], Built]


@dataclass(frozen=True)
class Precision:
    """A registered precision."""

    name: str
    build: BuildFn
    runtime: Runtime  # where its accuracy is measured
    needs_fp32_onnx: bool = False
    recipe_version: int = 1
    options_key: Literal["quantize", "lowbit"] | None = None  # the options section that changes its file
    dtype: torch.dtype | None = None  # precisions that are a cast of the PyTorch model
    latency_backends: tuple[str, ...] = ("torch", "onnxruntime", "openvino")  # runtimes that can time its file
    hw_kinds: tuple[str, ...] = ()  # kinds of hardware target that can run its file (dpu, dataflow, systolic, cpu)
    family: Callable[[str], bool] | None = None  # parametric names this handler serves (e.g. wXaY)
    description: str = ""

    def recipe(self, options: PrecisionOptions) -> dict[str, Any]:
        """The part of the cache key this precision adds: its recipe version and its options section, without the
        options that only another precision reads (fields marked ``only_for``), so they never rebuild this one."""
        if not self.options_key:
            return {"recipe": self.recipe_version, "options": None}
        config = getattr(options, self.options_key)
        foreign = {name for name, f in type(config).model_fields.items()
                   if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("only_for") not in
                   (None, self.name)}
        return {"recipe": self.recipe_version, "options": config.model_dump(exclude=foreign)}


PRECISIONS: Registry[Precision] = Registry("precision", "edgecnn quantize --help")


def register_precision(name: str, *, runtime: Runtime, **kwargs: Any) -> Callable[[BuildFn], BuildFn]:
    """Register ``fn(job) -> Built`` as the builder of precision ``name`` (see Precision for the keywords)."""

    def decorator(fn: BuildFn) -> BuildFn:
        PRECISIONS.register(name)(Precision(name, fn, runtime, description=(fn.__doc__ or "").strip(), **kwargs))
        return fn

    return decorator


def get_precision(name: str) -> Precision:
    """The handler of ``name``: a registered name, or a member of a registered family (wXaY, binary, ...)."""
    if name in PRECISIONS:
        return PRECISIONS.get(name)
    for entry in (PRECISIONS.get(n) for n in PRECISIONS.names()):
        if entry.family is not None and entry.family(name):
            return entry
    names = [n for n in PRECISIONS.names() if PRECISIONS.get(n).family is None]
    raise EdgeCNNError(f"unknown precision '{name}'{did_you_mean(name, names)}; choose one of {', '.join(names)} "
                       "or a low-bit wXaY (X, Y in 1..8), binary, ternary")


def precision_for(name: str, lowbit: LowbitConfig | None = None) -> Precision:
    """The handler of ``name``, where a low-bit spec named in ``lowbit.specs`` (e.g. ``w4a4-custom``) is low-bit."""
    return get_precision("wXaY") if lowbit is not None and name in lowbit.specs else get_precision(name)


def check_precision(name: str) -> str:
    """``name`` if it is a known precision (a family member's own syntax error is raised as it is), else an error."""
    if name not in PRECISIONS and str(name).lower().startswith(("w", "binary", "ternary")):
        from edgecnn.compress.lowbit import parse_precision

        parse_precision(name)  # the low-bit syntax error (range, form) says more than "unknown"
    get_precision(name)
    return name


def list_precisions(pattern: str = "*") -> list[str]:
    """Registered precision names (families are listed by their pattern, e.g. wXaY)."""
    return PRECISIONS.names(pattern)


# ------------------------------------------------------------------------------------------------ handlers


def _cast(job: BuildJob, precision: str) -> Built:
    from edgecnn.compress.quantize import FLOAT_DTYPES, cast_model
    from edgecnn.train.checkpoint import save_checkpoint

    path = job.out_dir / f"model-{precision}.safetensors"
    meta = job.meta.model_only(precision=precision, dtype=str(FLOAT_DTYPES[precision]))
    return Built(save_checkpoint(cast_model(job.model, precision), path, meta))


@register_precision("fp32", runtime="torch", dtype=torch.float32, hw_kinds=("cpu",))
def fp32(job: BuildJob) -> Built:
    """ONNX fp32 file (the reference; also checked in ONNX Runtime)."""
    from edgecnn.export.onnx import export_onnx

    return Built(export_onnx(job.model, job.out_dir / "model.onnx", job.meta.input_size,
                             job.meta.model_only(precision="fp32"), opset=job.options.opset))


@register_precision("fp64", runtime="torch", dtype=torch.float64, latency_backends=("torch",))
def fp64(job: BuildJob) -> Built:
    """safetensors checkpoint in float64, run by PyTorch."""
    return _cast(job, "fp64")


@register_precision("bf16", runtime="torch", dtype=torch.bfloat16, latency_backends=("torch",))
def bf16(job: BuildJob) -> Built:
    """safetensors checkpoint in bfloat16, run by PyTorch."""
    return _cast(job, "bf16")


@register_precision("fp16", runtime="torch", needs_fp32_onnx=True, dtype=torch.float16,
                    latency_backends=("onnxruntime", "openvino"), hw_kinds=("cpu",))
def fp16(job: BuildJob) -> Built:
    """ONNX fp16 weights with fp32 input/output; accuracy of the PyTorch fp16 cast."""
    from edgecnn.export.onnx import convert_fp16

    return Built(convert_fp16(job.fp32_file, job.out_dir / "model-fp16.onnx"))


@register_precision("int8-ptq", runtime="onnxruntime", needs_fp32_onnx=True, options_key="quantize",
                    latency_backends=("onnxruntime", "openvino"), hw_kinds=("dpu", "systolic", "cpu"))
def int8_ptq(job: BuildJob) -> Built:
    """ONNX QDQ INT8, static post-training quantization with ONNX Runtime (calibrated on train images)."""
    from edgecnn.compress.quantize import calibration_images, quantize_int8_ptq

    q = job.options.quantize
    return Built(quantize_int8_ptq(job.fp32_file, job.out_dir / "model-int8-ptq.onnx",
                                   calibration_images(job.data, q.calib, job.options.seed), method=q.method,
                                   per_channel=q.per_channel, symmetric_activations=q.symmetric, exclude=q.exclude))


@register_precision("int8-pow2", runtime="onnxruntime", needs_fp32_onnx=True, options_key="quantize",
                    latency_backends=("onnxruntime", "openvino"), hw_kinds=("dpu", "systolic", "cpu"))
def int8_pow2(job: BuildJob) -> Built:
    """ONNX QDQ INT8 with power-of-two scales (the DPU's arithmetic), AMD Quark XINT8 calibrated on train images."""
    from edgecnn.compress.pow2 import quantize_int8_pow2
    from edgecnn.compress.quantize import calibration_images

    q = job.options.quantize
    calib = calibration_images(job.data, q.calib, job.options.seed)
    path = job.out_dir / "model-int8-pow2.onnx"
    first = "none" if q.pow2_refine == "auto" else q.pow2_refine
    built = quantize_int8_pow2(job.fp32_file, path, calib, refine=first, iterations=q.pow2_iterations,
                               exclude=q.exclude, cle=q.pow2_cle, drop_ratio=q.pow2_drop_ratio)
    if q.pow2_refine == "auto":  # decided on the validation split, never the test split
        refine, decision = _auto_refinement(job, built, q.pow2_auto_drop, "onnxruntime")
        built = quantize_int8_pow2(job.fp32_file, path, calib, refine="adaround" if refine else "none",
                                   iterations=q.pow2_iterations, exclude=q.exclude, auto=decision,
                                   cle=q.pow2_cle, drop_ratio=q.pow2_drop_ratio) \
            if refine else _with_decision(built, decision)
    return Built(built)


def _auto_refinement(job: BuildJob, built: Path, threshold: float, backend: str) -> tuple[bool, dict[str, Any]]:
    """Whether the plain file (run on ``backend``) loses more than ``threshold`` validation points against the float
    model, so that AdaRound should follow; and the decision to record in the file's metadata."""
    from edgecnn.compress.pow2 import validation_drop_points

    drop = validation_drop_points(job.model, built, job.data, backend)
    refine = drop is not None and drop > threshold
    return refine, {"validation_drop_points": drop, "threshold_points": threshold,
                    "refined": "adaround" if refine else "none"}


def _with_decision(path: Path, decision: dict[str, Any]) -> Path:
    """Record the automatic refinement decision in the file's metadata."""
    import onnx

    from edgecnn.export.onnx import read_metadata, set_metadata

    meta = read_metadata(path)
    proto = onnx.load(str(path))
    set_metadata(proto, {**meta, "calibration": {**meta.get("calibration", {}), "auto": decision}})
    onnx.save(proto, str(path))
    return path


@register_precision("tflite-int8", runtime="litert", needs_fp32_onnx=True, options_key="quantize",
                    latency_backends=("litert",), recipe_version=3)  # 3: AdaRound on TensorFlow's grid (auto)
def tflite_int8(job: BuildJob) -> Built:
    """Fully-integer LiteRT (TFLite) INT8 file, TensorFlow's full-integer PTQ on train images (after AdaRound on its
    grid when ``quantize.tflite_refine`` asks for it or, with auto, the validation drop does), run by LiteRT."""
    from edgecnn.compress.quantize import calibration_images
    from edgecnn.export.onnx import read_metadata
    from edgecnn.export.tflite import export_tflite_int8

    q = job.options.quantize
    calib = calibration_images(job.data, q.calib, job.options.seed)
    meta = read_metadata(job.fp32_file)
    path = job.out_dir / "model-tflite-int8.tflite"
    if q.tflite_refine == "adaround":
        return Built(_tflite_adaround(job, path, calib, meta, None))
    built = export_tflite_int8(job.fp32_file, path, calib, meta)
    if q.tflite_refine == "auto":  # decided on the validation split, never the test split
        refine, decision = _auto_refinement(job, built, q.tflite_auto_drop, "litert")
        if refine and importlib.util.find_spec("quark") is None:  # auto never fails for want of the [pow2] extra
            log.warning("tflite-int8 loses %.2f validation points; AdaRound would need AMD Quark: "
                        "pip install 'edgecnn[pow2]'", decision["validation_drop_points"])
            refine, decision["refined"] = False, "none (AMD Quark not installed)"
        if refine:
            return Built(_tflite_adaround(job, path, calib, meta, decision))
        _record_tflite_decision(path, decision)
    return Built(built)


def _tflite_adaround(job: BuildJob, path: Path, calib: np.ndarray, meta: dict[str, Any],
                     decision: dict[str, Any] | None) -> Path:
    """The LiteRT file converted from weights AdaRound-rounded on TensorFlow's grid (compress.tflite_refine)."""
    from edgecnn.compress.tflite_refine import adaround_for_tflite
    from edgecnn.export.tflite import export_tflite_int8

    q = job.options.quantize
    rounded = job.out_dir / "model-tflite-rounded.onnx"
    done = adaround_for_tflite(job.fp32_file, rounded, calib, q.tflite_iterations, q.tflite_drop_ratio)
    try:
        return export_tflite_int8(rounded, path, calib, meta, refinement={**done, **({"auto": decision} if decision
                                                                                   else {})})
    finally:
        rounded.unlink(missing_ok=True)


def _record_tflite_decision(path: Path, decision: dict[str, Any]) -> None:
    """Record the automatic refinement decision in the .tflite file's metadata companion."""
    import json

    from edgecnn.export.tflite import read_tflite_metadata, tflite_meta_path

    meta = read_tflite_metadata(path)
    meta["calibration"] = {**meta.get("calibration", {}), "auto": decision}
    tflite_meta_path(path).write_text(json.dumps(meta, indent=1))


@register_precision("int8-qat", runtime="onnxruntime", options_key="quantize", recipe_version=QAT_RECIPE_VERSION,
                    latency_backends=("onnxruntime", "openvino"), hw_kinds=("dpu", "systolic", "cpu"))
def int8_qat(job: BuildJob) -> Built:
    """ONNX QDQ INT8 after quantization-aware training (torchao PT2E)."""
    from edgecnn.compress.qat import export_qat_onnx, qat_int8
    from edgecnn.devices import resolve_device

    q = job.options.quantize
    converted = qat_int8(copy.deepcopy(job.model), job.data, epochs=q.qat_epochs, lr=q.qat_lr,
                         batch_size=q.qat_batch_size, exclude=q.exclude, seed=job.options.seed,
                         device=resolve_device(job.options.device))
    return Built(export_qat_onnx(converted, job.out_dir / "model-int8-qat.onnx", job.meta.input_size,
                                 job.meta.model_only(qat=q.model_dump()), opset=job.options.opset))


def _is_lowbit(name: str) -> bool:
    from edgecnn.compress.lowbit import is_lowbit_precision

    return is_lowbit_precision(name)


@register_precision("wXaY", runtime="qonnx", options_key="lowbit", family=_is_lowbit,
                    recipe_version=LOWBIT_RECIPE_VERSION, latency_backends=(), hw_kinds=("dataflow",))
def lowbit(job: BuildJob) -> Built:
    """Low-bit QAT with Brevitas (w1a1..w8a8, binary, ternary, or a spec named under lowbit.specs), exported to QONNX
    and checked with qonnx's executor; also sparsity, packed size and dataflow estimates."""
    from edgecnn.variants.lowbit_sweep import check_available, run_variant

    check_available()
    metrics, _ = run_variant(job.model, job.meta, job.data, job.options.lowbit, job.precision, job.out_dir,
                             start=job.start, seed=job.options.seed, show_progress=job.options.show_progress)
    return Built(job.out_dir / "model.qonnx.onnx", metrics)
