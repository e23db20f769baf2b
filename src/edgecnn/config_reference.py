"""The configuration reference (docs/configuration.md), generated from the option models so that it cannot drift.

``python -m edgecnn.config_reference > docs/configuration.md`` regenerates the page. Every key of an experiment
comes from walking :class:`edgecnn.config.ExperimentConfig` recursively: its type, its default and its
description (the ``Field(description=...)`` of the option model; the few fields defined in config.py itself take
theirs from ``DESCRIPTIONS`` below). The notes on which defaults suit which data are written here, per section.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edgecnn.config import ExperimentConfig, list_precisions

__all__ = ["COMMAND", "DESCRIPTIONS", "NOTES", "main", "render"]

#: The command that writes docs/configuration.md (the page says so in its first lines).
COMMAND = "python -m edgecnn.config_reference > docs/configuration.md"

#: Descriptions of the fields declared without one (those of config.py), keyed ``ClassName.field``.
DESCRIPTIONS: dict[str, str] = {
    "ExperimentConfig.name": "Run name: the run directory is output/name (a plain folder name).",
    "ExperimentConfig.seed": "Seed of the split, the initial weights, the augmentation and every other random "
                             "choice of the run.",
    "ExperimentConfig.output": "Parent folder of the run directories.",
    "ExperimentConfig.data": "Your images: where they are, their size, split, normalization, augmentation, cache.",
    "ExperimentConfig.model": "The network to build and train.",
    "ExperimentConfig.train": "How the model is trained.",
    "ExperimentConfig.evaluate": "How each variant's latency and throughput are measured.",
    "ExperimentConfig.models": "Several models, each run as a sub-run with its own training budget; empty: the "
                               "single model of model.",
    "ExperimentConfig.precisions": "Precision variants of the final model, one results row each (fp32, the "
                                   "reference, always first).",
    "ExperimentConfig.targets": "Hardware targets every variant is estimated on (`edgecnn targets`); [] turns the "
                                "estimates off.",
    "ExperimentConfig.quantize": "Options of the INT8 precisions (int8-ptq, int8-qat, int8-pow2, tflite-int8).",
    "ExperimentConfig.export": "Options of the deployable ONNX files.",
    "ExperimentConfig.pretrained": "Transfer learning in the train stage from pretrained weights; null: train from "
                                   "scratch.",
    "ExperimentConfig.distill": "Distill the trained model into a smaller student; null: off.",
    "ExperimentConfig.prune": "Prune the trained (or distilled) model and fine-tune it; null: off.",
    "ExperimentConfig.lowbit": "Low-bit QAT sweep (Brevitas) of the final model, QONNX files and dataflow "
                               "estimates; null: off.",
    "ExperimentConfig.search": "Hardware-aware search (`edgecnn search`): space, objectives, constraints, study; "
                               "null: no search.",
    "ModelEntry.name": "A registered model (`edgecnn models` lists them).",
    "ModelEntry.label": "Sub-run folder and label in the results table; null: name.",
    "ModelEntry.args": "Keyword arguments of the model's constructor.",
    "ModelEntry.weights": "Initial weights, as model.weights.",
    "ModelEntry.train": "Keys of the top-level train section to change for this model.",
}

#: Per top-level key: which defaults suit which data, and what to change for yours (Markdown, one paragraph).
NOTES: dict[str, str] = {
    "name": "Give each experiment on your data its own name: a rerun of the same name skips every stage whose "
            "inputs are unchanged and resumes an interrupted training; work for changed inputs is moved aside "
            "(`train.prev-<hash>/`), never deleted. `edgecnn run --fresh` starts over (the old folder is renamed, not "
            "deleted); `--name N` overrides the name.",
    "seed": "The split is drawn once per run directory (`split.json`) and reused. For replicates, run the same "
            "config under several seeds and names; with 100 test images, one image is one point of accuracy.",
    "output": "Runs go to `runs/<name>/` under the current folder by default; `edgecnn run --output DIR` changes it.",
    "data": "The defaults are safe for any image dataset: no augmentation that changes what an image means (a "
            "flipped 6 is a 9, a turned street scene has the sky below), brightness/contrast jitter only. For data "
            "that looks the same flipped or turned (aerial and satellite patches such as EuroSAT, microscopy, "
            "textures) turn `hflip`, `vflip` and `rot90` on, as the EuroSAT examples do; for photos of upright "
            "objects, `hflip` alone. `channels: auto` trains on one channel when every image is grayscale (a third "
            "of the first layer's work and of the input bandwidth on an FPGA), else on RGB. Set `image_size` near "
            "your images' own size; images that are not square are stretched by default, `resize: crop` keeps the "
            "centre and `resize: pad` the whole image with borders. `edgecnn data DIR` checks a folder before "
            "training: class balance, sizes, channels, corrupt files and duplicates across the splits, which "
            "inflate every accuracy. With pretrained ImageNet weights, `normalize: imagenet` (or "
            "`pretrained.match_preprocessing`) matches them. Corrupt and non-image files are skipped and counted "
            "in `data.json`. `storage: mmap` trains about as fast as `memory` and keeps resident memory low for "
            "data larger than RAM ([scaling](scaling.md)); `limit_per_class` makes a quick balanced subset to try "
            "a config.",
    "model": "`customnet`, the default, is a parametric CNN (stem, stage widths, kernel sizes, blocks, "
             "downsampling, activation, residual, head width, dropout) sized by `args`; it suits small inputs and "
             "trains from scratch in minutes on a CPU. `customnet_seed` is a fixed 3-conv reference net. The zoo "
             "models suit larger images and transfer learning (`weights` with a `pretrained` section). Inputs under "
             "128 px get a gentler stem unless pretrained weights are loaded. `edgecnn models --input-size 64` lists "
             "the models with their params and MACs at that size; `edgecnn.register_model` adds your own.",
    "train": "The defaults (AdamW, one-cycle at lr 3e-3 with one warm-up epoch, label smoothing 0.1, batch 128) "
             "train small CNNs from scratch on a few thousand to tens of thousands of images; the EuroSAT recipes "
             "in `examples/` start from them. Fine-tuning pretrained weights wants a lower learning rate for the "
             "backbone (`pretrained.backbone_lr_scale`). Leave `amp` and `channels_last` on `auto`: the fastest "
             "choice differs between machines of the same kind, and a GPU is used when present (`device: auto`). "
             "`early_stop_patience` and `time_limit_min` bound runs on data you do not know yet. `ema: 0.999` needs "
             "many steps: on the 10-minute EuroSAT recipe it lost accuracy ([results](results.md)). For imbalanced "
             "classes, `class_balance: loss` (or `sampler`) weighs every class alike and `select_by: macro_f1` "
             "picks the checkpoint that serves the small classes too.",
    "evaluate": "Batch 1 is one image at a time (a camera stream), batch 64 the throughput of offline "
                "processing; add the batch size your application uses. The `openvino` and `litert` backends need "
                "their extras. Accuracy never depends on these keys.",
    "models": "For comparing architectures on your data, each with its own budget (as in "
              "`examples/architectures.yaml`): each entry runs as a sub-run, `runs/<name>/<label>/`, and the parent "
              "folder gets the combined results table. An entry's `train` keys are checked when the file is read.",
    "precisions": "Choose by where the model will run: `int8-ptq` or `int8-qat` for CPUs (ONNX Runtime's integer "
                  "kernels), `int8-pow2` for the Xilinx DPU / AMD NPU, `tflite-int8` for TPU and microcontroller "
                  "flows (LiteRT), `fp16` / `bf16` for GPUs; low-bit `wXaY` for FPGA dataflow belongs in "
                  "`lowbit`. Each row is scored as its deployable file in its own runtime on the test split "
                  "([deployment](deployment.md)). `int8-qat` needs the `int8` extra, `int8-pow2` the `pow2` extra, "
                  "`tflite-int8` the `tflite` extra.",
    "targets": "The default estimates each variant on a DPU board (KV260) and a small dataflow FPGA (PYNQ-Z1). "
               "`edgecnn targets` lists the catalog; `[]` saves time when you do not deploy to an accelerator "
               "([hardware](hardware.md)).",
    "quantize": "The defaults (512 calibration images, min-max, per-channel weights, asymmetric uint8 "
                "activations) suit ReLU CNNs on ONNX Runtime's x86 integer kernels. If INT8 loses accuracy on your "
                "model, try `method: entropy` or `percentile` (activation outliers), `exclude: [first, last]`, or "
                "`int8-qat`. The automatic refinements of `int8-pow2` and `tflite-int8` run only when plain "
                "calibration loses more than 0.3 validation points.",
    "export": "`tta: d4` (8 views) suits data without a canonical orientation, such as aerial images: on the "
              "45-minute EuroSAT recipe it added 0.12 points of median validation accuracy, at 8 passes per image. "
              "`hflip` suits natural photos; keep `none` for text, digits or latency-bound deployments. Test-time "
              "views need `targets: []` and no `lowbit`.",
    "pretrained": "Transfer learning suits small datasets of photos close to ImageNet's. The classifier is replaced "
                  "for your classes and trained `head_epochs` on the frozen backbone (frozen BatchNorm statistics "
                  "too), then all, none or the last N blocks are fine-tuned at `backbone_lr_scale` x the learning "
                  "rate (x `layer_decay` per block further down). The weights: an edgecnn checkpoint, a local "
                  "torchvision weights file or (online) a torchvision weight name. EuroSAT's aerial patches "
                  "reach 98.07% test from scratch ([results](results.md)).",
    "distill": "The loss is hard_weight x CE + soft_weight x T^2 x KL. `cache_teacher` computes the teacher's "
               "logits once when augmentation is off. The control (the same student without the teacher) is its "
               "own stage, `distill-control/`, so changing the teacher, T or the weights does not retrain it; "
               "`seed` makes replicates without retraining the teacher or changing the split. `mixup` is function "
               "matching (Beyer et al. 2022): teacher and student see the same mixed images, so the teacher's "
               "targets carry more than the label. The report gives the test images only the student or only the "
               "control gets right, and the exact McNemar p-value of that split. The same from the CLI on any "
               "teacher checkpoint: `edgecnn distill TEACHER --student NAME [--student-args JSON -T 2 --soft-weight "
               "0.25 --hard-weight 0.75 --mixup A --hint s_layer:t_layer --epochs E --seed N]`.",
    "prune": "Structured pruning gives a smaller dense model that is faster on any runtime; keep `round_to: 16` "
             "on x86 CPUs (it matches ONNX Runtime's AVX-512 NCHWc blocks and is what makes a pruned model fast; "
             "odd counts can even be slower). `ratios: auto` takes per-layer ratios from the sensitivity analysis, "
             "plotted in `prune/sensitivity.png`. Unstructured pruning zeroes weights by magnitude up to the sparsity "
             "`ratio` on a polynomial schedule. A pruned checkpoint stores its layer shapes, so `load_checkpoint`, "
             "`export`, `quantize` and `bench` take it. The same on any checkpoint from the CLI, reporting params, "
             "MACs, ONNX size, ONNX Runtime batch-1 latency and accuracy before and after: `edgecnn prune CHECKPOINT "
             "[--target macs|params|latency --target-ratio 0.5 | --ratio R | --ratios auto|layer=r,..] "
             "[--importance l1|l2|bn|taylor --scope global|uniform --steps N --epochs E]` or "
             "`--method unstructured --ratio S`.",
    "lowbit": "`lowbit` also takes a plain list, e.g. `[w8a8, w4a4, w2a2, w1a1, hetero]`. A bit spec (`specs:` "
              "entry or `edgecnn quantize --bits FILE`) is `{default: {w: 1, a: 4}, first: {w: 4, a: 4}, last: "
              "{w: 4}, \"features.3\": {w: 2}}` (layer or block names of the float model), plus two model-wide "
              "keys: `scaling: power_of_two` (fixed-point scales, as hls4ml and FINN prefer) and `fold_bn: true` "
              "(BatchNorm folded into the convs); together they remove almost all QONNX-vs-PyTorch rounding "
              "differences. For FINN, residual models need `residual: shared` ([deployment](deployment.md)). The "
              "report plots accuracy against FPS and prints the headline ratio.",
    "search": "Trials train for `search.epochs` each, so keep them short on a CPU and retrain the winners with "
              "`retrain_best`; see [search](search.md) for the space syntax, objectives, constraints and workers.",
}

INTRO = """\
An experiment is one YAML file, validated when it is read: an unknown key is an error that names the key, the file
and the close matches (`unknown key 'train.learning_rate' — did you mean: ...`), and `edgecnn run CONFIG --dry-run`
prints what the experiment will do without running it. Every key is optional; the quickstart
(`src/edgecnn/configs/quickstart.yaml`) and `examples/` show complete files. The `train` keys of `distill`, `prune`
and `models` entries change the top-level `train` section for that use and are checked when the file is read.

