"""Options of training: the ``train:`` section, typed overrides of it, distillation and transfer learning."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecnn.models.options import ModelConfig
from edgecnn.schema import StrictModel, apply_overrides, overrides_model


class ProgressiveResize(StrictModel):
    """Progressive resizing: the first epochs train on smaller images (cost grows with pixels), growing linearly to
    the full size by the ``until`` fraction of the epochs; validation and every later stage see the full size."""

    start: int = Field(..., ge=8, description="Image side in the first epoch, in pixels.")
    until: float = Field(0.5, gt=0, le=1, description="Fraction of the epochs after which images are full size.")
    step: int = Field(8, ge=1, description="Sizes are multiples of this (kernels run best on round sizes).")


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1, le=1_000_000, description="Training epochs.")
    batch_size: int = Field(128, ge=1, description="Images per optimizer step (over all processes together).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer: AdamW, or SGD with momentum.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (optimizer: sgd).")
    scheduler: Literal["onecycle", "cosine", "constant"] = Field("onecycle", description="Learning-rate schedule.")
    warmup_epochs: float = Field(1.0, ge=0, description="Epochs of linear learning-rate warm-up.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="Mixed precision: auto times a few steps "
                                                        "of each candidate on your model and keeps the fastest "
                                                        "(cached per machine and model); bf16, fp16 (with loss "
                                                        "scaling) or off (fp32) are used as given.")
    channels_last: bool | Literal["auto"] = Field("auto", description="Channels-last memory layout; auto: measured "
                                                  "together with amp.")
    early_stop_patience: int | None = Field(None, ge=1, description="Stop after this many epochs without a better "
                                            "validation score (the select_by metric); null: never.")
    # imbalanced data: both keep the epoch length; "sampler" draws the epoch from the seeded order generator, so an
    # epoch stays a pure function of (seed, epoch) and every data-parallel rank sees the same global order
    class_balance: Literal["none", "loss", "sampler"] = Field(
        "none", description="Imbalanced classes: none; loss (each image's cross-entropy weighted by the inverse "
        "training frequency of its class, normalised to a frequency-weighted mean of 1: the loss of a balanced "
        "set); sampler (each epoch draws as many training images with replacement, each with probability "
        "proportional to 1 / its class's count, so every class is drawn equally often).")
    select_by: Literal["accuracy", "macro_f1"] = Field(
        "accuracy", description="Validation metric that picks the best checkpoint and drives early stopping: "
        "accuracy, or macro_f1 (the mean of the per-class F1 scores, which a rare class counts in as much as a "
        "common one).")
    threads: int | None = Field(None, ge=1, description="PyTorch threads of training; null: PyTorch's default.")
    time_limit_min: float | None = Field(None, gt=0, description="Stop within this many minutes of wall time (set-up, "
                                         "validation and checkpoints included: after the first epoch, none starts "
                                         "that would not end in time), keeping the best checkpoint; null: no limit.")
    # auto: the GPU when CUDA is present, else the CPU; cuda / cuda:N must exist (train/device.py)
    device: str = Field("auto", description="auto (a CUDA GPU when present, else the CPU), cpu, cuda or cuda:N; "
                        "asking for a GPU that is not there is an error.")
    # exponential moving average of the weights (and BatchNorm statistics) with this decay per step, e.g. 0.999:
    # validation, the best checkpoint and everything built from it use the averaged weights; None: off
    ema: float | None = Field(None, gt=0, lt=1, description="Exponential moving average of the weights with this "
                              "decay per step, e.g. 0.999: validation, the best checkpoint and every file built from "
                              "it use the averaged weights; null: off.")
    progressive: ProgressiveResize | None = Field(None, description="Progressive resizing: train the first epochs on "
                                                  "smaller images, growing to the full size; null: off.")

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
        off |= {name for name, default in (("class_balance", "none"), ("select_by", "accuracy"))
                if getattr(self, name) == default}
        return self.model_dump(exclude={"threads", "device"} | off)


#: Keys of the train section to change for one use of it (a distillation student, pruning's fine-tuning, one model
#: of several); unset keys keep the experiment's values. Typed, so ``{epochz: 3}`` fails when the config is read.
if TYPE_CHECKING:  # the checker's view of the class built below at import time
    class TrainOverrides(StrictModel):
        """Overrides of TrainConfig (unset keys inherit)."""
else:
    TrainOverrides = overrides_model(TrainConfig, "TrainOverrides")


def merge_train(base: TrainConfig, overrides: Any, source: str = "train overrides") -> TrainConfig:
    """``base`` with ``overrides`` (TrainOverrides or a plain mapping of train keys) applied."""
    if overrides is not None and not isinstance(overrides, TrainOverrides):
        from edgecnn.schema import validate

        overrides = validate(TrainOverrides, overrides, source)
    return apply_overrides(base, overrides, source)


class HintConfig(StrictModel):
    """Feature (hint) distillation between a student layer and a teacher layer, through a learned 1x1 adapter."""

    student: str = Field(description="Module name in the student, e.g. features.2.")
    teacher: str = Field(description="Module name in the teacher, e.g. layer3.")
    weight: float = Field(1.0, ge=0, description="Weight of this hint's loss.")


class DistillConfig(StrictModel):
    """Knowledge distillation: soft-target KL at temperature T (times T^2) weighted against cross-entropy."""

    teacher: str | None = Field(None, description="A checkpoint path or a registry model name; null: the model of "
                                "the train stage.")
    teacher_args: dict[str, Any] = Field(default_factory=dict, description="A registry teacher's constructor "
                                         "arguments.")
    student: ModelConfig = Field(description="The student: any registry model or CustomNet configuration (keys as "
                                 "in model).")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of the soft targets.")
    soft_weight: float = Field(0.25, ge=0, description="Weight of T^2 x KL(teacher || student) at temperature T.")
    hard_weight: float = Field(0.75, ge=0, description="Weight of the cross-entropy with the labels.")
    hints: list[HintConfig] = Field(default_factory=list, description="Feature hints: a student layer learns a "
                                    "teacher layer's features through a learned 1x1 adapter.")
    cache_teacher: Literal["auto", "on", "off"] = Field("auto", description="Compute the teacher's logits once; "
                                                        "auto: when augmentation is off and there are no hints or "
                                                        "mixup.")
    control: bool = Field(True, description="Also train the student without the teacher (same budget, its own "
                          "stage distill-control/) to measure the gain.")
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="Keys of the train section to change "
                                  "for the student.")
    # seed of the student's (and the control's) initial weights and training, default the experiment's seed: a
    # replicate of the comparison without retraining the teacher or changing the split
    seed: int | None = Field(None, ge=0, description="Seed of the student's and the control's initial weights and "
                             "training (replicates); the split stays; null: the experiment's seed.")
    # function matching (Beyer et al. 2022): each batch is mixed with a shuffled copy of itself (weight ~ Beta(a, a),
    # a = mixup) and the teacher and student see the same mixed images, where the teacher's targets say more than a
    # one-hot label; 0 = off. The teacher then runs every step (no cache); train accuracy is on the mixed images.
    mixup: float = Field(0.0, ge=0, description="Function matching: each batch is mixed with a shuffled copy of "
                         "itself (weight ~ Beta(a, a), a = mixup) and teacher and student see the same mixed images; "
                         "0 = off.")

    @model_validator(mode="after")
    def _some_weight(self) -> DistillConfig:
        if self.soft_weight + self.hard_weight <= 0:
            raise ValueError("soft_weight + hard_weight must be above 0")
        return self


class TransferConfig(StrictModel):
    """Transfer learning: new head trained on a frozen backbone, then optional fine-tuning with lower LRs."""

    # local weights file, edgecnn checkpoint or torchvision weight name (default: model.weights)
    weights: str | None = Field(None, description="A local weights file, an edgecnn checkpoint or a torchvision "
                                "weight name; null: model.weights.")
    head_epochs: int = Field(3, ge=0, description="Epochs training the new classifier on the frozen backbone.")
    head_lr: float | None = Field(None, gt=0, description="Learning rate of the head phase; null: train.lr.")
    unfreeze: Literal["all", "none"] | int = Field("all", description="After the head phase, fine-tune all blocks, "
                                                   "none, or the last N blocks (for train.epochs).")
    backbone_lr_scale: float = Field(0.1, gt=0, le=1, description="Learning rate of the unfrozen backbone blocks "
                                     "relative to train.lr.")
    layer_decay: float = Field(1.0, gt=0, le=1, description="Extra learning-rate factor per block going down from "
                               "the head.")
    freeze_bn: bool = Field(True, description="Keep the BatchNorm statistics of frozen blocks fixed.")
    match_preprocessing: bool = Field(True, description="Resize and normalize the images as the weights were "
                                      "trained.")
    image_size: int | None = Field(None, ge=8, le=1024, description="Input size instead of the weights' own (e.g. to "
                                   "save time); null: the weights' own.")

    @field_validator("unfreeze")
    @classmethod
    def _positive_blocks(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("unfreeze: give all, none or a number of blocks >= 1")
        return v
