"""Options of training: the ``train:`` section, typed overrides of it, distillation and transfer learning."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecnn.models.options import ModelConfig
from edgecnn.schema import StrictModel, apply_overrides, overrides_model


class ProgressiveResize(StrictModel):
    """Progressive resizing: the first epochs train on smaller images (cost grows with pixels), growing linearly to
    the full size by the ``until`` fraction of the epochs; validation and every later stage see the full size."""

    start: int = Field(..., ge=8)  # image side in the first epoch, pixels
    until: float = Field(0.5, gt=0, le=1)  # fraction of the epochs after which images are full size
    step: int = Field(8, ge=1)  # sizes are multiples of this (kernels run best on round sizes)


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: measured on the model (train/autotune.py)
    channels_last: bool | Literal["auto"] = "auto"  # auto: measured with amp
    early_stop_patience: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    time_limit_min: float | None = Field(None, gt=0)  # stop (and keep the best checkpoint) after this long
    # auto: the GPU when CUDA is present, else the CPU; cuda / cuda:N must exist (train/device.py)
    device: str = "auto"
    # exponential moving average of the weights (and BatchNorm statistics) with this decay per step, e.g. 0.999:
    # validation, the best checkpoint and everything built from it use the averaged weights; None: off
    ema: float | None = Field(None, gt=0, lt=1)
    progressive: ProgressiveResize | None = None  # train the first epochs on smaller images; None: off

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"device {v!r}: use auto, cpu, cuda or cuda:N")
        return v

    def key(self) -> dict:
        """What changes the trained model (not where it trains or with how many threads). An option left at its
        "off" default is left out, so adding one does not retrain the models of earlier runs."""
        off = {name for name in ("ema", "progressive") if getattr(self, name) is None}
        return self.model_dump(exclude={"threads", "device"} | off)


#: Keys of the train section to change for one use of it (a distillation student, pruning's fine-tuning, one model
#: of several); unset keys keep the experiment's values. Typed, so ``{epochz: 3}`` fails when the config is read.
TrainOverrides = overrides_model(TrainConfig, "TrainOverrides")


def merge_train(base: TrainConfig, overrides: Any, source: str = "train overrides") -> TrainConfig:
    """``base`` with ``overrides`` (TrainOverrides or a plain mapping of train keys) applied."""
    if overrides is not None and not isinstance(overrides, TrainOverrides):
        from edgecnn.schema import validate

        overrides = validate(TrainOverrides, overrides, source)
    return apply_overrides(base, overrides, source)


class HintConfig(StrictModel):
    """Feature (hint) distillation between a student layer and a teacher layer, through a learned 1x1 adapter."""

    student: str  # module name in the student, e.g. features.2
    teacher: str  # module name in the teacher, e.g. layer3
    weight: float = Field(1.0, ge=0)


class DistillConfig(StrictModel):
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
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # the train section's keys to change for the student
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


class TransferConfig(StrictModel):
    """Transfer learning: new head trained on a frozen backbone, then optional fine-tuning with lower LRs."""

    # local weights file, edgecnn checkpoint or torchvision weight name (default: model.weights)
    weights: str | None = None
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
