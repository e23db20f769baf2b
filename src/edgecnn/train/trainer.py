"""Training loop: AdamW/SGD, warmup + cosine/one-cycle LR, label smoothing, bf16/fp16 autocast, channels_last,
early stopping on validation accuracy, best/last checkpoints and resume after an interruption; on the CPU or a GPU
(``train.device``), alone or as one rank of a data-parallel group (DDP, started by torchrun).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.data.batches import TensorSet, iterate_batches
from edgecnn.data.prepare import PreparedData
from edgecnn.devices import describe, resolve_device
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.predict import predict_logits
from edgecnn.train.autotune import DTYPES
from edgecnn.train.autotune import choose as choose_numerics
from edgecnn.train.checkpoint import read_checkpoint, save_checkpoint
from edgecnn.train.distributed import DataParallel
from edgecnn.train.distributed import current as current_group
from edgecnn.train.options import ProgressiveResize, TrainConfig
from edgecnn.train.progress import TrainProgress

log = logging.getLogger(__name__)


@dataclass
class FitResult:
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_checkpoint"], d["last_checkpoint"] = str(self.best_checkpoint), str(self.last_checkpoint)
        return d


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
            model(torch.zeros(1, 3, size, size, device=device))
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeCNNError(f"train.progressive: the model does not take {size}x{size} images ({first_line}); use a "
                           "model with global pooling, a larger progressive.start, or remove train.progressive"
                           ) from None
    finally:
        model.train(was_training)


def _averaged(model: nn.Module, decay: float | None) -> nn.Module | None:
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
              group: DataParallel) -> tuple[float, float]:
    """(validation loss, accuracy) over the whole validation split, each rank scoring its share."""
    part = _shard(val_set, group)
    logits = predict_logits(model, part, data.normalization, channels_last=channels_last)
    loss_sum = float(F.cross_entropy(logits, part.labels, reduction="sum")) if len(part) else 0.0
    correct = float((logits.argmax(1) == part.labels).sum()) if len(part) else 0.0
    loss_sum, correct, count = group.sum([loss_sum, correct, float(len(part))])
    return loss_sum / count, correct / count


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
    best_path, last_path = out_dir / "best.safetensors", out_dir / "last.safetensors"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = model.to(device)
    if group.main:  # rank 0 measures; every rank must train in the same format
        numerics = choose_numerics(model, cfg.amp, cfg.channels_last, cfg.batch_size // group.world,
                                   int(data.image_size), device=device)
    numerics = group.broadcast(numerics if group.main else None)
    amp_dtype = DTYPES[numerics.numerics.amp]
    channels_last = numerics.numerics.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if group.active:  # gradients are averaged over the ranks; rank 0's weights are broadcast at the start
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ema = _averaged(model, cfg.ema)
    full_size = int(data.image_size)
    if cfg.progressive is not None:
        _check_smaller_inputs(model, min(cfg.progressive.start, full_size), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 needs loss scaling
    optimizer = make_optimizer(model, cfg, lr_scale)
    train_set, val_set = data.splits["train"], data.splits["val"]
    if len(val_set) == 0:
        raise EdgeCNNError("the validation split is empty; set data.split.val above 0 (early stopping and "
                           "best-checkpoint selection need it)")
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.scheduler))
    meta = dict(meta or {})
    history: list[dict[str, float]] = []
    start_epoch, best_acc, best_epoch, resumed_from = 0, -1.0, -1, None
    elapsed_before = 0.0

    if resume and last_path.exists():
        state, extra, saved = read_checkpoint(last_path)
        model.load_state_dict(state)
        _restore_optimizer(optimizer, extra, saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict({k[4:]: v.to(device) for k, v in extra.items() if k.startswith("ema.")})
        torch.set_rng_state(extra.get(f"rng.{group.rank}", extra["rng"]))
        history, best_acc, best_epoch = saved["history"], saved["best_val_acc"], saved["best_epoch"]
        start_epoch = resumed_from = saved["epoch"] + 1
        elapsed_before = saved.get("train_seconds", 0.0)
        log.info("resuming from %s at epoch %d", last_path, start_epoch + 1)
    else:
        torch.manual_seed(seed + group.rank)  # rank 0 draws as a single process would (dropout, mixup)

    seen_images, train_time = 0, elapsed_before
    stopped_early = False
    progress = TrainProgress(cfg.epochs, steps_per_epoch, enabled=show_progress and group.main)
    with progress:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            t0 = time.perf_counter()
            loss_sum, correct, count = 0.0, 0, 0
            progress.start_epoch(epoch)
            size = progressive_size(epoch, cfg.epochs, full_size, cfg.progressive)
            batches = iterate_batches(train_set, cfg.batch_size, data.normalization, shuffle=True,
                                      seed=seed * 100_003 + epoch, augment=data.augmentation,
                                      channels_last=channels_last, device=device, rank=group.rank,
                                      world=group.world)
            for x, y in batches:
                if size != full_size:
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    if loss_fn is None:
                        logits = net(x)
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                    else:
                        loss, logits = loss_fn(net, x, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                loss_value = loss.item()
                if not math.isfinite(loss_value) and not scaler.is_enabled():
                    raise EdgeCNNError(f"training diverged (loss {loss_value}) at epoch {epoch + 1}; lower train.lr")
                loss_sum += loss_value * len(y)
                correct += int((logits.argmax(1) == y).sum())
                count += len(y)
                progress.step(loss_sum / max(1, count), correct / max(1, count), count / (time.perf_counter() - t0))
            loss_sum, correct, count = group.sum([loss_sum, float(correct), float(count)])
            epoch_s = time.perf_counter() - t0
            train_time += epoch_s
            seen_images += count
            scored = model if ema is None else ema.module  # the weights the best checkpoint would keep
            val_loss, val_acc = _validate(scored, val_set, data, channels_last, group)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_acc": correct / count,
                   "val_loss": val_loss, "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": epoch_s, "images_per_s": count / epoch_s}
            if cfg.progressive is not None:
                row["image_size"] = size
            history.append(row)
            progress.end_epoch(row)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch + 1
                if group.main:
                    save_checkpoint(scored, best_path, {**meta, "epoch": epoch + 1, "val_acc": val_acc})
            rng = group.gather(torch.get_rng_state())
            if group.main:
                opt_tensors, opt_saved = _optimizer_tensors(optimizer)
                save_checkpoint(model, last_path, {
                    **meta, "epoch": epoch, "history": history, "best_val_acc": best_acc, "best_epoch": best_epoch,
                    "optimizer": opt_saved, "scheduler": scheduler.state_dict(), "train_seconds": train_time,
                    "scaler": scaler.state_dict(), "ranks": group.world,
                }, extra={**opt_tensors, "rng": rng[0], **{f"rng.{r}": state for r, state in enumerate(rng) if r},
                          **({} if ema is None else {f"ema.{k}": v for k, v in ema.state_dict().items()})})
                (out_dir / "history.json").write_text(json.dumps(history, indent=1))
            group.barrier()  # no rank runs ahead of the checkpoint a rerun would resume from
            if on_epoch is not None:
                on_epoch(row)
            if cfg.early_stop_patience and epoch + 1 - best_epoch >= cfg.early_stop_patience:
                log.info("early stop: no val improvement for %d epochs", cfg.early_stop_patience)
                stopped_early = True
                break
            if group.any(bool(cfg.time_limit_min and train_time > cfg.time_limit_min * 60)):
                log.info("time limit of %.1f min reached after epoch %d", cfg.time_limit_min, epoch + 1)
                stopped_early = True
                break
    if best_epoch < 0:  # resumed a run that had already finished
        best_acc, best_epoch = max((r["val_acc"], r["epoch"]) for r in history)
    model.to("cpu")  # callers export, quantize and evaluate on the CPU; the checkpoints are device-free anyway
    ips = seen_images / max(1e-9, train_time - elapsed_before) if seen_images else 0.0
    return FitResult(best_path, last_path, best_epoch, best_acc, len(history), stopped_early, resumed_from,
                     train_time, ips, str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32", history,
                     numerics.to_dict(), describe(device), group.world)
