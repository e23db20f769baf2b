"""hls4ml HLS project (Vitis backend) from a QONNX file, compiled with g++ for C simulation.

The flow, the fixed-point types that make C simulation match QONNX, and the exact graph rewrites that work around
hls4ml 1.3's limitations are described in docs/hls.md.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgeCNNError

log = logging.getLogger(__name__)
BACKENDS = ("Vitis", "Vivado")
IO_TYPES = ("io_parallel", "io_stream")
#: ONNX ops whose layers carry the (non-power-of-2) scale/bias parameters that need ``param_precision``.
_PARAM_OPS = ("BatchNormalization", "Quant", "BipolarQuant", "Mul", "Add", "Sub", "Div")
_GAP_PASS = "edgecnn_remove_transpose_before_global_pooling"
_FANOUT_TAG = "edgecnn: fan-out identity"
#: hls4ml warns this for every classifier bias (MatMul -> Mul -> Add); the ApplyAlpha it keeps is exact.
_BENIGN_WARNING = "Failed to propagate quantization bias down Add node"


@dataclass
class HLSProject:
    """An hls4ml project written (and compiled) by ``export_hls``."""

    project_dir: Path
    model: Any = field(repr=False, compare=False)  #: the hls4ml ModelGraph (not serialised)
    config: dict[str, Any] = field(repr=False)  #: the hls4ml config used (``hls_config`` + conversion options)
    input_shape: tuple[int, ...] = ()  #: (C, H, W): ``hls_predict`` takes (N, C, H, W)
    n_outputs: int = 0
    compiled: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description (everything but the hls4ml model)."""
        return {"project_dir": str(self.project_dir), "input_shape": list(self.input_shape),
                "n_outputs": self.n_outputs, "compiled": self.compiled, "notes": list(self.notes),
                "conversion": {k: v for k, v in self.config.items() if k != "hls_config"}}


