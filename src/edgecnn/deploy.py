"""Verbs on a trained checkpoint or a deployable file: export, quantize, bench, and evaluation of ONNX files.

They share the pipeline's code (variants.build_artefact / measure_precision), so a file made here is the
same as the one `edgecnn run` makes for that precision.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecnn.config import DataConfig, ExperimentConfig, QuantizeConfig
from edgecnn.data.batches import Normalization, TensorSet
from edgecnn.data.prepare import PreparedData, prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.latency import LatencyResult, torch_latency


def _run_split(checkpoint: Path) -> Path | None:
    """The split.json of the run a checkpoint belongs to (runs/NAME/train/best.safetensors -> runs/NAME)."""
    candidate = Path(checkpoint).resolve().parent.parent / "split.json"
    return candidate if candidate.exists() else None


def data_for_checkpoint(checkpoint: Path, meta: dict[str, Any], data: Path | None, seed: int = 0) -> PreparedData:
    """Train/val/test data matching a checkpoint: its run's recorded split, or a fresh split of ``data``."""
    split = _run_split(checkpoint)
    if data is None:
        if split is None:
            raise EdgeCNNError(f"{checkpoint} is not inside a run directory with a split.json; pass --data FOLDER "
                               "(calibration and scoring images)")
        data = Path(json.loads(split.read_text())["root"])
    prepared = prepare_data(DataConfig(root=data, image_size=meta["input_size"]), seed,
                            split_file=split if split and json.loads(split.read_text())["root"] == str(Path(data).resolve()) else None)
    if prepared.classes != meta["classes"]:
        raise EdgeCNNError(f"the classes of {data} ({', '.join(prepared.classes)}) differ from the model's "
                           f"({', '.join(meta['classes'])}); use the dataset the model was trained on")
    norm = meta["normalization"]
    return replace(prepared, normalization=Normalization(tuple(norm["mean"]), tuple(norm["std"])))


def export(checkpoint: str | Path, out: str | Path | None = None, precision: str = "fp32", opset: int = 18) -> Path:
    """Export a checkpoint to ONNX (fp32, or fp16 weights with fp32 I/O)."""
    from edgecnn.export.onnx import convert_fp16, export_onnx
    from edgecnn.train.checkpoint import load_checkpoint

    if precision not in ("fp32", "fp16"):
        raise EdgeCNNError(f"export --precision {precision}: use fp32 or fp16 (INT8 files come from `edgecnn quantize`)")
    model, meta = load_checkpoint(checkpoint)
    keep = {k: meta[k] for k in ("arch", "arch_args", "classes", "input_size", "normalization") if k in meta}
    out = Path(out) if out else Path(checkpoint).with_suffix(".onnx" if precision == "fp32" else ".fp16.onnx")
    if precision == "fp32":
        return export_onnx(model, out, meta["input_size"], {**keep, "precision": "fp32"}, opset=opset)
    fp32 = export_onnx(model, out.with_name(out.stem + ".fp32-tmp.onnx"), meta["input_size"],
                       {**keep, "precision": "fp32"}, opset=opset)
    try:
        return convert_fp16(fp32, out)
    finally:
        fp32.unlink(missing_ok=True)


def quantize(checkpoint: str | Path, precision: str, *, data: str | Path | None = None, out_dir: str | Path | None = None,
             options: QuantizeConfig | None = None, opset: int = 18, seed: int = 0) -> dict[str, Any]:
    """Build one precision variant of a checkpoint and measure it on the test split; returns artefact + metrics."""
    from edgecnn.export.onnx import export_onnx
    from edgecnn.train.checkpoint import load_checkpoint
    from edgecnn.variants import build_artefact, measure_precision

    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    meta = {k: meta[k] for k in ("arch", "arch_args", "classes", "input_size", "normalization") if k in meta}
    prepared = data_for_checkpoint(checkpoint, meta, Path(data) if data else None, seed)
    cfg = ExperimentConfig(quantize=options or QuantizeConfig(), seed=seed,
                           evaluate={"latency_batches": [1], "latency_repeats": 10},
                           export={"opset": opset}, model={"name": meta["arch"]})
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"{checkpoint.stem}-{precision}"
    fp32_onnx = None
    if precision not in ("fp32", "fp64", "bf16"):
        fp32_onnx = export_onnx(model, out_dir / "model.onnx", meta["input_size"], {**meta, "precision": "fp32"}, opset=opset)
    artefact = build_artefact(precision, model, meta, prepared, cfg, out_dir, fp32_onnx)
    from edgecnn.train.trainer import predict_logits

    fp32_preds = predict_logits(model, prepared.splits["test"], prepared.normalization).argmax(1)
    metrics, _ = measure_precision(precision, model, artefact, prepared, cfg, out_dir, fp32_preds)
    return {"artefact": str(artefact), "precision": precision, "metrics": metrics}


