"""An experiment: the options of every stage composed into one validated YAML (one-line errors, did-you-mean).

Each section's model lives beside the code it configures (data/options.py, train/options.py, ...); this module
only composes them, so it sits above the stages in the layering and may ask their registries (models,
precisions) to validate names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from edgecnn.compress.options import HETERO_SPEC, LowbitConfig, PruneConfig, QuantizeConfig
from edgecnn.data.options import AugmentConfig, DataConfig, SplitConfig
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.export.options import ExportConfig
from edgecnn.measure.options import EvaluateConfig
from edgecnn.models.options import ModelConfig
from edgecnn.names import PlainName
from edgecnn.schema import StrictModel, check_yaml_size, format_validation_error, validate
from edgecnn.study.options import SearchConfig
from edgecnn.train.options import DistillConfig, HintConfig, TrainConfig, TrainOverrides, TransferConfig, merge_train
from edgecnn.variants.precisions import check_precision, list_precisions

#: The precisions whose files are made from the trained network without training again: test-time views
#: (export.tta) are built into these (fp32 ONNX and the INT8 files calibrated from it).
VIEW_PRECISIONS = ("fp32", "int8-ptq", "int8-pow2")

__all__ = ["AugmentConfig", "DataConfig", "DistillConfig", "EvaluateConfig", "ExperimentConfig", "ExportConfig",
           "HETERO_SPEC", "HintConfig", "LowbitConfig", "ModelConfig", "ModelEntry", "PruneConfig", "QuantizeConfig",
           "SplitConfig", "TrainConfig", "TrainOverrides", "TransferConfig", "format_validation_error",
           "list_precisions", "load_config", "parse_config", "quickstart_path"]


def _in_config(check: Any, *args: Any, where: str = "") -> None:
    """Run a registry's check inside a validator: its EdgeCNNError becomes the ValueError pydantic reports with the
    key path and the file."""
    try:
        check(*args)
    except EdgeCNNError as exc:
        raise ValueError(f"{where}{exc}") from None


class ModelEntry(StrictModel):
    """One model of a multi-model experiment (a comparison of architectures), with its own training budget."""

    name: str
    label: PlainName | None = None  # sub-run folder and table label (default: name)
    args: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # the top-level train section's keys to change

    @property
    def key(self) -> str:
        return self.label or self.name


class ExperimentConfig(StrictModel):
    name: PlainName = "experiment"
    seed: int = Field(0, ge=0)
    output: Path = Path("runs")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    models: list[ModelEntry] = Field(default_factory=list)  # several models: one sub-run each
    precisions: list[str] = Field(default_factory=lambda: ["fp32"])  # names of the precision registry
    # hardware targets every variant is estimated on (`edgecnn targets`); [] turns the estimates off
    targets: list[str] = Field(default_factory=lambda: ["kv260", "pynq-z1"])
    quantize: QuantizeConfig = QuantizeConfig()
    export: ExportConfig = ExportConfig()
    pretrained: TransferConfig | None = None  # transfer learning in the train stage (weights: model.weights)
    distill: DistillConfig | None = None  # distill the trained model into a smaller student
    prune: PruneConfig | None = None  # prune the trained model and fine-tune it
    lowbit: LowbitConfig | None = None  # low-bit QAT sweep (Brevitas) of the final model, QONNX + dataflow estimates
    search: SearchConfig | None = None  # hardware-aware search (`edgecnn search`): space, objectives, study

    @field_validator("precisions")
    @classmethod
    def _fp32_first(cls, v: list[str]) -> list[str]:
        for name in v:
            _in_config(check_precision, name)
        # fp32 is the reference every other precision is compared with, so it is always measured, first.
        return ["fp32", *[p for p in dict.fromkeys(v) if p != "fp32"]]

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: list[str]) -> list[str]:
        from edgecnn.hw import get_target

        for name in v:
            _in_config(get_target, name)
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _check_model_name(self) -> ExperimentConfig:
        from edgecnn.models import list_models
        from edgecnn.models.registry import check_model_args

        named = [("model.name", self.model.name)] + [(f"models[{i}].name", m.name) for i, m in enumerate(self.models)]
        if self.distill is not None:
            named.append(("distill.student.name", self.distill.student.name))
        for where, name in named:
            if name not in list_models():
                raise ValueError(f"{where}: unknown model '{name}'{did_you_mean(name, list_models())}")
        # with pretrained: the weights are loaded by transfer learning (any edgecnn checkpoint), not the builder
        built = [("model", self.model.name, self.model.args, None if self.pretrained else self.model.weights)]
        built += [(f"models[{i}]", m.name, m.args, m.weights) for i, m in enumerate(self.models)]
        if self.distill is not None:
            s = self.distill.student
            built.append(("distill.student", s.name, s.args, s.weights))
        for where, name, args, weights in built:
            _in_config(check_model_args, name, args, weights, self.data.image_size, where=f"{where}: ")
        for i, entry in enumerate(self.models):
            merge_train(self.train, entry.train, f"models[{i}] ({entry.key}) train")
        keys = [m.key for m in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError("models: two entries share a name; give them distinct 'label's")
        self._check_views()
        self._check_progressive()
        return self

    def _check_progressive(self) -> None:
        """A progressive start larger than the images would train on upscaled images (or, before, was silently
        ignored): refused where the file is read."""
        trains = [("train", self.train)] + [(f"models[{i}].train", merge_train(self.train, m.train, ""))
                                            for i, m in enumerate(self.models)]
        for where, train in trains:
            if train.progressive is not None and train.progressive.start > self.data.image_size:
                raise ValueError(f"{where}.progressive.start {train.progressive.start} is larger than "
                                 f"data.image_size {self.data.image_size}; start below it (e.g. "
                                 f"{max(8, self.data.image_size // 2)}) or remove train.progressive")

    def _check_views(self) -> None:
        """Test-time views are built into post-training files only, and estimated nowhere (one view per image)."""
        if self.export.tta == "none":
            return
        other = [p for p in self.precisions if p not in VIEW_PRECISIONS]
        if other:
            raise ValueError(f"export.tta: {self.export.tta} is built into the {', '.join(VIEW_PRECISIONS)} files "
                             f"only; remove {', '.join(other)} from precisions or set export.tta: none")
        if self.lowbit is not None:
            raise ValueError("export.tta: low-bit QAT files are single-view; remove lowbit or set export.tta: none")
        if self.targets:
            raise ValueError("export.tta: the hardware estimates count one pass per image, not one per view; set "
                             "targets: [] or export.tta: none")

    def transfer_weights(self) -> str:
        """The weights transfer learning starts from (pretrained.weights, else model.weights)."""
        weights = (self.pretrained.weights if self.pretrained else None) or self.model.weights
        if not weights:
            raise EdgeCNNError("pretrained: needs weights: set pretrained.weights or model.weights to a local weights "
                               "file, an edgecnn checkpoint or (online) a torchvision weight name")
        return weights

    def per_model(self) -> list[ExperimentConfig]:
        """One single-model config per entry of ``models`` (run into OUTPUT/NAME/<label>), or [self]."""
        if not self.models:
            return [self]
        configs = []
        for entry in self.models:
            data = self.model_dump()
            data.update(name=entry.key, output=Path(self.output) / self.name, models=[],
                        model={"name": entry.name, "args": entry.args, "weights": entry.weights},
                        train=merge_train(self.train, entry.train).model_dump())
            configs.append(ExperimentConfig.model_validate(data))
        return configs


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> ExperimentConfig:
    return validate(ExperimentConfig, data or {}, source)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML (None: the bundled quickstart); ``overrides`` are dotted keys."""
    path = Path(path) if path is not None else quickstart_path()
    if not path.is_file():
        raise EdgeCNNError(f"config file not found: {path}; pass the path of an experiment YAML (see examples/)")
    try:
        data = check_yaml_size(yaml.safe_load(path.read_text()) or {}, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise EdgeCNNError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise EdgeCNNError(f"{path}: the top level must be a mapping of keys (name, data, model, train, ...)")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EdgeCNNError(f"{path}: '{part}' is not a section of keys, so {dotted} cannot be set; fix the "
                                   "file")
        node[last] = value
    return parse_config(data, str(path))


def quickstart_path() -> Path:
    """The quickstart experiment shipped inside the package (what `edgecnn run` with no argument runs)."""
    return Path(__file__).parent / "configs" / "quickstart.yaml"


def describe(cfg: ExperimentConfig) -> str:
    """One line per thing an experiment will do (what `edgecnn run --dry-run` prints)."""
    from edgecnn.data.datasets import SAMPLE_ROOT

    steps = [f"data: {cfg.data.root or SAMPLE_ROOT} at {cfg.data.image_size} px",
             f"model: {', '.join(m.key for m in cfg.models) if cfg.models else cfg.model.name}"
             f"{' (transfer learning)' if cfg.pretrained else ''}, {cfg.train.epochs} epochs",
             *([f"distill into {cfg.distill.student.name}"] if cfg.distill else []),
             *([f"prune ({cfg.prune.method})"] if cfg.prune else []),
             f"precisions: {', '.join(cfg.precisions)}",
             *([f"low-bit sweep: {', '.join(cfg.lowbit.variants)}"] if cfg.lowbit else []),
             f"output: {Path(cfg.output) / cfg.name}"]
    return "\n".join(steps)

