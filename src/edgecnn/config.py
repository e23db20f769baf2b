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


class HintConfig(_Strict):
    """Feature (hint) distillation between a student layer and a teacher layer, through a learned 1x1 adapter."""

    student: str  # module name in the student, e.g. features.2
    teacher: str  # module name in the teacher, e.g. layer3
    weight: float = Field(1.0, ge=0)


class DistillConfig(_Strict):
    """Knowledge distillation: soft-target KL at temperature T (times T^2) weighted against cross-entropy."""

    teacher: str | None = None  # checkpoint path or registry model name; None: the model of the train stage
    teacher_args: dict[str, Any] = Field(default_factory=dict)  # a registry teacher's constructor arguments
    student: ModelConfig  # any registry model or CustomNet configuration
    temperature: float = Field(2.0, gt=0)
    soft_weight: float = Field(0.25, ge=0)  # weight of T^2 * KL(teacher || student) at temperature T
    hard_weight: float = Field(0.75, ge=0)  # weight of the cross-entropy with the labels
    hints: list[HintConfig] = Field(default_factory=list)
    cache_teacher: Literal["auto", "on", "off"] = "auto"  # auto: cache when augmentation is off and no hints
    control: bool = True  # also train the student without the teacher (same budget) to measure the gain
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the train section for the student
    # seed of the student's (and the control's) initial weights and training, default the experiment's seed: a
    # replicate of the comparison without retraining the teacher or changing the split
    seed: int | None = Field(None, ge=0)
    # function matching (Beyer et al. 2022): each batch is mixed with a shuffled copy of itself (weight ~ Beta(a, a),
    # a = mixup) and the teacher and student see the same mixed images, where the teacher's targets say more than a
    # one-hot label; 0 = off. The teacher then runs every step (no cache); train accuracy is on the mixed images.
    mixup: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> DistillConfig:
        if self.soft_weight + self.hard_weight <= 0:
            raise ValueError("soft_weight + hard_weight must be above 0")
        return self


