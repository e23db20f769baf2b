"""The typed records of the run's stages (train, distill, prune): what a stage returns to its caller, what its
stage.json stores and what the report reads. Each is a dataclass with ``to_dict`` (the JSON form, paths as text)
and ``from_dict`` (the same record read back from a finished stage, unknown keys of older records ignored)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Shared JSON round trip of the stage records: Path fields are stored as text and read back as Paths."""

    PATH_FIELDS: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass
        for name in self.PATH_FIELDS:
            d[name] = None if d[name] is None else str(d[name])
        return d

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in d.items() if k in names}
        for name in cls.PATH_FIELDS:
            if values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)


@dataclass
class FitResult(Record):
    """A finished training: checkpoints, the best epoch and its validation accuracy, the history and how it ran."""

    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_val_acc: float
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int | None
    train_seconds: float
    train_images_per_s: float
    amp: str
    history: list[dict[str, float]] = field(default_factory=list)
    numerics: dict[str, Any] = field(default_factory=dict)  # the measured choice of format and layout
    device: str = "cpu"
    ranks: int = 1  # data-parallel processes that trained it
    transfer: dict[str, Any] | None = None  # fine-tuning of pretrained weights: head, unfrozen blocks, phases
    # the validation metric that picked best_epoch (train.select_by: accuracy or macro_f1) and its value there;
    # best_val_acc stays that epoch's accuracy. None: a record from before select_by (picked by accuracy)
    select_by: str = "accuracy"
    best_val_score: float | None = None

    PATH_FIELDS = ("best_checkpoint", "last_checkpoint")


@dataclass
class DistillResult(Record):
    """A distilled student, its control (the same student trained without the teacher) and the comparison."""

    checkpoint: Path  # the distilled student (best validation epoch)
    control_checkpoint: Path | None  # the same student trained without the teacher
    teacher: dict[str, Any]
    student: dict[str, Any]
    control: dict[str, Any] | None
    gain_test_accuracy: float | None  # student - control, test split
    teacher_cached: bool
    options: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    control_fit: dict[str, Any] | None = None
    # test images only the student / only the control classifies right, and the exact McNemar p-value of that split
    paired_test: dict[str, Any] | None = None

    PATH_FIELDS = ("checkpoint", "control_checkpoint")


@dataclass
class PruneResult(Record):
    """A pruned and fine-tuned model: before/after figures, per-layer channels or sparsity, sensitivity."""

    checkpoint: Path
    onnx: Path | None
    method: str
    before: dict[str, Any]
    after: dict[str, Any]
    layers: list[dict[str, Any]]
    options: dict[str, Any]
    ratios: dict[str, float] | None = None
    sensitivity: dict[str, Any] | None = None
    finetune: dict[str, Any] = field(default_factory=dict)

    PATH_FIELDS = ("checkpoint", "onnx")


@dataclass
class LowbitSummary(Record):
    """The low-bit sweep as a whole (lowbit/summary.json): the order the variants ran in, the schedule, the headline
    ratio (the lowest precision within a point of the reference, and its FPS over the reference's per board) and the
    Pareto front (accuracy vs FPS) per board."""

    order: list[str]
    schedule: str
    headline: dict[str, Any]
    pareto: dict[str, list[str]]
