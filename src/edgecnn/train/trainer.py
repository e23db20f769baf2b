"""Training loop: AdamW/SGD, warmup + cosine/one-cycle LR, label smoothing, bf16/fp16 autocast, channels_last,
class balancing (loss weights or a balanced sampler), early stopping and best checkpoint on validation accuracy or
macro-F1, best/last checkpoints and resume after an interruption; on the CPU or a GPU (``train.device``), alone or
as one rank of a data-parallel group (DDP, started by torchrun).

The epoch order and augmentation are a pure function of (seed, epoch), and the last checkpoint is written
atomically after every epoch, so a run killed mid-epoch resumes at the start of that epoch with the same
batches it would have seen. Under DDP every rank trains on its share of each global batch, rank 0 alone writes
checkpoints and history, and validation numbers are summed over the ranks so all take the same decisions.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.data.batches import TensorSet, iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.devices import describe, resolve_device
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.accuracy import classification_report
from edgecnn.measure.predict import predict_logits
from edgecnn.models.options import ModelConfig
from edgecnn.models.profile import zero_input
from edgecnn.records import FitResult
from edgecnn.train.autotune import DTYPES
from edgecnn.train.autotune import choose as choose_numerics
from edgecnn.train.checkpoint import read_checkpoint, save_checkpoint
from edgecnn.train.distributed import DataParallel
from edgecnn.train.distributed import current as current_group
from edgecnn.train.options import ProgressiveResize, TrainConfig
from edgecnn.train.progress import TrainProgress

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel

log = logging.getLogger(__name__)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base LR at ``step``: linear warmup, then cosine decay (onecycle/cosine) or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    floor = 0.0 if kind == "onecycle" else 0.01
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig,
                   lr_scale: Callable[[str], float] | None = None) -> torch.optim.Optimizer:
    """AdamW/SGD over the trainable parameters; ``lr_scale(name)`` multiplies the LR per parameter
    (discriminative LRs)."""
    # No weight decay on biases and norm scales (standard practice; decaying them hurts small nets).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr_scale is not None:
        by_key: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                by_key.setdefault((float(lr_scale(name)), p.ndim > 1), []).append(p)
        groups = [{"params": ps, "lr": cfg.lr * scale, "weight_decay": cfg.weight_decay if decayed else 0.0}
                  for (scale, decayed), ps in by_key.items()]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able values."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in saved["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


@torch.no_grad()
def progressive_size(epoch: int, epochs: int, full: int, spec: ProgressiveResize | None) -> int:
    """Image side for training epoch ``epoch`` (0-based): from ``spec.start`` growing linearly to ``full`` by the
    ``spec.until`` fraction of the epochs, in multiples of ``spec.step``; ``full`` without a spec. A pure function
    of the epoch, so a resumed run trains at the same sizes."""
    if spec is None or spec.start >= full:
        return full
    ramp = spec.until * epochs
    if epoch >= ramp:
        return full
    size = spec.start + (full - spec.start) * epoch / ramp
    return max(spec.start, min(full, int(size // spec.step * spec.step)))


def _check_smaller_inputs(model: nn.Module, size: int, device: torch.device) -> None:
    """One-line error when the model cannot take the progressive start size (a head sized for the full input)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(zero_input(model, size).to(device))
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeCNNError(f"train.progressive: the model does not take {size}x{size} images ({first_line}); use a "
                           "model with global pooling, a larger progressive.start, or remove train.progressive"
                           ) from None
    finally:
        model.train(was_training)


