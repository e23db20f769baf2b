"""Experiment configuration: pydantic models, YAML in, one-line errors with did-you-mean for unknown keys."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgecnn.errors import EdgeCNNError, did_you_mean


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SplitConfig(_Strict):
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)


class AugmentConfig(_Strict):
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    jitter: float = Field(0.1, ge=0, le=0.5)
    crop_pad: int = Field(0, ge=0, le=16)


class DataConfig(_Strict):
    root: Path | None = None  # None: the sample bundled with edgecnn
    download: bool = False  # fetch EuroSAT with torchvision into `root` (online users only)
    image_size: int = Field(64, ge=8, le=1024)
    split: SplitConfig = SplitConfig()
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    augment: AugmentConfig = AugmentConfig()
    limit_per_class: int | None = Field(None, ge=1)
    cache_dir: Path | None = None


class ModelConfig(_Strict):
    name: str = "customnet"
    args: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # local file, or a torchvision weight name when online


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    early_stop_patience: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    time_limit_min: float | None = Field(None, gt=0)  # stop (and keep the best checkpoint) after this long


class EvaluateConfig(_Strict):
    latency_batches: list[int] = Field(default_factory=lambda: [1, 64])
    latency_repeats: int = Field(20, ge=3)
    threads: int | None = Field(None, ge=1)
    backends: list[Literal["torch", "onnxruntime", "openvino"]] = Field(default_factory=lambda: ["torch", "onnxruntime"])


Precision = Literal["fp64", "fp32", "fp16", "bf16", "int8-ptq", "int8-qat"]
PRECISIONS: tuple[str, ...] = ("fp64", "fp32", "fp16", "bf16", "int8-ptq", "int8-qat")


class QuantizeConfig(_Strict):
    calib: int = Field(512, ge=1)  # calibration images drawn from the train split
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    symmetric: bool = False  # symmetric (int8) activations instead of asymmetric uint8
    exclude: list[str] = Field(default_factory=list)  # 'first', 'last' or layer/node names kept in float
    qat_epochs: float = Field(2.0, gt=0)
    qat_lr: float = Field(1e-4, gt=0)
    qat_batch_size: int = Field(64, ge=2)


class ExportConfig(_Strict):
    opset: int = Field(18, ge=13, le=23)


class ModelEntry(_Strict):
    """One model of a multi-model experiment (e.g. the seed report's Table II), with its own training budget."""

    name: str
    label: str | None = None  # sub-run folder and table label (default: name)
    args: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the top-level train section

    @property
    def key(self) -> str:
        return self.label or self.name


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    output: Path = Path("runs")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    models: list[ModelEntry] = Field(default_factory=list)  # several models: one sub-run each
    precisions: list[Precision] = Field(default_factory=lambda: ["fp32"])
    quantize: QuantizeConfig = QuantizeConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("precisions")
    @classmethod
    def _fp32_first(cls, v: list[str]) -> list[str]:
        # fp32 is the reference every other precision is compared with, so it is always measured, first.
        return ["fp32", *[p for p in dict.fromkeys(v) if p != "fp32"]]

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("name must be a plain folder name (no '/' and not starting with '.')")
        return v

    @model_validator(mode="after")
    def _check_model_name(self) -> ExperimentConfig:
        from edgecnn.models import list_models

        for where, name in [("model.name", self.model.name)] + [(f"models[{i}].name", m.name) for i, m in enumerate(self.models)]:
            if name not in list_models():
                raise ValueError(f"{where}: unknown model '{name}'{did_you_mean(name, list_models())}")
        for i, entry in enumerate(self.models):
            try:
                TrainConfig.model_validate({**self.train.model_dump(), **entry.train})
            except ValidationError as exc:
                raise ValueError(format_validation_error(exc, f"models[{i}] ({entry.key}) train", TrainConfig)) from None
        keys = [m.key for m in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError("models: two entries share a name; give them distinct 'label's")
        return self

    def per_model(self) -> list[ExperimentConfig]:
        """One single-model config per entry of ``models`` (run into OUTPUT/NAME/<label>), or [self]."""
        if not self.models:
            return [self]
        configs = []
        for entry in self.models:
            data = self.model_dump()
            data.update(name=entry.key, output=Path(self.output) / self.name, models=[],
                        model={"name": entry.name, "args": entry.args, "weights": entry.weights},
                        train={**self.train.model_dump(), **entry.train})
            configs.append(ExperimentConfig.model_validate(data))
        return configs


def _fields_at(loc: tuple, model: type[BaseModel] = ExperimentConfig) -> list[str]:
    """Field names valid at the parent of ``loc`` (to suggest close matches for an unknown key)."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def format_validation_error(exc: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    """One line per problem, each naming the key path, the file and (for unknown keys) the close matches."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'{did_you_mean(str(loc[-1]), _fields_at(loc, root or ExperimentConfig))}")
        else:
            lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return "; ".join(lines)


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data or {})
    except ValidationError as exc:
        raise EdgeCNNError(format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML (None: the bundled quickstart); ``overrides`` are dotted keys."""
    path = Path(path) if path is not None else quickstart_path()
    if not path.is_file():
        raise EdgeCNNError(f"config file not found: {path}; pass the path of an experiment YAML (see examples/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
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
        node[last] = value
    return parse_config(data, str(path))


def quickstart_path() -> Path:
    """The quickstart experiment shipped inside the package (examples/quickstart.yaml is the same file)."""
    return Path(__file__).parent / "configs" / "quickstart.yaml"