class PruneConfig(_Strict):
    """Structured (channel) pruning with torch-pruning's dependency graph, or unstructured magnitude pruning."""

    method: Literal["structured", "unstructured"] = "structured"
    importance: Literal["l1", "l2", "bn", "taylor"] = "l2"
    scope: Literal["global", "uniform"] = "global"  # global ranking, or the same ratio in every layer
    ratio: float | None = Field(None, gt=0, lt=1)  # channels removed (structured) / target sparsity (unstructured)
    ratios: dict[str, float] | Literal["auto"] | None = None  # per-layer channel ratios, or auto (sensitivity)
    target: Literal["params", "macs", "latency"] | None = None
    target_ratio: float | None = Field(None, gt=0, lt=1)  # pruned / original of `target` (0.5: half the MACs)
    steps: int = Field(1, ge=1)  # structured: prune rounds interleaved with fine-tuning
    step_epochs: int = Field(1, ge=0)  # fine-tuning epochs between two rounds
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)  # no layer loses more of its channels
    round_to: int | None = Field(None, ge=1)  # keep channel counts multiples of this (SIMD-friendly)
    exclude: list[str] = Field(default_factory=list)  # layers left unpruned (the classifier always is)
    sensitivity_ratios: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    sensitivity_images: int = Field(512, ge=1)  # validation images scored per sensitivity point
    sparsity_steps: int = Field(16, ge=1)  # unstructured: mask updates from 0 to the target sparsity
    ramp: float = Field(0.75, gt=0, le=1)  # unstructured: fraction of fine-tuning over which sparsity ramps up
    latency_threads: int | None = Field(None, ge=1)
    latency_repeats: int = Field(30, ge=3)
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the train section for fine-tuning

    @field_validator("ratios")
    @classmethod
    def _ratios_in_range(cls, v):
        if isinstance(v, dict):
            bad = {k: r for k, r in v.items() if not 0 < r < 1}
            if bad:
                raise ValueError(f"per-layer ratios must lie strictly between 0 and 1, got {bad}")
        return v

    @field_validator("sensitivity_ratios")
    @classmethod
    def _grid_in_range(cls, v):
        if not v or any(not 0 < r < 1 for r in v):
            raise ValueError("sensitivity_ratios must be a non-empty list of values strictly between 0 and 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        if (self.target is None) != (self.target_ratio is None):
            raise ValueError("target and target_ratio go together (e.g. target: macs, target_ratio: 0.5)")
        if self.method == "unstructured":
            if self.ratio is None:
                raise ValueError("unstructured pruning needs ratio: the target sparsity, e.g. 0.5")
            if self.target is not None or self.ratios is not None:
                raise ValueError("unstructured pruning takes ratio (the sparsity), not target or ratios")
            return self
        if self.ratios == "auto" and self.target is None:
            raise ValueError("ratios: auto needs a target (e.g. target: macs, target_ratio: 0.5)")
        if self.target is not None and (self.ratio is not None or isinstance(self.ratios, dict)):
            raise ValueError("give either a target or ratio/ratios, not both")
        if self.target is None and self.ratio is None and self.ratios is None:
            raise ValueError("structured pruning needs a target (target + target_ratio), a ratio or per-layer ratios")
        return self


class TransferConfig(_Strict):
    """Transfer learning: new head trained on a frozen backbone, then optional fine-tuning with lower LRs."""

    weights: str | None = None  # local weights file, edgecnn checkpoint or torchvision weight name (default: model.weights)
    head_epochs: int = Field(3, ge=0)
    head_lr: float | None = Field(None, gt=0)  # default: train.lr
    unfreeze: Literal["all", "none"] | int = "all"  # after the head phase: all blocks, none, or the last N blocks
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)  # LR of unfrozen backbone blocks relative to train.lr
    layer_decay: float = Field(1.0, gt=0, le=1)  # extra LR factor per block going down from the head
    freeze_bn: bool = True  # keep BatchNorm statistics of frozen blocks fixed
    match_preprocessing: bool = True  # resize and normalize as the weights were trained
    image_size: int | None = Field(None, ge=8, le=1024)  # input size instead of the weights' own (e.g. to save time)

    @field_validator("unfreeze")
    @classmethod
    def _positive_blocks(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("unfreeze: give all, none or a number of blocks >= 1")
        return v


#: The seed chapter's heterogeneous net: 4-bit first and last layers, binary weights in between, 4-bit activations.
HETERO_SPEC: dict[str, Any] = {"default": {"w": 1, "a": 4}, "first": {"w": 4, "a": 4}, "last": {"w": 4, "a": 4}}


class LowbitConfig(_Strict):
    """Low-bit QAT sweep with Brevitas (``lowbit: [w8a8, w4a4, w2a2, w1a1, hetero]`` or this mapping)."""

    variants: list[str] = Field(default_factory=lambda: ["w8a8", "w4a4", "w2a2", "hetero"])
    specs: dict[str, dict[str, Any]] = Field(default_factory=dict)  # named per-layer specs (hetero is built in)
    epochs: int = Field(3, ge=1)  # QAT epochs per variant
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(64, ge=2)
    schedule: Literal["progressive", "direct"] = "progressive"  # warm start from the previous (higher) variant
    targets: list[str] = Field(default_factory=lambda: ["zybo-z7-10", "pynq-z1", "ultra96"])  # dataflow parts
    parity_images: int = Field(512, ge=0)  # test images run through qonnx and compared with PyTorch

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"variants": value} if isinstance(value, list) else value

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("lowbit needs at least one variant, e.g. [w8a8, w4a4]")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _resolvable(self) -> LowbitConfig:
        from edgecnn.compress.lowbit import is_lowbit_precision

        names = {"hetero", *self.specs}
        for v in self.variants:
            if v not in names and not is_lowbit_precision(v):
                raise ValueError(f"unknown low-bit variant '{v}'{did_you_mean(v, sorted(names))}; use wXaY "
                                 "(X, Y in 1..8), binary, ternary, hetero or a name defined under lowbit.specs")
        return self

    def spec(self, variant: str) -> Any:
        """The per-layer spec (or precision name) of a variant."""
        if variant in self.specs:
            return self.specs[variant]
        if variant == "hetero":
            return HETERO_SPEC
        return variant


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
    pretrained: TransferConfig | None = None  # transfer learning in the train stage (weights: model.weights)
    distill: DistillConfig | None = None  # distill the trained model into a smaller student
    prune: PruneConfig | None = None  # prune the trained model and fine-tune it
    lowbit: LowbitConfig | None = None  # low-bit QAT sweep (Brevitas) of the final model, QONNX + dataflow estimates

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

        named = [("model.name", self.model.name)] + [(f"models[{i}].name", m.name) for i, m in enumerate(self.models)]
        if self.distill is not None:
            named.append(("distill.student.name", self.distill.student.name))
        for where, name in named:
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
        for arg in getattr(current, "__args__", ()):  # Optional sections: look inside `X | None`
            if hasattr(arg, "model_fields"):
                current = arg
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