def _averaged(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """torch's AveragedModel keeping an exponential moving average of ``model``'s weights and buffers (BatchNorm
    statistics), or None when ``decay`` is None."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _shard(data: TensorSet, group: DataParallel) -> TensorSet:
    """Rows ``rank::world`` of a set (this rank's share of an evaluation)."""
    if not group.active:
        return data
    return data.take(torch.arange(group.rank, len(data), group.world))


def _validate(model: nn.Module, val_set: TensorSet, data: PreparedData, channels_last: bool,
              group: DataParallel) -> tuple[float, float, float]:
    """(validation loss, accuracy, macro-F1) over the whole validation split, each rank scoring its share; the
    ranks' predictions are gathered for the F1, which does not add up over shares as the others do."""
    part = _shard(val_set, group)
    logits = predict_logits(model, part, data.normalization, channels_last=channels_last)
    predicted = logits.argmax(1)
    loss_sum = float(F.cross_entropy(logits, part.labels, reduction="sum")) if len(part) else 0.0
    correct = float((predicted == part.labels).sum()) if len(part) else 0.0
    loss_sum, correct, count = group.sum([loss_sum, correct, float(len(part))])
    shares = group.gather((part.labels.cpu(), predicted.cpu()))
    labels, predictions = (torch.cat([share[i] for share in shares]) for i in (0, 1))
    macro_f1 = classification_report(labels, predictions, data.classes).macro_f1
    return loss_sum / count, correct / count, macro_f1


#: The history key of each ``train.select_by`` metric.
SELECT_KEYS = {"accuracy": "val_acc", "macro_f1": "val_macro_f1"}


def select_best(history: list[dict[str, float]], select_by: str) -> tuple[int, float]:
    """(epoch, score) of the best validation ``select_by`` metric (``SELECT_KEYS``) in ``history``; the first such
    epoch on a tie, as an epoch must beat the best so far to replace it. The one rule that picks the best
    checkpoint, drives early stopping and fills FitResult."""
    key = SELECT_KEYS[select_by]
    best = max(history, key=lambda row: row[key])  # max keeps the first of equal rows
    return int(best["epoch"]), float(best[key])


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 loss weight per class, ``train.class_balance: loss``: N / (K * n_c) for a class with n_c of the N
    training ``labels`` (K classes present), i.e. the inverse frequency normalised so the frequency-weighted mean
    is 1 (each class then weighs as in a balanced set, at the loss scale of a balanced set); 0 for a class absent
    from ``labels`` (it is never a target)."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).to(torch.float64)
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights.float()


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of a batch, each image's (label-smoothed) loss times the weight of its class when
    ``weights`` is given. Weighted per image and divided by the batch size, unlike F.cross_entropy's ``weight=``
    whose mean divides by the batch's sum of weights (undoing their normalisation, and giving each data-parallel
    rank its own divisor) and whose smoothing term weighs every output class rather than the image's class."""
    if weights is None:
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    per_image = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction="none")
    return (per_image * weights.to(per_image.device)[labels]).mean()


@dataclass
class _Loop:
    """One training run's working set: where and how it trains (set up by ``_prepare``), and the state carried
    from epoch to epoch (restored by ``_restore`` on resume, advanced by ``_end_epoch``)."""

    model: nn.Module
    net: nn.Module  # the model, wrapped in DistributedDataParallel under DDP
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    numerics: Any  # autotune's Choice
    group: DataParallel
    steps_per_epoch: int
    loss_weights: torch.Tensor | None = None  # per class, train.class_balance: loss (on the training device)
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0
    best_acc: float = -1.0  # validation accuracy of the best epoch (the one train.select_by picked)
    best_score: float = -1.0  # its train.select_by metric
    best_epoch: int = -1
    resumed_from: int | None = None
    elapsed_before: float = 0.0  # training seconds of the run before a resume
    train_time: float = 0.0
    started: float = 0.0  # perf_counter when this process's fit began
    wall_before: float = 0.0  # wall seconds of the run before a resume (set-up, validation and checkpoints too)
    epoch_wall: float = 0.0  # wall seconds of the last epoch, all of it
    seen_images: float = 0
    stopped_early: bool = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return DTYPES[self.numerics.numerics.amp]

    @property
    def channels_last(self) -> bool:
        return self.numerics.numerics.channels_last


@dataclass
class _EpochSums:
    """One epoch's training totals over every rank."""

    loss_sum: float
    correct: float
    count: float
    seconds: float
    size: int  # the image side it trained at


