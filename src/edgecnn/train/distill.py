"""Knowledge distillation: a small student learns from a trained teacher's soft targets (and optionally its
features), trained by trainer.fit with a distillation loss hook; the same student trained without the teacher
on the same budget is the control, so the gain of distillation is a measured number.

Loss (Hinton et al. 2015, as in the seed report): ``hard_weight * CE(student, labels) + soft_weight * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch; the seed used T = 2 with weights
0.25 (soft) / 0.75 (hard). Hints (FitNets, Romero et al. 2015) add ``weight * MSE(adapter(student feature),
teacher feature)`` with a learned 1x1 conv adapter per pair of layers.

Function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and consistent"), with
``mixup > 0``: every batch is mixed with a shuffled copy of itself (one weight lam ~ Beta(mixup, mixup) per batch)
and teacher and student see the same mixed images; the hard term becomes lam * CE(y) + (1 - lam) * CE(y[perm]).

When augmentation and mixup are off (and no hints are used) the teacher's logits are computed once over the
training set and looked up per batch instead of running the teacher every step.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.data.batches import Normalization, TensorSet, iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.data.storage import ImageRows
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.models.options import ModelConfig
from edgecnn.models.profile import profile_model, zero_input
from edgecnn.records import DistillResult
from edgecnn.results import CheckpointMeta
from edgecnn.train.checkpoint import read_checkpoint, save_checkpoint
from edgecnn.train.options import DistillConfig, TrainConfig

log = logging.getLogger(__name__)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            temperature: float = 2.0, soft_weight: float = 0.25, hard_weight: float = 0.75,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """``hard_weight * CE(s, y) + soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T))`` (batch mean)."""
    s, t = student_logits.float(), teacher_logits.float()
    T = float(temperature)
    soft = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean", log_target=True)
    hard = F.cross_entropy(s, labels, label_smoothing=label_smoothing)
    return hard_weight * hard + soft_weight * (T * T) * soft


# ---------------------------------------------------------------------------------------------- hints

class _FeatureTap:
    """Keeps the last output of a module (forward hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output) -> None:
        self.value = output

    def remove(self) -> None:
        self.handle.remove()


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise EdgeCNNError(f"distill.hints: the {role} has no layer '{name}'"
                           f"{did_you_mean(name, [n for n in modules if n])}")
    return modules[name]


def _feature_shape(model: nn.Module, module: nn.Module, input_size: int, name: str) -> torch.Size:
    tap = _FeatureTap(module)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(zero_input(model, input_size))
    finally:
        tap.remove()
        model.train(was_training)
    if not isinstance(tap.value, torch.Tensor) or tap.value.ndim != 4:
        shape = tuple(tap.value.shape) if isinstance(tap.value, torch.Tensor) else type(tap.value).__name__
        raise EdgeCNNError(f"distill.hints: layer '{name}' outputs {shape}, not a feature map (N, C, H, W); "
                           "pick a conv block")
    return tap.value.shape