The pipeline runs train -> distill -> prune -> precision variants -> low-bit sweep (each optional section only when
present); the results table gets fp32 rows for the models before the last one and every precision for the last.
Each section's options live beside the code they configure (`src/edgecnn/*/options.py`; `config.py` composes them).
"""


@dataclass
class Table:
    """One options model at a key path: its rows (key, type, default, description)."""

    path: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The option models an annotation holds (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``, ``int | X``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _suffix(annotation: Any) -> str:
    """How a key path continues into an annotation's model: ``[]`` for a list of them, ``.KEY`` for a mapping."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return next((s for a in get_args(annotation) if (s := _suffix(a))), "")
    if origin is list:
        return "[]"
    if origin is dict:
        return ".KEY"
    return ""


def _overrides_of(model: type[BaseModel]) -> str | None:
    """The top-level section whose keys ``model`` overrides (TrainOverrides: ``train``), else None."""
    for key, info in ExperimentConfig.model_fields.items():
        for section in _models_in(info.annotation):
            if section is not model and set(section.model_fields) == set(model.model_fields):
                return key
    return None


def _yaml(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_unset=True)
    elif isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " / ".join(_yaml(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin is list:
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}" if args else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        over = _overrides_of(annotation)
        return f"keys of {over}" if over else "section"
    if annotation is Any:
        return "any"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> str:
    """The numeric bounds of a field (``Field(ge=1)``: `` (>= 1)``)."""
    signs = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    parts = [f"{sign} {getattr(meta, name)}" for meta in info.metadata for name, sign in signs if hasattr(meta, name)]
    return f" ({', '.join(parts)})" if parts else ""


def _default(info: FieldInfo, nested: bool) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if nested and isinstance(value, BaseModel):
        return "see below"
    return f"`{_yaml(value)}`"


def _description(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    text = info.description or DESCRIPTIONS.get(f"{model.__name__}.{name}", "")
    return " ".join(text.split())


def _tables(model: type[BaseModel], path: str, seen: tuple[type[BaseModel], ...]) -> list[Table]:
    """The table of ``model`` at ``path`` and, after it, the tables of the models nested in it (depth first)."""
    table, nested_tables = Table(path), []
    for name, info in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        description = _description(model, name, info)
        nested = [m for m in _models_in(info.annotation) if not _overrides_of(m)]
        inner = nested[0] if nested else None
        if inner is not None and inner in seen:
            description += f" A section with the keys of `{_path_of(inner, seen, path)}`."
            inner = None
        elif inner is not None:
            sub = key + _suffix(info.annotation)
            description += f" See `{sub}` below."
            nested_tables += _tables(inner, sub, (*seen, inner))
        over = next((o for m in _models_in(info.annotation) if (o := _overrides_of(m))), None)
        if over:
            description += f" Any key of [`{over}`](#{over}), each optional."
        kind = _type(info.annotation).replace("|", "\\|") + _bounds(info)
        table.rows.append((f"`{key}`", kind, _default(info, inner is not None).replace("|", "\\|"),
                           description.replace("|", "\\|")))
    return [table, *nested_tables]


def _path_of(model: type[BaseModel], seen: tuple[type[BaseModel], ...], path: str) -> str:
    """The key path where ``model`` (an ancestor of ``path``) was first documented."""
    parts = path.split(".")
    depth = len(seen) - seen.index(model) - 1
    return ".".join(parts[: len(parts) - depth]) if depth else path


def _markdown(table: Table) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in table.rows]
    return "\n".join(lines)


def _extra_note(key: str) -> str:
    """Lists that come from the registries, so they stay current too."""
    if key == "model":
        from edgecnn.models import list_models

        return "Registered models: " + ", ".join(f"`{m}`" for m in list_models()) + "."
    if key == "precisions":
        return "Registered precisions: " + ", ".join(f"`{p}`" for p in list_precisions()) + \
            " (`wXaY`: low-bit, X-bit weights and Y-bit activations, e.g. `w4a4`)."
    return ""


def render() -> str:
    """The Markdown reference of every experiment key: one section per top-level key."""
    out = [f"<!-- generated by `{COMMAND}`; edit the option models' descriptions, not this page -->",
           "# Configuration reference", "",
           f"This page is generated from the option models: regenerate it with `{COMMAND}`.", "", INTRO.strip(), "",
           "Sections: " + " · ".join(f"[{k}](#{k})" for k in ExperimentConfig.model_fields) + "."]
    for key, info in ExperimentConfig.model_fields.items():
        description = _description(ExperimentConfig, key, info)
        sections = [m for m in _models_in(info.annotation) if not _overrides_of(m)]
        out += ["", f"## {key}", ""] + ([description, ""] if sections else [])
        out += [NOTES[key]] if key in NOTES else []
        if extra := _extra_note(key):
            out += ["", extra]
        if not sections:  # a top-level value: one row
            row = (f"`{key}`", _type(info.annotation) + _bounds(info), _default(info, False), description)
            out += ["", _markdown(Table(key, [row]))]
            continue
        tables = _tables(sections[0], key + _suffix(info.annotation), (sections[0],))
        for i, table in enumerate(tables):
            out += [""] if i == 0 else ["", f"### {table.path}", ""]
            out += [_markdown(table)]
    return "\n".join(out) + "\n"


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