def fit(model: nn.Module, data: PreparedData, cfg: TrainConfig, out_dir: str | Path, *, seed: int = 0,
        meta: dict[str, Any] | None = None, resume: bool = False, show_progress: bool = True,
        loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        lr_scale: Callable[[str], float] | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` on ``data``; write best.safetensors / last.safetensors / history.json into ``out_dir``.

    ``loss_fn(model, x, y) -> (loss, logits)`` replaces the cross-entropy step (distillation, pruning schedules);
    ``lr_scale(param_name)`` gives per-parameter LR multipliers (transfer learning); ``on_epoch(row)`` sees each
    epoch's history row after its checkpoints are written (a search's pruner may raise there to stop the trial).
    """
    out_dir = Path(out_dir)
    group = current_group()
    if group.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    if loss_fn is not None and cfg.class_balance == "loss":
        log.warning("train.class_balance: loss weights only the trainer's own cross-entropy, not this stage's loss "
                    "(distillation, pruning); use class_balance: sampler to balance it")
    started = time.perf_counter()  # the time limit counts everything from here: set-up, validation, checkpoints
    loop = _prepare(model, data, cfg, group, lr_scale)
    loop.started = started
    _restore(loop, out_dir / "last.safetensors", resume, seed, cfg.select_by)
    progress = TrainProgress(cfg.epochs, loop.steps_per_epoch, enabled=show_progress and group.main)
    with progress:
        for epoch in range(loop.start_epoch, cfg.epochs):
            epoch_start = time.perf_counter()
            sums = _train_epoch(loop, epoch, data, cfg, seed, loss_fn, progress)
            row = _end_epoch(loop, epoch, sums, data, cfg, out_dir, meta, progress)
            loop.epoch_wall = time.perf_counter() - epoch_start
            if on_epoch is not None:
                on_epoch(row)
            if _should_stop(loop, epoch, cfg):
                loop.stopped_early = True
                break
    return _result(loop, out_dir, cfg.select_by)


def _prepare(model: nn.Module, data: PreparedData, cfg: TrainConfig, group: DataParallel,
             lr_scale: Callable[[str], float] | None) -> _Loop:
    """Place the model (device, measured numerics, DDP) and make its optimizer, LR schedule, loss scaler and EMA."""
    if cfg.batch_size < group.world:
        raise EdgeCNNError(f"train.batch_size {cfg.batch_size} is smaller than the {group.world} data-parallel "
                           f"processes: each needs at least one image per step; use batch_size >= {group.world} or "
                           "fewer processes (--nproc)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = model.to(device)
    if group.main:  # rank 0 measures; every rank must train in the same format
        numerics = choose_numerics(model, cfg.amp, cfg.channels_last, cfg.batch_size // group.world,
                                   int(data.image_size), device=device)
    numerics = group.broadcast(numerics if group.main else None)
    amp_dtype = DTYPES[numerics.numerics.amp]
    if numerics.numerics.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if group.active:  # gradients are averaged over the ranks; rank 0's weights are broadcast at the start
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ema = _averaged(model, cfg.ema)
    if cfg.progressive is not None:
        _check_smaller_inputs(model, min(cfg.progressive.start, int(data.image_size)), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 needs loss scaling
    optimizer = make_optimizer(model, cfg, lr_scale)
    if len(data.splits["val"]) == 0:
        raise EdgeCNNError("the validation split is empty; set data.split.val above 0 (early stopping and "
                           "best-checkpoint selection need it)")
    steps_per_epoch = math.ceil(len(data.splits["train"]) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.scheduler))
    weights = None
    if cfg.class_balance == "loss":  # from the whole training split: the same on every rank
        weights = class_weights(data.splits["train"].labels, len(data.classes)).to(device)
    return _Loop(model, net, ema, optimizer, scheduler, scaler, device, numerics, group, steps_per_epoch, weights)


def _restore(loop: _Loop, last_path: Path, resume: bool, seed: int, select_by: str) -> None:
    """With ``resume`` and a last checkpoint: weights, optimizer, schedule, scaler, EMA, random state and history as
    they were after its epoch. Else seed this rank's random numbers for a fresh start."""
    group = loop.group
    if not (resume and last_path.exists()):
        torch.manual_seed(seed + group.rank)  # rank 0 draws as a single process would (dropout, mixup)
        return
    state, extra, saved = read_checkpoint(last_path)
    if saved.get("select_by", "accuracy") != select_by:  # best.safetensors holds the other metric's best epoch
        raise EdgeCNNError(f"{last_path} picked its best checkpoint by {saved.get('select_by', 'accuracy')}, not "
                           f"train.select_by {select_by}; resume with the same select_by or start afresh")
    loop.model.load_state_dict(state)
    _restore_optimizer(loop.optimizer, extra, saved["optimizer"])
    loop.scheduler.load_state_dict(saved["scheduler"])
    if "scaler" in saved:
        loop.scaler.load_state_dict(saved["scaler"])
    if loop.ema is not None:
        loop.ema.load_state_dict({k[4:]: v.to(loop.device) for k, v in extra.items() if k.startswith("ema.")})
    torch.set_rng_state(extra.get(f"rng.{group.rank}", extra["rng"]))
    loop.history, loop.best_acc, loop.best_epoch = saved["history"], saved["best_val_acc"], saved["best_epoch"]
    loop.best_score = saved.get("best_val_score", loop.best_acc)  # older checkpoints selected by accuracy
    loop.start_epoch = loop.resumed_from = saved["epoch"] + 1
    loop.elapsed_before = loop.train_time = saved.get("train_seconds", 0.0)
    loop.wall_before = saved.get("wall_seconds", loop.train_time)
    log.info("resuming from %s at epoch %d", last_path, loop.start_epoch + 1)


def _train_epoch(loop: _Loop, epoch: int, data: PreparedData, cfg: TrainConfig, seed: int,
                 loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
                 progress: TrainProgress) -> _EpochSums:
    """One pass over this rank's share of the training split (its order a function of seed and epoch)."""
    group, channels_last = loop.group, loop.channels_last
    loop.model.train()
    t0 = time.perf_counter()
    loss_sum, correct, count = 0.0, 0, 0
    progress.start_epoch(epoch)
    full_size = int(data.image_size)
    size = progressive_size(epoch, cfg.epochs, full_size, cfg.progressive)
    batches = iterate_batches(data.splits["train"], cfg.batch_size, data.normalization, shuffle=True,
                              seed=seed * 100_003 + epoch, augment=data.augmentation,
                              channels_last=channels_last, device=loop.device, rank=group.rank,
                              world=group.world, balance=cfg.class_balance == "sampler")
    for x, y in batches:
        if size != full_size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        loss_value, logits = _step(loop, x, y, cfg, loss_fn)
        if not math.isfinite(loss_value) and not loop.scaler.is_enabled():
            raise EdgeCNNError(f"training diverged (loss {loss_value}) at epoch {epoch + 1}; lower train.lr")
        loss_sum += loss_value * len(y)
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
        progress.step(loss_sum / max(1, count), correct / max(1, count), count / (time.perf_counter() - t0))
    total_loss, total_correct, total_count = group.sum([loss_sum, float(correct), float(count)])
    return _EpochSums(total_loss, total_correct, total_count, time.perf_counter() - t0, size)


def _step(loop: _Loop, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None
          ) -> tuple[float, torch.Tensor]:
    """One optimizer step on a batch (autocast, loss scaling, LR schedule, EMA); returns (loss, logits)."""
    amp_dtype = loop.amp_dtype
    with torch.autocast(loop.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        if loss_fn is None:
            logits = loop.net(x)
            loss = balanced_cross_entropy(logits, y, loop.loss_weights, cfg.label_smoothing)
        else:
            loss, logits = loss_fn(loop.net, x, y)
    loop.optimizer.zero_grad(set_to_none=True)
    loop.scaler.scale(loss).backward()
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    loop.scheduler.step()
    if loop.ema is not None:
        loop.ema.update_parameters(loop.model)
    return loss.item(), logits


def _end_epoch(loop: _Loop, epoch: int, sums: _EpochSums, data: PreparedData, cfg: TrainConfig, out_dir: Path,
               meta: dict[str, Any], progress: TrainProgress) -> dict[str, float]:
    """Validate the epoch's weights, record its history row and write the best and last checkpoints; returns the
    row. No rank leaves before the last checkpoint (the one a rerun resumes from) is written."""
    group = loop.group
    loop.train_time += sums.seconds
    loop.seen_images += sums.count
    scored = loop.model if loop.ema is None else loop.ema.module  # the weights the best checkpoint would keep
    val_loss, val_acc, val_f1 = _validate(scored, data.splits["val"], data, loop.channels_last, group)
    row = {"epoch": epoch + 1, "train_loss": sums.loss_sum / sums.count, "train_acc": sums.correct / sums.count,
           "val_loss": val_loss, "val_acc": val_acc, "val_macro_f1": val_f1,
           "lr": loop.optimizer.param_groups[0]["lr"], "seconds": sums.seconds,
           "images_per_s": sums.count / sums.seconds}
    if cfg.progressive is not None:
        row["image_size"] = sums.size
    loop.history.append(row)
    progress.end_epoch(row)
    best_epoch, best_score = select_best(loop.history, cfg.select_by)
    if best_epoch == epoch + 1:
        loop.best_acc, loop.best_score, loop.best_epoch = val_acc, best_score, best_epoch
        if group.main:
            save_checkpoint(scored, out_dir / "best.safetensors", {**meta, "epoch": epoch + 1, "val_acc": val_acc,
                                                                   "val_macro_f1": val_f1})
    rng = group.gather(torch.get_rng_state())
    if group.main:
        _save_last(loop, epoch, rng, out_dir, meta, cfg.select_by)
    group.barrier()  # no rank runs ahead of the checkpoint a rerun would resume from
    return row


def _save_last(loop: _Loop, epoch: int, rng: list[torch.Tensor], out_dir: Path, meta: dict[str, Any],
               select_by: str) -> None:
    """last.safetensors (everything ``_restore`` reads back: weights, optimizer, schedule, scaler, EMA, every
    rank's random state, history, the best epoch and the metric that picked it) and history.json."""
    opt_tensors, opt_saved = _optimizer_tensors(loop.optimizer)
    ema = loop.ema
    save_checkpoint(loop.model, out_dir / "last.safetensors", {
        **meta, "epoch": epoch, "history": loop.history, "best_val_acc": loop.best_acc,
        "best_val_score": loop.best_score, "select_by": select_by, "best_epoch": loop.best_epoch,
        "optimizer": opt_saved, "scheduler": loop.scheduler.state_dict(),
        "train_seconds": loop.train_time, "wall_seconds": _wall(loop), "scaler": loop.scaler.state_dict(),
        "ranks": loop.group.world,
    }, extra={**opt_tensors, "rng": rng[0], **{f"rng.{r}": state for r, state in enumerate(rng) if r},
              **({} if ema is None else {f"ema.{k}": v for k, v in ema.state_dict().items()})})
    (out_dir / "history.json").write_text(json.dumps(loop.history, indent=1))


def _should_stop(loop: _Loop, epoch: int, cfg: TrainConfig) -> bool:
    """Early stopping (no validation gain for ``early_stop_patience`` epochs) or the time limit (any rank's)."""
    if cfg.early_stop_patience and epoch + 1 - loop.best_epoch >= cfg.early_stop_patience:
        log.info("early stop: no val improvement for %d epochs", cfg.early_stop_patience)
        return True
    if cfg.time_limit_min and loop.group.any(_wall(loop) + loop.epoch_wall > cfg.time_limit_min * 60):
        log.info("time limit of %.1f min: stopping after epoch %d (%.0f s so far; another epoch takes about %.0f s)",
                 cfg.time_limit_min, epoch + 1, _wall(loop), loop.epoch_wall)
        return True
    return False


def _wall(loop: _Loop) -> float:
    """Wall seconds of the whole fit so far, before a resume included."""
    return loop.wall_before + time.perf_counter() - loop.started


def _result(loop: _Loop, out_dir: Path, select_by: str) -> FitResult:
    """The run's record; the model goes back to the CPU."""
    best_acc, best_score, best_epoch = loop.best_acc, loop.best_score, loop.best_epoch
    if best_epoch < 0:  # resumed a run that had already finished
        best_epoch, best_score = select_best(loop.history, select_by)
        best_acc = float(next(row["val_acc"] for row in loop.history if row["epoch"] == best_epoch))
    loop.model.to("cpu")  # callers export, quantize and evaluate on the CPU; the checkpoints are device-free anyway
    seen, amp_dtype = loop.seen_images, loop.amp_dtype
    ips = seen / max(1e-9, loop.train_time - loop.elapsed_before) if seen else 0.0
    return FitResult(out_dir / "best.safetensors", out_dir / "last.safetensors", best_epoch, best_acc,
                     len(loop.history), loop.stopped_early, loop.resumed_from, loop.train_time, ips,
                     str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32", loop.history,
                     loop.numerics.to_dict(), describe(loop.device), loop.group.world,
                     select_by=select_by, best_val_score=best_score)


def new_model(model: ModelConfig, data: PreparedData, seed: int) -> nn.Module:
    """A fresh model of ``model`` for ``data``'s classes and input size, seeded (its initial weights, or the
    ``model.weights`` it starts from)."""
    from edgecnn.models import create_model

    torch.manual_seed(seed)
    return create_model(model.name, num_classes=len(data.classes), input_size=data.image_size,
                        in_channels=data.channels, **model.args,
                        **({"weights": model.weights} if model.weights else {}))


def train_model(model_cfg: ModelConfig, data: PreparedData, cfg: TrainConfig, out_dir: str | Path, *, seed: int = 0,
                experiment: str | None = None, model: nn.Module | None = None, resume: bool = False,
                show_progress: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Train a new model of ``model_cfg`` on prepared data with ``cfg``: the one training of a model from its
    config, used by `edgecnn run`'s train stage and by every search trial. ``model`` is that model when the caller
    built it already with ``new_model`` (a search prices the candidate before training it); see ``fit`` for the
    rest."""
    if model is None:
        model = new_model(model_cfg, data, seed)
    meta = data.model_meta(model_cfg.name, model_cfg.args, pretrained=model_cfg.weights, experiment=experiment)
    return fit(model.train(), data, cfg, out_dir, seed=seed, meta=meta.to_dict(), resume=resume,
               show_progress=show_progress, on_epoch=on_epoch)
