"""The verbs on one model file: evaluate, export, quantize, bench, prune, distill, estimate.

The CLI calls these, and the pipeline sequences the same code, so a file made by a verb is the file `edgecnn run`
makes for it. Each verb takes plain arguments and typed options, not an experiment config. The verbs that own a run
directory (run, train) are in pipeline.py, above this module.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from edgecnn.compress.lowbit_spec import LowBitSpec
from edgecnn.compress.options import LowbitConfig, PruneConfig, QuantizeConfig
from edgecnn.data.batches import Normalization
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.latency import LatencyResult, torch_latency_layouts
from edgecnn.measure.options import EvaluateConfig
from edgecnn.models.options import ModelConfig
from edgecnn.schema import check_yaml_size
from edgecnn.train.options import DistillConfig, TrainConfig
from edgecnn.variants.precisions import BuildJob, PrecisionOptions, precision_for

__all__ = ["bench", "distill", "estimate", "evaluate_file", "export", "onnx_input_shape", "prune", "quantize"]


def export(checkpoint: str | Path, out: str | Path | None = None, precision: str = "fp32", opset: int = 18, *,
           force: bool = False) -> Path:
    """Export a checkpoint to ONNX (fp32, or fp16 weights with fp32 I/O); an existing ``out`` is replaced only with
    ``force``."""
    from edgecnn.export.onnx import check_opset, convert_fp16, export_onnx
    from edgecnn.train.checkpoint import load_checkpoint

    if precision not in ("fp32", "fp16"):
        raise EdgeCNNError(f"export --precision {precision}: use fp32 or fp16 (INT8 files come from `edgecnn "
                           f"quantize`)")
    check_opset(opset)
    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.with_suffix(".onnx" if precision == "fp32" else ".fp16.onnx")
    model, meta = load_checkpoint(checkpoint)
    _check_output_file(out, checkpoint, force)
    file_meta = meta.model_only(precision="fp32")
    if precision == "fp32":
        return export_onnx(model, out, meta.input_size, file_meta, opset=opset)
    fp32 = export_onnx(model, out.with_name(out.stem + ".fp32-tmp.onnx"), meta.input_size, file_meta, opset=opset)
    try:
        return convert_fp16(fp32, out)
    finally:
        fp32.unlink(missing_ok=True)


def export_hls(checkpoint: str | Path, out: str | Path | None = None) -> tuple[Any, Path]:
    """An hls4ml project (C simulation compiled) for a low-bit checkpoint, through its QONNX file; ``out`` names
    the base of both (default: beside the checkpoint). Returns (hls4ml project, QONNX file)."""
    from edgecnn.compress.lowbit import load_lowbit_checkpoint
    from edgecnn.export.hls import export_hls as export_hls_project
    from edgecnn.export.qonnx import export_qonnx

    qmodel, meta = load_lowbit_checkpoint(checkpoint)  # EdgeCNNError if not a low-bit checkpoint
    checkpoint = Path(checkpoint)
    base = Path(out) if out is not None else checkpoint.with_suffix("")
    qfile = export_qonnx(qmodel, base.with_name(base.name + ".qonnx.onnx"), meta["input_size"], meta=meta)
    return export_hls_project(qfile, base.with_name(base.name + "_hls")), qfile


def export_finn(checkpoint: str | Path, target: str = "zcu104-finn", out: str | Path | None = None, *,
                fps: float | None = None, force: bool = False, targets_file: str | Path | None = None):
    """A FINN build folder for a low-bit checkpoint (export/finn.py): the model as FINN builds it, edgecnn's folding
    for ``target`` (at ``fps``, or the fastest that fits) under FINN's node names, the build configuration to a
    bitstream, FINN's verdict and estimates. Needs FINN's environment (hw/finn/tool.py). Returns (folder, report)."""
    import json

    from edgecnn.compress.lowbit import finn_ready, load_lowbit_checkpoint
    from edgecnn.export.finn import MODEL_FILE, build_config, folding_config, full_steps, readme
    from edgecnn.export.qonnx import export_qonnx
    from edgecnn.hw.estimation import estimate as estimate_hw
    from edgecnn.hw.finn.tool import compute_layers, require_finn, run_finn
    from edgecnn.hw.targets import get_target

    require_finn()
    tgt = get_target(target, targets_file)
    qmodel, meta = load_lowbit_checkpoint(checkpoint)  # EdgeCNNError if not a low-bit checkpoint
    checkpoint = Path(checkpoint)
    folder = Path(out) if out is not None else checkpoint.with_name(checkpoint.stem + f"_finn_{tgt.name}")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise EdgeCNNError(f"{folder} already exists and is not empty; pass --force to replace its files, or --out "
                           "to write another folder")
    folder.mkdir(parents=True, exist_ok=True)
    with finn_ready(qmodel):
        path = export_qonnx(qmodel, folder / MODEL_FILE, meta["input_size"], meta=meta)
    est = estimate_hw(path, tgt, fps=fps)
    report = run_finn(path, tgt, out_dir=folder / "finn_check", layers=compute_layers(path, est),
                      target_cycles=int(est.extra["max_cycles"]))
    (folder / "finn_estimate.json").write_text(json.dumps({
        "target": tgt.name, "finn": report.to_dict(),
        "edgecnn": {"fps": est.fps, "max_cycles": est.extra["max_cycles"], "resources": est.resources_used}},
        indent=1, default=str))
    if not report.compiled:
        raise EdgeCNNError(f"{report.verdict()}; no build configuration written (FINN's report: "
                           f"{folder / 'finn_estimate.json'})")
    (folder / "folding_config.json").write_text(json.dumps(folding_config(report.folding_config), indent=2))
    config = build_config(tgt, steps=full_steps(report.steps))
    (folder / "dataflow_build_config.json").write_text(json.dumps(config, indent=2))
    (folder / "README.md").write_text(readme(tgt, meta.get("arch", "model"), report))
    return folder, report


def _check_output_file(out: Path, source: Path, force: bool) -> None:
    """``out`` can be written without touching ``source`` or, unless ``force``, an existing file."""
    import tempfile

    if out.is_dir():
        raise EdgeCNNError(f"--out {out} is a folder; give a file name, e.g. --out {out / (source.stem + '.onnx')}")
    if out.exists() and source.exists() and out.samefile(source):
        raise EdgeCNNError(f"--out {out} is the input checkpoint: exporting would overwrite the input; give another "
                           f"file name, e.g. --out {source.with_suffix('.onnx')}")
    if out.exists() and not force:
        raise EdgeCNNError(f"{out} already exists; pass --force to overwrite it, or --out to write another file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise EdgeCNNError(f"cannot write {out} ({exc.strerror or type(exc).__name__}); choose a writable place "
                           "with --out") from None


def quantize(checkpoint: str | Path, precision: str, *, data: str | Path | None = None,
             out_dir: str | Path | None = None, options: QuantizeConfig | None = None,
             lowbit: LowbitConfig | None = None, bits: str | Path | Mapping[str, Any] | LowBitSpec | None = None,
             opset: int = 18, seed: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """Build one precision variant of a checkpoint with its registered handler and measure it on the test split.

    ``precision`` is any registered precision (fp16, bf16, fp64, int8-ptq, int8-pow2, int8-qat) or low-bit name (wXaY,
    binary, ternary, or a spec named in ``lowbit.specs``); ``options``/``lowbit`` are the handler's options.
    ``bits`` refines a low-bit ``precision`` per layer (default/first/last/layer name -> {w, a}): a YAML file, a
    ``bits`` mapping or a LowBitSpec. The variant is then ``<precision>-custom``, and its spec is checked against the
    model before any data is read (an unknown layer is a one-line error naming it).
    Returns {artefact, precision (the variant's name), metrics}."""
    from edgecnn.data.for_model import data_for_checkpoint
    from edgecnn.measure.predict import predict_logits
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.variants.measuring import make_variant

    name, lowbit = _lowbit_options(precision, lowbit, bits)
    handler = precision_for(name, lowbit)
    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    if name != precision and lowbit is not None:  # the per-layer spec fits this model: checked before any data
        # is read or trained on
        from edgecnn.compress.lowbit_spec import resolve_spec

        resolve_spec(model, lowbit.spec(name), meta.input_size)
    prepared = data_for_checkpoint(checkpoint, meta, Path(data) if data else None, seed)
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"{checkpoint.stem}-{name}"
    fp32_onnx = None
    if handler.needs_fp32_onnx:
        from edgecnn.export.onnx import export_onnx

        fp32_onnx = export_onnx(model, out_dir / "model.onnx", meta.input_size, meta.model_only(precision="fp32"),
                                opset=opset)
    job = BuildJob(name, model, meta, prepared, out_dir, fp32_onnx=fp32_onnx,
                   options=PrecisionOptions(quantize=options or QuantizeConfig(), lowbit=lowbit or LowbitConfig(),
                                            opset=opset, seed=seed, show_progress=show_progress))
    fp32_preds = None
    if handler.runtime != "qonnx":
        fp32_preds = predict_logits(model, prepared.splits["test"], prepared.normalization).argmax(1)
    artefact, metrics, _ = make_variant(job, EvaluateConfig(latency_batches=[1], latency_repeats=10), fp32_preds)
    return {"artefact": str(artefact), "precision": name, "metrics": metrics}


def _lowbit_options(precision: str, lowbit: LowbitConfig | None,
                    bits: str | Path | Mapping[str, Any] | LowBitSpec | None) -> tuple[str, LowbitConfig | None]:
    """The variant name and low-bit options ``quantize`` builds: ``precision`` and ``lowbit`` as they are, or with
    ``bits`` the spec refining ``precision``, named ``<precision>-custom`` in ``lowbit.specs``."""
    from edgecnn.compress.lowbit_spec import parse_precision
    from edgecnn.variants.precisions import check_precision

    if lowbit is None or precision not in lowbit.specs:
        check_precision(precision)
    if bits is None:
        return precision, lowbit
    parse_precision(precision)  # bits refine a low-bit precision; for another one this error lists them
    spec = bits if isinstance(bits, (LowBitSpec, Mapping)) else _read_bits(Path(bits))
    if spec is None:  # an empty file: the precision alone
        return precision, lowbit
    name = f"{precision}-custom"
    spec = LowBitSpec.parse(spec, precision).to_dict()
    base = lowbit or LowbitConfig()
    return name, LowbitConfig.model_validate({**base.model_dump(), "variants": [name],
                                              "specs": {**base.specs, name: spec}})


def _read_bits(path: Path) -> Any:
    """The per-layer low-bit spec in a ``--bits`` YAML file (its ``bits:`` entry, or the whole mapping)."""
    import yaml

    if not path.is_file():
        raise EdgeCNNError(f"--bits: no file {path}; give a YAML mapping such as "
                           "{default: {w: 1, a: 4}, first: {w: 4, a: 4}, last: {w: 4, a: 4}}")
    try:
        spec = check_yaml_size(yaml.safe_load(path.read_text()), f"--bits {path}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise EdgeCNNError(f"--bits: {path} is not valid YAML ({where}{getattr(exc, 'problem', None) or exc}); fix it, "
                           "e.g. {default: {w: 1, a: 4}, first: {w: 4, a: 4}}") from None
    except UnicodeDecodeError:
        raise EdgeCNNError(f"--bits: {path} is not a text file; give a YAML mapping such as "
                           "{default: {w: 1, a: 4}, first: {w: 4, a: 4}}") from None
    return spec.get("bits", spec) if isinstance(spec, dict) else spec


def onnx_input_shape(path: Path, input_size: int | None) -> tuple[int, int, int, int]:
    """(1, C, H, W) of an ONNX model's input; a dynamic spatial size needs ``input_size`` or edgecnn metadata."""
    import onnx

    from edgecnn.export.onnx import read_metadata

    meta = read_metadata(path)
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) != 4:
        raise EdgeCNNError(f"{path}: input has {len(shape)} dimensions; bench and eval take image models (N, C, H, W)")
    size = input_size or meta.get("input_size")
    c = shape[1] or 3
    h, w = shape[2] or size, shape[3] or size
    if h is None or w is None:
        raise EdgeCNNError(f"{path} has a dynamic input size {shape} and no edgecnn metadata; pass --input-size N")
    return 1, c, h, w


def bench(model_path: str | Path, backend: str = "onnxruntime", batches: Sequence[int] = (1, 8, 64), *,
          threads: int | None = None, repeats: int = 20, warmup: int = 5,
          input_size: int | None = None) -> list[LatencyResult]:
    """Latency/throughput of an ONNX or .tflite file or an edgecnn checkpoint per batch size on one backend."""
    from edgecnn.measure.runtimes import file_latency, file_predictor

    path = Path(model_path)
    _check_bench_counts(list(batches), repeats, warmup, threads)
    if not path.exists():
        raise EdgeCNNError(f"model not found: {path}; pass an .onnx file or an edgecnn .safetensors checkpoint")
    threads = threads or torch.get_num_threads()
    if path.suffix == ".safetensors":
        from edgecnn.measure.gpu import TORCH_CUDA, torch_cuda_latency
        from edgecnn.train.checkpoint import load_checkpoint

        if backend != "torch" and backend not in TORCH_CUDA:
            raise EdgeCNNError(f"a checkpoint runs on the torch backends (torch, {', '.join(TORCH_CUDA)}); export it "
                               f"first (`edgecnn export {path}`) for {backend}")
        model, checkpoint_meta = load_checkpoint(path)
        size = input_size or checkpoint_meta.input_size
        if backend in TORCH_CUDA:
            return [torch_cuda_latency(model, size, b, backend, repeats=repeats, warmup=warmup) for b in batches]
        return [torch_latency_layouts(model, size, b, repeats=repeats, warmup=warmup,
                                      threads=threads).result for b in batches]
    if path.suffix == ".tflite":
        if backend != "litert":
            raise EdgeCNNError(f"a .tflite file runs on the litert backend, not {backend}; use --backend litert")
        meta = file_metadata(path)
        size = input_size or meta["input_size"]
        channels = int(meta.get("in_channels", 3))
        shape = (1, channels, size, size) if isinstance(size, int) else (1, channels, *size)
        predict = file_predictor(path, backend, threads)
        return [file_latency(predict, shape, b, backend, threads, repeats=repeats, warmup=warmup) for b in batches]
    if path.suffix != ".onnx":
        raise EdgeCNNError(f"{path} is neither an .onnx or .tflite file nor a .safetensors checkpoint")
    if backend.startswith("torch") or backend == "litert":
        raise EdgeCNNError(f"an ONNX file runs on onnxruntime(-cuda, -tensorrt) or openvino, not {backend}; use "
                           "--backend onnxruntime")
    from edgecnn.measure.runtimes import RuntimeUnavailable

    shape = onnx_input_shape(path, input_size)
    try:
        predict = file_predictor(path, backend, threads)
    except RuntimeUnavailable as exc:
        return [LatencyResult.not_available(backend, b, str(exc)) for b in batches]
    return [file_latency(predict, shape, b, backend, threads, repeats=repeats, warmup=warmup) for b in batches]


def _check_bench_counts(batches: list[int], repeats: int, warmup: int, threads: int | None) -> None:
    if not batches:
        raise EdgeCNNError("--batch: give at least one batch size, e.g. --batch 1,8,64")
    if any(b < 1 for b in batches):
        raise EdgeCNNError(f"--batch {','.join(map(str, batches))}: every batch size must be 1 or more, e.g. "
                           "--batch 1,8,64")
    if repeats < 1:
        raise EdgeCNNError(f"--repeats {repeats}: give 1 or more timed runs per batch size, e.g. --repeats 20")
    if warmup < 0:
        raise EdgeCNNError(f"--warmup {warmup}: give 0 or more untimed runs, e.g. --warmup 5")
    if threads is not None and threads < 0:
        raise EdgeCNNError(f"--threads {threads}: give 1 or more threads (or leave it out to use all cores)")


def file_metadata(path: Path) -> dict[str, Any]:
    """The edgecnn metadata of a deployable file: ONNX (float, QDQ, power-of-two, QONNX) or .tflite (+ .json)."""
    from edgecnn.export.onnx import read_metadata
    from edgecnn.export.tflite import read_tflite_metadata, tflite_meta_path

    meta = read_tflite_metadata(path) if path.suffix == ".tflite" else read_metadata(path)
    if not meta:
        where = f"beside it ({tflite_meta_path(path).name})" if path.suffix == ".tflite" else "in it"
        raise EdgeCNNError(f"{path} has no edgecnn metadata {where} (classes, input size, mean/std); build it with "
                           "`edgecnn quantize` or `edgecnn export`")
    return meta


def _graph_input(path: Path) -> tuple[int | None, ...]:
    """(C, H, W) of a deployable file's graph input as the graph states it (None: a dynamic dimension)."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        n, h, w, c = (int(d) for d in Interpreter(model_path=str(path)).get_input_details()[0]["shape"])
        return c, h, w
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])


def check_metadata_matches_graph(path: Path, meta: dict[str, Any]) -> None:
    """One-line error when a file's edgecnn metadata names another input (channels, size) than its graph takes:
    its images would be pre-processed for another model and scored at the wrong size without a word."""
    size = meta["input_size"]
    height, width = (size, size) if isinstance(size, int) else size[-2:]
    stated = (int(meta.get("in_channels", 3)), int(height), int(width))
    graph = _graph_input(path)
    if len(graph) != 3 or any(g is not None and g != s for g, s in zip(graph, stated)):
        shown = "x".join("?" if g is None else str(g) for g in graph)
        raise EdgeCNNError(f"{path}: its metadata describes {stated[1]}x{stated[2]} images with {stated[0]} "
                           f"channel(s) but its graph takes (C, H, W) = ({shown}); the metadata does not belong "
                           "to this file: export it again from its checkpoint")


def deployable_predictor(path: Path, meta: dict[str, Any], backend: str = "auto", threads: int | None = None):
    """``predict(batch) -> logits`` for any deployable file: QONNX in qonnx's executor, .tflite in LiteRT, other
    ONNX files in ``backend`` (auto: ONNX Runtime)."""
    from edgecnn.measure.runtimes import file_predictor

    if path.suffix == ".tflite":
        if backend not in ("auto", "litert"):
            raise EdgeCNNError(f"a .tflite file runs in LiteRT, not {backend}; use --backend litert (or leave it out)")
        return file_predictor(path, "litert", threads)
    if meta.get("format") == "qonnx":
        if backend not in ("auto", "qonnx"):
            raise EdgeCNNError(f"a QONNX file runs in qonnx's executor, not {backend}; leave --backend out")
        from edgecnn.export.qonnx import run_qonnx

        return lambda x: run_qonnx(path, x)
    return file_predictor(path, "onnxruntime" if backend == "auto" else backend, threads)


def evaluate_file(path: str | Path, folder: str | Path, batch_size: int = 64,
                  backend: str = "auto") -> dict[str, Any]:
    """Score an edgecnn checkpoint (PyTorch) or any deployable file (ONNX fp32/fp16/INT8/power-of-two, QONNX,
    LiteRT .tflite) on every image of an ImageFolder, with the pre-processing stored with the file."""
    from edgecnn.data.for_model import folder_tensors
    from edgecnn.measure.accuracy import classification_report
    from edgecnn.measure.predict import require_finite
    from edgecnn.measure.runtimes import predict_file

    path = Path(path)
    if batch_size < 1:
        raise EdgeCNNError(f"--batch-size {batch_size}: give 1 or more images per batch, e.g. --batch-size 64")
    if not path.is_file():
        raise EdgeCNNError(f"model not found: {path}; pass a checkpoint (.safetensors), an .onnx or a .tflite file")
    deployable = path.suffix in (".onnx", ".tflite")
    if deployable:
        meta = file_metadata(path)
        check_metadata_matches_graph(path, meta)
    else:
        from edgecnn.measure.predict import predict_logits
        from edgecnn.train.checkpoint import load_checkpoint

        model, checkpoint_meta = load_checkpoint(path)
        meta = checkpoint_meta.to_dict()
    classes: list[str] = meta["classes"]
    data, skipped = folder_tensors(folder, classes, meta["input_size"], int(meta.get("in_channels", 3)),
                                   str(meta.get("resize", "stretch")))
    norm = Normalization(tuple(meta["normalization"]["mean"]), tuple(meta["normalization"]["std"]))
    if deployable:
        logits = predict_file(deployable_predictor(path, meta, backend), data, norm, batch_size)
    else:
        logits = predict_logits(model, data, norm, batch_size=batch_size)
    require_finite(logits, path)
    if logits.numel() and logits.shape[-1] != len(classes):
        raise EdgeCNNError(f"{path}: its edgecnn metadata lists {len(classes)} classes but the model outputs "
                           f"{logits.shape[-1]} logits per image; the metadata does not belong "
                           "to this model: export it again from its checkpoint with `edgecnn export`")
    report = classification_report(data.labels.numpy(), logits.argmax(1).numpy(), classes)
    return {**report.to_dict(), "per_class": report.per_class(), "model": str(path),
            "precision": meta.get("precision", "fp32"), "tta": meta.get("tta", "none"), "data": str(folder),
            "skipped_files": skipped}


def prune(checkpoint: str | Path, options: PruneConfig | None = None, **kwargs: Any):
    """Prune a checkpoint and fine-tune it (structured or unstructured; see compress/prune.py)."""
    from edgecnn.compress.prune import prune as prune_checkpoint

    return prune_checkpoint(checkpoint, options, **kwargs)


def distill(teacher: str | Path, student: ModelConfig | dict[str, Any] | str, *,
            options: DistillConfig | None = None, train: TrainConfig | None = None, **kwargs: Any):
    """Distil a teacher into a smaller student, with the same student trained alone as the control."""
    from edgecnn.train.distill import distill as distill_into

    return distill_into(teacher, student, options=options, train=train, **kwargs)


def estimate(model: str | Path, target: str, **kwargs: Any):
    """FPS, latency, resources, energy and unmappable layers of an ONNX/QONNX file on a hardware target."""
    from edgecnn.hw import estimate as estimate_file

    return estimate_file(model, target, **kwargs)