def _one_line(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _import_hls4ml():
    try:
        with _quiet():
            import hls4ml
    except ImportError as exc:
        raise EdgeCNNError(f"HLS export needs hls4ml ({exc.name} is missing); pip install 'edgecnn[hls]'") from None
    return hls4ml


@contextlib.contextmanager
def _quiet(sink: io.StringIO | None = None):
    """hls4ml prints its progress on stdout; keep it out of the CLI's output (and in ``sink``)."""
    with contextlib.redirect_stdout(sink if sink is not None else io.StringIO()):
        yield


# ------------------------------------------------------------------------------------------------ graph fix-ups


def _prepare(qonnx_file: Path):
    """The QONNX file after hls4ml's documented qonnx passes plus edgecnn's weight-scale fold."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GemmToMatMul warns about every Gemm opset newer than 9
        model = cleanup_model(ModelWrapper(str(qonnx_file)))
        model = model.transform(ConvertToChannelsLastAndClean())
        model = model.transform(GemmToMatMul())
        model = cleanup_model(model)
    model, notes = _fold_weight_scales(model)
    model, more = _isolate_quant_outputs(model)
    return cleanup_model(model), notes + more


def _fold_weight_scales(model):
    """Per-output-channel weight scales -> scale 1 on the weight quantizer, the scale applied after the layer.

    Exact: ``conv(x, s * Wint) = s * conv(x, Wint)`` per output channel; ``s`` goes into the following
    BatchNormalization (gamma * s, running mean / s) or into an inserted ``Mul`` (broadcast along the last axis,
    which is the channel axis after the channels-last conversion and for MatMul outputs).
    """
    from onnx import helper

    notes: list[str] = []
    for node in list(model.graph.node):
        if node.op_type not in ("Conv", "MatMul") or len(node.input) < 2:
            continue
        quant = model.find_producer(node.input[1])
        if quant is None or quant.op_type not in ("Quant", "BipolarQuant"):
            continue
        weight, scale = model.get_initializer(quant.input[0]), model.get_initializer(quant.input[1])
        if weight is None or scale is None or np.all(scale == 1):
            continue
        if quant.op_type == "Quant":
            zero = model.get_initializer(quant.input[2])
            if zero is None or np.any(zero != 0):
                continue
        out_axis = 0 if node.op_type == "Conv" else weight.ndim - 1
        other = tuple(a for a in range(weight.ndim) if a != out_axis)
        full = np.broadcast_to(scale, weight.shape)
        per_out = full.max(axis=other)
        if not np.array_equal(full, np.broadcast_to(np.expand_dims(per_out, other), weight.shape)):
            continue  # not a per-output-channel scale: leave it to hls4ml
        per_out = per_out.astype(np.float32)
        shape = [-1 if a == out_axis else 1 for a in range(weight.ndim)]
        if quant.op_type == "Quant":
            model.set_initializer(quant.input[0], np.round(weight / per_out.reshape(shape)).astype(np.float32))
        else:
            model.set_initializer(quant.input[0], np.where(weight >= 0, 1.0, -1.0).astype(np.float32))
        model.set_initializer(quant.input[1], np.ones_like(scale, dtype=np.float32))
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            bias = model.get_initializer(node.input[2])
            model.set_initializer(node.input[2], (bias / per_out).astype(np.float32))
        consumers = model.find_consumers(node.output[0]) or []
        if len(consumers) == 1 and consumers[0].op_type == "BatchNormalization":
            bn = consumers[0]
            gamma, mean = model.get_initializer(bn.input[1]), model.get_initializer(bn.input[3])
            model.set_initializer(bn.input[1], (gamma * per_out).astype(np.float32))
            model.set_initializer(bn.input[3], (mean / per_out).astype(np.float32))
            notes.append(f"{_label(node)}: per-channel weight scale folded into {bn.name}")
        else:
            out = node.output[0]
            inner = model.make_new_valueinfo_name()
            const = model.make_new_valueinfo_name()
            node.output[0] = inner
            model.set_initializer(const, per_out.reshape(-1))
            mul = helper.make_node("Mul", [inner, const], [out], name=f"{node.name}_weight_scale")
            nodes = list(model.graph.node)
            model.graph.node.insert(nodes.index(node) + 1, mul)
            model.set_tensor_shape(inner, model.get_tensor_shape(out))
            notes.append(f"{_label(node)}: per-channel weight scale applied by an inserted Mul")
    return model, notes


def _isolate_quant_outputs(model):
    """Give every activation ``Quant`` one producer-to-Quant edge and one use, as input 0 of its consumer.

    hls4ml turns a Quant with a non-power-of-2 scale into ApplyAlpha (1/s) -> rounding activation -> ApplyAlpha (s)
    and places both ApplyAlphas with ``ModelGraph.insert_node``, which rewires only the first node that reads the
    tensor as its input 0: a residual ``Add(skip, quant(branch))`` or a quantized tensor feeding both a conv and an
    add silently reads the unscaled integers (or skips the quantizer). So binary commutative ops take the
    quantized input first, and where a Quant's input or output is still shared (or used as input 1), an
    identity node (Relu after an unsigned Quant, else ``Mul(x, 1)``) takes the fan-out instead.
    """
    from onnx import helper

    notes: list[str] = []

    def is_act_quant(node) -> bool:
        return node is not None and node.op_type == "Quant" and model.get_initializer(node.input[0]) is None

    def uses(tensor: str):
        return [(c, i) for c in (model.find_consumers(tensor) or [])
                for i, name in enumerate(c.input) if name == tensor]

    def identity_after(tensor: str, before_node, rewire, nonnegative: bool = False) -> None:
        """A pass-through node after ``before_node`` that takes over the ``rewire`` uses of ``tensor``: Relu for
        non-negative tensors (an ordinary hls4ml activation), else Mul(x, 1) (an ApplyAlpha; hls4ml 1.3 cannot
        move the scale of such an ApplyAlpha into a following Conv and stops with an error there)."""
        out = model.make_new_valueinfo_name()
        model.set_tensor_shape(out, model.get_tensor_shape(tensor))
        if nonnegative:
            ident = helper.make_node("Relu", [tensor], [out], name=f"{before_node.name}_fanout")
        else:
            one = model.make_new_valueinfo_name()
            model.set_initializer(one, np.ones((1,), dtype=np.float32))
            ident = helper.make_node("Mul", [tensor, one], [out], name=f"{before_node.name}_fanout")
        ident.doc_string = _FANOUT_TAG
        nodes = list(model.graph.node)
        model.graph.node.insert(nodes.index(before_node) + 1, ident)
        for consumer, idx in rewire:
            consumer.input[idx] = out

    for node in model.graph.node:  # Add(skip, quant(x)) -> Add(quant(x), skip)
        if (node.op_type in ("Add", "Mul") and len(node.input) == 2 and is_act_quant(model.find_producer(node.input[1]))
                and not is_act_quant(model.find_producer(node.input[0]))
                and model.get_initializer(node.input[0]) is None):
            node.input[0], node.input[1] = node.input[1], node.input[0]
    for quant in list(model.graph.node):
        if not is_act_quant(quant):
            continue
        src = quant.input[0]
        shared_in = [(c, i) for c, i in uses(src) if c is not quant]
        prod = model.find_producer(src)
        if shared_in and prod is not None:  # the Quant's input feeds other nodes too
            identity_after(src, prod, [(quant, 0)])
            notes.append(f"{quant.name}: input shared with {len(shared_in)} other node(s), given an identity Mul")
        out_uses = uses(quant.output[0])
        if len(out_uses) > 1 or any(i != 0 for _, i in out_uses):
            signed = next((a.i for a in quant.attribute if a.name == "signed"), 1)
            identity_after(quant.output[0], quant, out_uses, nonnegative=not signed)
            notes.append(f"{quant.name}: output used {len(out_uses)}x, fanned out through an identity Mul")
    return model, notes


def _label(node) -> str:
    """'Conv_0 (features.0.0)': the ONNX node and, where export_qonnx recorded it, the module name."""
    return f"{node.name} ({node.doc_string})" if node.doc_string else node.name


def _check_supported(model, hls4ml, qonnx_file: Path) -> None:
    """One EdgeCNNError naming the first layer hls4ml cannot convert (instead of hls4ml's stack trace)."""
    supported = set(hls4ml.converters.get_supported_onnx_layers()) | {"Dropout", "Identity"}
    where = f"{qonnx_file.name}: layer"
    for node in model.graph.node:
        if node.op_type not in supported:
            raise EdgeCNNError(
                f"{where} {_label(node)} is an ONNX {node.op_type}, which hls4ml {hls4ml.__version__} cannot convert "
                "to HLS; replace or remove that layer (see hls4ml.converters.get_supported_onnx_layers())")
        shape = model.get_tensor_shape(node.input[0]) if node.input else None
        if (node.op_type in ("Conv", "MaxPool", "AveragePool", "BatchNormalization") and shape is not None
                and len(shape) == 4 and node.domain != "qonnx.custom_op.channels_last"):
            raise EdgeCNNError(
                f"{where} {_label(node)} ({node.op_type}) was not converted to channels-last by qonnx, which hls4ml "
                "needs; " + ("use max pooling or strided convs instead of average pooling (e.g. customnet "
                             "downsample='max')" if node.op_type == "AveragePool" else "it cannot be exported to HLS"))
        if node.op_type in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
            shapes = [model.get_tensor_shape(i) for i in node.input if model.get_initializer(i) is None]
            if len(shapes) == 2 and shapes[0] != shapes[1]:
                raise EdgeCNNError(
                    f"{where} {_label(node)} ({node.op_type}) combines tensors of shapes {shapes[0]} and {shapes[1]} "
                    "after qonnx's channels-last conversion (typical of SiLU/GELU/Hardswish, built from several ops), "
                    "which hls4ml cannot convert; use relu activations for HLS export")


def _register_global_pool_fix(hls4ml) -> None:
    """hls4ml's ONNX global pooling reads channels-last data but the channels-last flow feeds it channels-first
    through a Transpose: drop that Transpose (registered once per process, in hls4ml's ``convert`` flow)."""
    from hls4ml.model.flow.flow import get_flow, update_flow
    from hls4ml.model.optimizer import OptimizerPass, register_pass
    from hls4ml.model.optimizer.optimizer import optimizer_map

    if _GAP_PASS in optimizer_map:
        if _GAP_PASS not in get_flow("convert").optimizers:
            update_flow("convert", add_optimizers=[_GAP_PASS])
        return

    class RemoveTransposeBeforeGlobalPooling(OptimizerPass):
        def match(self, node):
            if node.class_name != "GlobalPooling2D":
                return False
            prev = node.get_input_node()
            if prev is None or prev.class_name != "Transpose" or list(prev.get_attr("perm", [])) != [2, 0, 1]:
                return False
            users = [n for n in node.model.graph.values() if prev.outputs[0] in n.inputs]
            return len(users) == 1

        def transform(self, model, node):
            model.remove_node(node.get_input_node())
            return True

    register_pass(_GAP_PASS, RemoveTransposeBeforeGlobalPooling)
    update_flow("convert", add_optimizers=[_GAP_PASS])


# ------------------------------------------------------------------------------------------------ export


def export_hls(qonnx_file: str | Path, out_dir: str | Path, *, backend: str = "Vitis", io_type: str = "io_stream",
               part: str | None = None, clock_period: float = 10, default_precision: str = "fixed<32,16>",
               param_precision: str = "fixed<48,16>", reuse_factor: int = 1, compile: bool = True,
               project_name: str = "myproject") -> HLSProject:
    """Write an hls4ml project for ``qonnx_file`` into ``out_dir`` and (``compile``) build its C simulation.

    ``default_precision``: every type not set by a Quant node (activations between quantizers, accumulators hls4ml
    does not infer); ``param_precision``: the scale/bias parameters of BatchNormalization and of the rescaling
    layers hls4ml makes from Quant nodes (non-power-of-2 scales need the fractional bits).
    """
    qonnx_file = Path(qonnx_file)
    _check_options(qonnx_file, backend, io_type, reuse_factor)
    hls4ml = _import_hls4ml()
    if compile and shutil.which("g++") is None:
        raise EdgeCNNError("hls4ml's C simulation needs a C++ compiler: install g++ (e.g. apt-get install g++), "
                           "or export with compile=False to only write the HLS project")
    model, notes = _load_qonnx(qonnx_file, hls4ml)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logbuf = io.StringIO()
    options = {"backend": backend, "io_type": io_type, "clock_period": clock_period, "project_name": project_name}
    if part:
        options["part"] = part
    hls_model, hls_config, warned = _convert(hls4ml, model, qonnx_file, out_dir, logbuf, options,
                                             default_precision, param_precision, reuse_factor)
    notes += warned
    compiled = _write_project(hls_model, out_dir, logbuf, compile)
    (out_dir / "hls4ml_convert.log").write_text(logbuf.getvalue())
    in_shape = tuple(int(d) for d in model.get_tensor_shape(model.graph.input[0].name)[1:])
    n_out = int(np.prod(model.get_tensor_shape(model.graph.output[0].name)[1:]))
    config = {**options, "default_precision": default_precision, "param_precision": param_precision,
              "reuse_factor": reuse_factor, "part": part, "hls4ml_version": hls4ml.__version__,
              "source": str(qonnx_file), "hls_config": hls_config}
    return HLSProject(project_dir=out_dir, model=hls_model, config=config, input_shape=in_shape, n_outputs=n_out,
                      compiled=compiled, notes=notes)


def _check_options(qonnx_file: Path, backend: str, io_type: str, reuse_factor: int) -> None:
    """One-line errors for a missing file or an option hls4ml does not take."""
    if not qonnx_file.is_file():
        raise EdgeCNNError(f"QONNX file {qonnx_file} does not exist; export one with --format qonnx first")
    if backend not in BACKENDS:
        raise EdgeCNNError(f"HLS backend '{backend}' is not supported; use one of {', '.join(BACKENDS)}")
    if io_type not in IO_TYPES:
        raise EdgeCNNError(f"io_type '{io_type}' is not one of {', '.join(IO_TYPES)}")
    if isinstance(reuse_factor, bool) or not isinstance(reuse_factor, int) or reuse_factor < 1:
        raise EdgeCNNError(f"reuse_factor must be a positive integer, got {reuse_factor!r}")


def _load_qonnx(qonnx_file: Path, hls4ml) -> tuple[Any, list[str]]:
    """The QONNX model after the channels-last/cleanup passes, checked for operators hls4ml supports; (model,
    notes)."""
    try:
        model, notes = _prepare(qonnx_file)
    except EdgeCNNError:
        raise
    except Exception as exc:  # noqa: BLE001 - qonnx transformations fail with assorted exceptions
        raise EdgeCNNError(f"{qonnx_file.name}: the qonnx channels-last/cleanup passes failed "
                           f"({type(exc).__name__}: {_one_line(exc)}); is it a QONNX file from export_qonnx?") from None
    _check_supported(model, hls4ml, qonnx_file)
    _register_global_pool_fix(hls4ml)
    return model, notes


def _convert(hls4ml, model, qonnx_file: Path, out_dir: Path, logbuf: io.StringIO, options: dict[str, Any],
             default_precision: str, param_precision: str, reuse_factor: int) -> tuple[Any, dict[str, Any], list[str]]:
    """hls4ml's model of ``model`` with its per-layer configuration: (hls model, hls config, notes from hls4ml's
    warnings). A failed conversion is a one-line error naming hls4ml's warnings and its log file."""
    with _quiet(logbuf), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hls_config = hls4ml.utils.config.config_from_onnx_model(
                model.model, granularity="name", backend=options["backend"], default_precision=default_precision,
                default_reuse_factor=reuse_factor)
            _set_param_precision(hls_config, model, param_precision)
            hls_model = hls4ml.converters.convert_from_onnx_model(
                model.model, output_dir=str(out_dir), hls_config=hls_config, **options)
        except Exception as exc:  # noqa: BLE001 - hls4ml raises bare Exceptions / internal errors
            (out_dir / "hls4ml_convert.log").write_text(logbuf.getvalue())
            hints = sorted({_one_line(w.message) for w in caught if "hls4ml" in str(w.filename)})
            raise EdgeCNNError(
                f"hls4ml could not convert {qonnx_file.name} ({type(exc).__name__}: {_one_line(exc)})"
                + (f"; hls4ml warned: {' | '.join(hints)}" if hints else "")
                + f"; see {out_dir / 'hls4ml_convert.log'}") from None
    notes = sorted({f"hls4ml: {_one_line(w.message)}" for w in caught
                    if "hls4ml" in str(w.filename) and not str(w.message).startswith(_BENIGN_WARNING)})
    return hls_model, hls_config, notes


def _write_project(hls_model, out_dir: Path, logbuf: io.StringIO, compile: bool) -> bool:
    """Write the HLS project and (``compile``) build its C simulation library; returns whether it was compiled."""
    compiled = False
    with _quiet(logbuf):
        try:
            if compile:
                hls_model.compile()  # writes the project, then g++ -> firmware/<project>-<stamp>.so
                compiled = True
            else:
                hls_model.write()
        except Exception as exc:  # noqa: BLE001
            (out_dir / "hls4ml_convert.log").write_text(logbuf.getvalue())
            raise EdgeCNNError(f"hls4ml could not {'compile' if compile else 'write'} the project in {out_dir} "
                               f"({_one_line(exc)}); run {out_dir / 'build_lib.sh'} there to see the compiler "
                               "errors") from None
    return compiled


def _set_param_precision(hls_config: dict[str, Any], model, precision: str) -> None:
    """``scale``/``bias`` precision of the layers that carry quantizer scales and BatchNorm parameters.

    hls4ml names the ApplyAlpha layers it makes from a Quant node after that node and copies its config, and the
    Mul/Add it turns into ApplyAlpha keep their names, so setting the ONNX node's entry is enough."""
    ops = {node.name: node.op_type for node in model.graph.node}
    fanout = {node.name for node in model.graph.node if node.doc_string == _FANOUT_TAG}
    for name, entry in hls_config.get("LayerName", {}).items():
        if name in fanout:  # carries rescaled (non-power-of-2) values
            prec = entry.setdefault("Precision", {})
            if isinstance(prec, dict):
                prec["result"] = precision
        if ops.get(name) in _PARAM_OPS:
            prec = entry.setdefault("Precision", {})
            if isinstance(prec, dict):
                prec.setdefault("scale", precision)
                prec.setdefault("bias", precision)


# ------------------------------------------------------------------------------------------------ C simulation


CSIM_STACK_BYTES = 1 << 30  # stack of the thread that runs the C simulation (see hls_predict)


def hls_predict(project: HLSProject, x_nchw: np.ndarray) -> np.ndarray:
    """Logits (N, n_outputs) of the compiled project (hls4ml C simulation) for NCHW float inputs."""
    if not project.compiled:
        raise EdgeCNNError(f"the HLS project in {project.project_dir} is not compiled; export it with compile=True")
    x = np.asarray(x_nchw, dtype=np.float32)
    if x.ndim == len(project.input_shape):
        x = x[None]
    if tuple(x.shape[1:]) != tuple(project.input_shape):
        hint = (" (NHWC? hls_predict takes NCHW)" if sorted(x.shape[1:]) == sorted(project.input_shape) else "")
        raise EdgeCNNError(f"input of shape {x.shape} does not match the HLS model's (N, "
                           f"{', '.join(map(str, project.input_shape))}){hint}")
    result: dict[str, Any] = {}

    def predict() -> None:
        try:
            with _quiet():
                result["y"] = project.model.predict(np.ascontiguousarray(x))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = exc

    # The C simulation keeps each layer's line buffers and streams on the stack: a 64x64 CustomNet needs far more
    # than the 8 MiB a process's main thread gets and segfaults there, so it runs in a thread with a large stack
    # (address space only; the pages it does not touch are never committed).
    saved = threading.stack_size(CSIM_STACK_BYTES)
    try:
        worker = threading.Thread(target=predict, name="hls4ml-csim")
        worker.start()
    finally:
        threading.stack_size(saved)
    worker.join()
    if "error" in result:
        raise result["error"]
    return np.asarray(result["y"], dtype=np.float32).reshape(len(x), project.n_outputs)


def compare_with_qonnx(project: HLSProject, qonnx_file: str | Path, x_nchw: np.ndarray) -> dict[str, Any]:
    """Agreement of the C simulation with qonnx execution of ``qonnx_file`` on the same inputs."""
    from edgecnn.export.qonnx import run_qonnx

    x = np.asarray(x_nchw, dtype=np.float32)
    hls = hls_predict(project, x)
    ref = run_qonnx(qonnx_file, x).reshape(hls.shape)
    diff = np.abs(hls - ref)
    return {"n": len(x), "top1_agreement": float(np.mean(hls.argmax(1) == ref.argmax(1))),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_abs_logit": float(np.abs(ref).max())}