def quantize_lowbit(checkpoint: str | Path, precision: str = "w4a4", *, bits: dict[str, Any] | None = None,
                    data: str | Path | None = None, out_dir: str | Path | None = None, epochs: int = 3,
                    lr: float = 5e-4, targets: list[str] | None = None, parity_images: int = 512,
                    seed: int = 0) -> dict[str, Any]:
    """Low-bit QAT of a checkpoint with Brevitas (``precision`` wXaY/binary/ternary, refined per layer by ``bits``),
    QONNX export, parity with qonnx, sparsity, packed size and dataflow estimates; returns artefact + metrics."""
    from edgecnn.compress.lowbit_sweep import check_available, run_variant
    from edgecnn.config import LowbitConfig
    from edgecnn.train.checkpoint import load_checkpoint

    check_available()
    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    prepared = data_for_checkpoint(checkpoint, meta, Path(data) if data else None, seed)
    name = precision if bits is None else f"{precision}-custom"
    spec = None
    if bits is not None:
        from edgecnn.compress.lowbit import LowBitSpec

        spec = LowBitSpec.parse(bits, precision).to_dict()
    options = LowbitConfig(variants=[name], specs={name: spec} if spec else {}, epochs=epochs, lr=lr,
                           parity_images=parity_images, **({"targets": targets} if targets is not None else {}))
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"{checkpoint.stem}-{name}"
    metrics, _ = run_variant(model, meta, prepared, options, name, out_dir, seed=seed)
    return {"artefact": str(out_dir / "model.qonnx.onnx"), "precision": name, "metrics": metrics}


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


def bench(model_path: str | Path, backend: str = "onnxruntime", batches: list[int] = (1, 8, 64), *,
          threads: int | None = None, repeats: int = 20, warmup: int = 5, input_size: int | None = None) -> list[LatencyResult]:
    """Latency/throughput of an ONNX file or an edgecnn checkpoint per batch size on one backend."""
    from edgecnn.measure.runtimes import file_latency, file_predictor

    path = Path(model_path)
    if not path.exists():
        raise EdgeCNNError(f"model not found: {path}; pass an .onnx file or an edgecnn .safetensors checkpoint")
    threads = threads or torch.get_num_threads()
    results = []
    if path.suffix == ".safetensors":
        from edgecnn.train.checkpoint import load_checkpoint

        if backend != "torch":
            raise EdgeCNNError(f"a checkpoint runs on the torch backend; export it first (`edgecnn export {path}`) for {backend}")
        model, meta = load_checkpoint(path)
        for b in batches:
            results.append(torch_latency(model, input_size or meta["input_size"], b, repeats=repeats, warmup=warmup,
                                         threads=threads))
        return results
    if path.suffix != ".onnx":
        raise EdgeCNNError(f"{path} is neither an .onnx file nor a .safetensors checkpoint")
    if backend == "torch":
        raise EdgeCNNError("an ONNX file runs on onnxruntime or openvino, not torch; use --backend onnxruntime")
    shape = onnx_input_shape(path, input_size)
    predict = file_predictor(path, backend, threads)
    for b in batches:
        results.append(file_latency(predict, shape, b, backend, threads, repeats=repeats, warmup=warmup))
    return results


def folder_tensors(folder: str | Path, classes: list[str], input_size: int) -> tuple[TensorSet, int]:
    """All readable images of an ImageFolder as a TensorSet labelled with the model's class indices (matched by
    name); returns (tensors, number of skipped files). A folder class the model does not know is an error."""
    from edgecnn.data.datasets import decode_images, scan_image_folder

    index = scan_image_folder(folder)
    unknown = [c for c in index.classes if c not in classes]
    if unknown:
        raise EdgeCNNError(f"class folder(s) {', '.join(unknown)} in {folder} are not classes of the model "
                           f"({', '.join(classes)}); remove them or use a model trained on them")
    decoded = decode_images(index, input_size)
    remap = np.array([classes.index(c) for c in index.classes])
    keep = np.flatnonzero(decoded.valid)
    labels = torch.as_tensor(remap[np.asarray(index.labels)[keep]], dtype=torch.long)
    return TensorSet(decoded.images[torch.as_tensor(keep)], labels), len(decoded.failures) + len(index.skipped)


def evaluate_file(path: str | Path, folder: str | Path, batch_size: int = 64, backend: str = "onnxruntime") -> dict[str, Any]:
    """Score an edgecnn checkpoint (PyTorch) or a deployable ONNX file (``backend``) on every image of an
    ImageFolder, with the pre-processing stored in the file."""
    from edgecnn.export.onnx import read_metadata
    from edgecnn.measure.accuracy import classification_report
    from edgecnn.measure.runtimes import file_predictor, predict_file

    path = Path(path)
    if path.suffix == ".onnx":
        meta = read_metadata(path)
        if not meta:
            raise EdgeCNNError(f"{path} has no edgecnn metadata (classes, input size, mean/std); export it with `edgecnn export`")
    else:
        from edgecnn.train.checkpoint import load_checkpoint
        from edgecnn.train.trainer import predict_logits

        model, meta = load_checkpoint(path)
    classes: list[str] = meta["classes"]
    data, skipped = folder_tensors(folder, classes, meta["input_size"])
    norm = Normalization(tuple(meta["normalization"]["mean"]), tuple(meta["normalization"]["std"]))
    if path.suffix == ".onnx":
        logits = predict_file(file_predictor(path, backend), data, norm, batch_size)
    else:
        logits = predict_logits(model, data, norm, batch_size=batch_size)
    report = classification_report(data.labels.numpy(), logits.argmax(1).numpy(), classes)
    return {**report.to_dict(), "per_class": report.per_class(), "model": str(path),
            "precision": meta.get("precision", "fp32"), "data": str(folder), "skipped_files": skipped}