class DistillStudent(nn.Module):
    """The student plus its hint adapters, trained together (the forward pass is the student's alone)."""

    def __init__(self, student: nn.Module, adapters: list[nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleList(adapters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


# ---------------------------------------------------------------------------------------------- the loss hook

class _IndexedImages:
    """Stands in for a TensorSet's uint8 images and remembers the rows the batch iterator took last, so
    cached teacher logits can be looked up for the batch being trained."""

    def __init__(self, images: torch.Tensor | ImageRows) -> None:
        self.images = images
        self.last: torch.Tensor | None = None

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        self.last = idx
        return self.images[idx]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images.shape


class _TeacherInput:
    """Converts a student batch (student normalization and size) to the teacher's normalization and size."""

    def __init__(self, student_norm: Normalization, teacher_norm: Normalization, student_size: int, teacher_size: int):
        self.same_norm = (tuple(student_norm.mean) == tuple(teacher_norm.mean)
                          and tuple(student_norm.std) == tuple(teacher_norm.std))
        self.s_mean, self.s_std = (torch.tensor(v).view(1, -1, 1, 1) for v in (student_norm.mean, student_norm.std))
        self.t_mean, self.t_std = (torch.tensor(v).view(1, -1, 1, 1) for v in (teacher_norm.mean, teacher_norm.std))
        self.device = torch.device("cpu")
        self.size = teacher_size if teacher_size != student_size else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.device:
            self.s_mean, self.s_std, self.t_mean, self.t_std = (
                t.to(x.device) for t in (self.s_mean, self.s_std, self.t_mean, self.t_std))
            self.device = x.device
        if not self.same_norm:
            x = ((x * self.s_std + self.s_mean) - self.t_mean) / self.t_std
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x


class DistillLoss:
    """fit() loss hook: the KD loss of the student against the teacher (live or cached logits), plus hints."""

    def __init__(self, teacher: nn.Module, options: DistillConfig, to_teacher: _TeacherInput, *,
                 label_smoothing: float = 0.0, cache: torch.Tensor | None = None, index: _IndexedImages | None = None,
                 hints: list[tuple[_FeatureTap, _FeatureTap, int, float]] | None = None) -> None:
        self.teacher, self.options, self.to_teacher = teacher, options, to_teacher
        self.label_smoothing, self.cache, self.index = label_smoothing, cache, index
        self.hints = hints or []

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        lam, perm = 1.0, None
        if o.mixup > 0:  # drawn from torch's global RNG, which fit() checkpoints: a resumed run mixes the same way
            lam = float(torch.distributions.Beta(o.mixup, o.mixup).sample())
            perm = torch.randperm(len(y)).to(x.device)
            x = lam * x + (1 - lam) * x[perm]
        if self.cache is not None:
            rows = self.index.last if self.index is not None else None
            assert rows is not None  # the cache comes with its index, which the batch iterator has just indexed
            teacher_logits = self.cache[rows.cpu()].to(x.device)
        else:
            _follow(self.teacher, x.device)
            with torch.no_grad():
                teacher_logits = self.teacher(self.to_teacher(x)).float()
        logits = model(x)
        loss = kd_loss(logits, teacher_logits, y, temperature=o.temperature, soft_weight=o.soft_weight,
                       hard_weight=o.hard_weight * lam, label_smoothing=self.label_smoothing)
        if perm is not None and lam < 1:  # the soft term does not depend on the labels: add the other image's CE only
            loss = loss + (1 - lam) * o.hard_weight * F.cross_entropy(logits.float(), y[perm],
                                                                     label_smoothing=self.label_smoothing)
        for s_tap, t_tap, i, weight in self.hints:
            s_feat = cast(nn.ModuleList, model.adapters)[i](s_tap.value)  # hints: model is the DistillStudent
            t_value = t_tap.value
            assert t_value is not None  # hints never use the cache: the teacher's forward pass above filled the tap
            t_feat = t_value.detach()
            h, w = min(s_feat.shape[2], t_feat.shape[2]), min(s_feat.shape[3], t_feat.shape[3])
            if s_feat.shape[2:] != (h, w):
                s_feat = F.adaptive_avg_pool2d(s_feat, (h, w))
            if t_feat.shape[2:] != (h, w):
                t_feat = F.adaptive_avg_pool2d(t_feat, (h, w))
            loss = loss + weight * F.mse_loss(s_feat.float(), t_feat.float())
        return loss, logits


def _follow(module: nn.Module, device: torch.device) -> None:
    """Move ``module`` to ``device`` when it is elsewhere (the teacher runs where the student trains)."""
    if next((p.device for p in module.parameters()), device) != device:
        module.to(device)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, data: TensorSet, norm: Normalization, to_teacher: _TeacherInput,
                   batch_size: int = 256) -> torch.Tensor:
    """Teacher logits (fp32) over a tensor set in order, without augmentation."""
    teacher.eval()
    return torch.cat([teacher(to_teacher(x)).float() for x, _ in iterate_batches(data, batch_size, norm)])


# ---------------------------------------------------------------------------------------------- the verb

def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _predictions(model: nn.Module, data: PreparedData, to_input=None) -> dict[str, torch.Tensor | None]:
    """Predicted classes on the val and test splits (None for an empty split)."""
    from edgecnn.measure.predict import predict_logits

    out: dict[str, torch.Tensor | None] = {}
    for split in ("val", "test"):
        subset = data.splits[split]
        if len(subset) == 0:
            out[split] = None
        elif to_input is None:
            out[split] = predict_logits(model, subset, data.normalization).argmax(1)
        else:
            out[split] = teacher_logits(model, subset, data.normalization, to_input).argmax(1)
    return out


def _describe(model: nn.Module, data: PreparedData, input_size: int,
              predictions: dict[str, torch.Tensor | None]) -> dict[str, Any]:
    prof = profile_model(model, input_size)
    out: dict[str, float | None] = {"params": prof.params, "macs": prof.macs, "size_bytes": _state_bytes(model)}
    for split, pred in predictions.items():
        out[f"{split}_accuracy"] = None if pred is None else float((pred == data.splits[split].labels).float().mean())
    return out


def _paired_test(student_pred: torch.Tensor, control_pred: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Student vs control on the test images: who alone gets which right, and whether the split is significant."""
    from edgecnn.measure.accuracy import paired_comparison

    cmp = paired_comparison(labels, student_pred, control_pred)
    return {"student_only_correct": cmp["a_only_correct"], "control_only_correct": cmp["b_only_correct"],
            "mcnemar_p": cmp["mcnemar_p"], "images": len(labels)}


def _num_outputs(model: nn.Module, input_size: int) -> int:
    was_training = model.training
    with torch.no_grad():
        out = model.eval()(zero_input(model, input_size))
    model.train(was_training)
    return int(out.shape[1])


def distill_model(teacher: nn.Module, student: nn.Module, data: PreparedData, train: TrainConfig,
                  options: DistillConfig, out_dir: str | Path, *, teacher_meta: CheckpointMeta,
                  student_meta: dict[str, Any], seed: int = 0, resume: bool = False,
                  show_progress: bool = True, trained_control: dict[str, Any] | None = None
                  ) -> DistillResult:
    """Train ``student`` on ``data`` with the KD loss against ``teacher`` (+ hints), and the control without it.

    Writes student/ and control/ (fit outputs: best.safetensors, history.json, ...) and distill.json into
    ``out_dir``. ``teacher_meta`` gives the teacher's classes, input size and normalization (its inputs are
    converted when they differ from the student's). ``trained_control`` (a fit record: FitResult.to_dict()) is a control
    already trained from the same initial weights, data, recipe and seed: it does not depend on the teacher or the
    KD options, so the pipeline trains it once (``train_control``) and reuses it when only those change."""
    out_dir = Path(out_dir)
    t_size = _check_pair(teacher, student, data, teacher_meta)
    to_teacher = _teacher_input(teacher_meta, data, t_size)
    teacher = _frozen(teacher, train)
    torch.manual_seed(seed)
    initial_student = copy.deepcopy(student)  # the control starts from the same weights
    hints, adapters = _hints(student, teacher, options, data.image_size, t_size)
    train_data, cache, index = _teacher_cache(teacher, data, options, to_teacher, bool(hints))
    loss = DistillLoss(teacher, options, to_teacher, label_smoothing=train.label_smoothing, cache=cache, index=index,
                       hints=hints)
    result = _train_student(student, adapters, hints, loss, train_data, train, out_dir / "student", seed=seed,
                            meta=student_meta, resume=resume, show_progress=show_progress)
    control, control_fit, control_path, c_pred = None, None, None, None
    if options.control:
        if trained_control is None:
            trained_control = train_control(initial_student, data, train, out_dir / "control", seed=seed,
                                            meta=student_meta, resume=resume, show_progress=show_progress).to_dict()
        control_fit, control_path = trained_control, Path(trained_control["best_checkpoint"])
        c_pred, control = _trained_control(initial_student, control_path, data)
    s_pred, s_desc, t_desc = _describe_pair(student, teacher, data, t_size, to_teacher)
    gain, paired = None, None
    if control and control["test_accuracy"] is not None:
        gain = s_desc["test_accuracy"] - control["test_accuracy"]
        s_test, c_test = s_pred["test"], None if c_pred is None else c_pred["test"]
        assert s_test is not None and c_test is not None  # a control test accuracy: both predicted the test split
        paired = _paired_test(s_test, c_test, data.splits["test"].labels)
    res = DistillResult(result.best_checkpoint, control_path, t_desc, s_desc, control, gain, cache is not None,
                        options.model_dump(), result.to_dict(), control_fit, paired)
    (out_dir / "distill.json").write_text(json.dumps(res.to_dict(), indent=1, default=str))
    return res


def _check_pair(teacher: nn.Module, student: nn.Module, data: PreparedData, teacher_meta: CheckpointMeta) -> int:
    """The teacher's input size, once teacher, student and data are known to share their classes."""
    size = data.image_size
    t_size = int(teacher_meta.input_size)
    if teacher_meta.in_channels != data.channels:
        raise EdgeCNNError(f"the teacher takes {teacher_meta.in_channels}-channel images, the data has {data.channels}"
                           f"; set data.channels: {teacher_meta.in_channels} to distill from it")
    n_classes = len(data.classes)
    t_out, s_out = _num_outputs(teacher, t_size), _num_outputs(student, size)
    if t_out != s_out or s_out != n_classes:
        raise EdgeCNNError(f"the teacher predicts {t_out} classes and the student {s_out} (the data has {n_classes}); "
                           "distill between models trained for the same classes")
    t_classes = teacher_meta.classes
    if t_classes and list(t_classes) != list(data.classes):
        raise EdgeCNNError(f"the teacher's classes ({', '.join(t_classes)}) differ from the data's "
                           f"({', '.join(data.classes)}); distill on the dataset the teacher was trained on")
    return t_size


def _teacher_input(teacher_meta: CheckpointMeta, data: PreparedData, t_size: int) -> _TeacherInput:
    """The conversion of student batches to the teacher's normalization and input size."""
    t_norm_meta = teacher_meta.normalization
    t_norm = Normalization(tuple(t_norm_meta["mean"]), tuple(t_norm_meta["std"])) if t_norm_meta else data.normalization
    return _TeacherInput(data.normalization, t_norm, data.image_size, t_size)


def _frozen(teacher: nn.Module, train: TrainConfig) -> nn.Module:
    """The teacher in fp32 eval mode without gradients, in the student's memory layout when that is fixed."""
    teacher = teacher.float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if train.channels_last is True:  # "auto" is resolved by the student's fit; the frozen teacher stays contiguous
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher


def _hints(student: nn.Module, teacher: nn.Module, options: DistillConfig, size: int, t_size: int
           ) -> tuple[list[tuple[_FeatureTap, _FeatureTap, int, float]], list[nn.Module]]:
    """Per hint of ``options``: the taps on the student's and the teacher's layer, and a 1x1 conv adapter from the
    student's channels to the teacher's (drawn from torch's global RNG, in the order of the hints)."""
    hints: list[tuple[_FeatureTap, _FeatureTap, int, float]] = []
    adapters: list[nn.Module] = []
    for i, h in enumerate(options.hints):
        s_mod, t_mod = _module(student, h.student, "student"), _module(teacher, h.teacher, "teacher")
        s_shape = _feature_shape(student, s_mod, size, h.student)
        t_shape = _feature_shape(teacher, t_mod, t_size, h.teacher)
        adapters.append(nn.Conv2d(s_shape[1], t_shape[1], 1))
        hints.append((_FeatureTap(s_mod), _FeatureTap(t_mod), i, h.weight))
    return hints, adapters


def _teacher_cache(teacher: nn.Module, data: PreparedData, options: DistillConfig, to_teacher: _TeacherInput,
                   hinted: bool) -> tuple[PreparedData, torch.Tensor | None, _IndexedImages | None]:
    """(training data, cached teacher logits, their batch index): the logits are computed once when every batch
    shows the teacher unaugmented, unmixed training images and no hint needs its features; else (data, None,
    None). ``cache_teacher: on`` where that cannot be is an error."""
    augmenting = data.augmentation.enabled
    if options.cache_teacher == "on" and (augmenting or hinted):
        raise EdgeCNNError("distill.cache_teacher: on needs augmentation off (data.augment all false/0) and no hints; "
                           "use auto")
    if options.cache_teacher == "on" and options.mixup > 0:
        raise EdgeCNNError("distill.cache_teacher: on cannot be used with distill.mixup (the teacher must see each "
                           "mixed batch); use auto")
    if options.cache_teacher == "off" or augmenting or hinted or options.mixup != 0:
        return data, None, None
    cache = teacher_logits(teacher, data.splits["train"], data.normalization, to_teacher)
    index = _IndexedImages(data.splits["train"].images)
    images = cast(torch.Tensor, index)  # duck-typed: it indexes and has a shape like the images it wraps
    train_data = replace(data, splits={**data.splits, "train": TensorSet(images, data.splits["train"].labels)})
    log.info("distill: teacher logits cached for %d training images", len(cache))
    return train_data, cache, index


def _train_student(student: nn.Module, adapters: list[nn.Module],
                   hints: list[tuple[_FeatureTap, _FeatureTap, int, float]], loss: DistillLoss, data: PreparedData,
                   train: TrainConfig, out_dir: Path, *, seed: int, meta: dict[str, Any], resume: bool,
                   show_progress: bool):
    """fit() with the distillation loss (the student and its hint adapters together); leaves ``student`` with the
    best epoch's weights in eval mode and its best checkpoint a plain student. Returns fit's FitResult."""
    from edgecnn.train.trainer import fit

    trained = DistillStudent(student, adapters) if hints else student
    try:
        result = fit(trained, data, train, out_dir, seed=seed, meta=meta, resume=resume,
                     show_progress=show_progress, loss_fn=loss)
    finally:
        for s_tap, t_tap, _, _ in hints:
            s_tap.remove()
            t_tap.remove()
    if hints:  # keep a plain student checkpoint (the adapters are training-only)
        state, _, meta = read_checkpoint(result.best_checkpoint)
        if any(k.startswith("student.") for k in state):
            student.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("student.")})
            save_checkpoint(student, result.best_checkpoint, meta)
    state, _, _ = read_checkpoint(result.best_checkpoint)
    student.load_state_dict(state)
    student.eval()
    return result


def _trained_control(initial_student: nn.Module, checkpoint: Path, data: PreparedData
                     ) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
    """The control's predictions and description: ``initial_student`` takes its trained weights."""
    state, _, _ = read_checkpoint(checkpoint)
    initial_student.load_state_dict(state)
    c_pred = _predictions(initial_student.eval(), data)
    return c_pred, _describe(initial_student, data, data.image_size, c_pred)


def _describe_pair(student: nn.Module, teacher: nn.Module, data: PreparedData, t_size: int,
                   to_teacher: _TeacherInput) -> tuple[dict[str, torch.Tensor | None], dict[str, Any], dict[str, Any]]:
    """(student predictions, student description with its size relative to the teacher, teacher description)."""
    s_pred = _predictions(student, data)
    s_desc = _describe(student, data, data.image_size, s_pred)
    teacher = teacher.to(memory_format=torch.contiguous_format)
    t_desc = _describe(teacher, data, t_size, _predictions(teacher, data, to_teacher))
    s_desc["params_vs_teacher"] = s_desc["params"] / t_desc["params"]
    s_desc["macs_vs_teacher"] = s_desc["macs"] / max(1, t_desc["macs"])
    return s_pred, s_desc, t_desc


def train_control(student: nn.Module, data: PreparedData, train: TrainConfig, out_dir: str | Path, *, seed: int,
                  meta: dict[str, Any], resume: bool = False, show_progress: bool = True):
    """The control of a distillation: ``student`` (at its initial weights) trained on the labels alone with the
    same data, recipe and seed as the distilled student. Returns trainer.fit's FitResult."""
    from edgecnn.train.trainer import fit

    return fit(student, data, train, out_dir, seed=seed, meta={**meta, "control": True}, resume=resume,
               show_progress=show_progress)


def student_meta(student: ModelConfig, data: PreparedData, teacher: str,
                 experiment: str | None = None) -> dict[str, Any]:
    """What a distilled student's checkpoint needs to be rebuilt and used on its own."""
    return data.model_meta(student.name, student.args, pretrained=student.weights, experiment=experiment,
                           distilled_from=teacher).to_dict()


def distill(teacher: str | Path, student: ModelConfig | dict[str, Any] | str, *,
            data: str | Path | PreparedData | None = None, options: DistillConfig | None = None,
            train: TrainConfig | None = None, out_dir: str | Path | None = None, seed: int = 0,
            resume: bool = False, show_progress: bool = True) -> DistillResult:
    """Distill ``teacher`` (an edgecnn checkpoint, or a registry model name that is trained first with ``train``)
    into ``student`` (a registry model name or {name, args}) on ``data`` (the teacher's run data by default).

    Results go to ``out_dir`` (default: ``distill-<student>/`` next to the teacher checkpoint, or ``runs/distill``)."""
    from edgecnn.models import create_model, list_models
    from edgecnn.models.registry import check_model_args
    from edgecnn.train.checkpoint import load_checkpoint

    if isinstance(student, str):
        student = ModelConfig(name=student)
    elif isinstance(student, dict):
        student = ModelConfig.model_validate(student)
    if student.name not in list_models():
        raise EdgeCNNError(f"unknown student model '{student.name}'{did_you_mean(student.name, list_models())}")
    check_model_args(student.name, student.args, student.weights)
    options = options or DistillConfig(teacher=str(teacher), student=student)
    train = train or TrainConfig()
    teacher_path = Path(str(teacher))
    if teacher_path.suffix == ".safetensors" or teacher_path.exists():
        t_model, t_meta = load_checkpoint(teacher_path)
        if isinstance(data, PreparedData):
            prepared = data
        else:
            from edgecnn.data.for_model import data_for_checkpoint

            prepared = data_for_checkpoint(teacher_path, t_meta, Path(data) if data else None, seed)
        out_dir = Path(out_dir) if out_dir else teacher_path.parent / f"distill-{student.name}"
    else:
        if str(teacher) not in list_models():
            raise EdgeCNNError(f"teacher '{teacher}' is neither a checkpoint file nor a registry model"
                               f"{did_you_mean(str(teacher), list_models())}")
        if data is None:
            raise EdgeCNNError("a registry-model teacher is trained first: pass data (an ImageFolder or PreparedData)")
        from edgecnn.data.options import DataConfig
        from edgecnn.data.prepare import prepare_data
        from edgecnn.train.trainer import fit

        prepared = data if isinstance(data, PreparedData) else prepare_data(DataConfig(root=Path(data)), seed)
        out_dir = Path(out_dir) if out_dir else Path("runs") / "distill"
        torch.manual_seed(seed)
        t_model = create_model(str(teacher), num_classes=len(prepared.classes), input_size=prepared.image_size,
                               in_channels=prepared.channels, **options.teacher_args)
        t_meta = prepared.model_meta(str(teacher), options.teacher_args)
        t_fit = fit(t_model, prepared, train, out_dir / "teacher", seed=seed, meta=t_meta.to_dict(), resume=resume,
                    show_progress=show_progress)
        state, _, _ = read_checkpoint(t_fit.best_checkpoint)
        t_model.load_state_dict(state)
    student_seed = seed if options.seed is None else options.seed  # the split keeps ``seed``
    return distill_model(t_model, new_student(student, prepared, student_seed), prepared, train, options, out_dir,
                         teacher_meta=t_meta, student_meta=student_meta(student, prepared, str(teacher)),
                         seed=student_seed, resume=resume, show_progress=show_progress)


def new_student(student: ModelConfig, data: PreparedData, seed: int) -> nn.Module:
    """The student's initial model, seeded: the distilled student and its control start from the same weights."""
    from edgecnn.train.trainer import new_model

    return new_model(student, data, seed)
