"""Transfer learning: start from pretrained weights, put a new classifier on for the dataset's classes, train
it on the frozen backbone, then optionally unfreeze all or the last N blocks with lower, per-block learning
rates (discriminative LRs). Both phases are trainer.fit runs.

Pretrained sources: an edgecnn checkpoint (any registry model, e.g. trained on other classes), a local
torchvision weights file (safetensors or state dict) or, online, a torchvision weight name (IMAGENET1K_V1).
The pre-processing the weights were trained with (input size and normalization) is matched by default:
torchvision weights carry theirs (ImageNet mean/std, 224 px crop), an edgecnn checkpoint its own.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edgecnn.data.batches import IMAGENET_MEAN, IMAGENET_STD, Normalization
from edgecnn.data.options import DataConfig
from edgecnn.data.prepare import PreparedData
from edgecnn.errors import EdgeCNNError
from edgecnn.models.weights import load_matching, read_state_dict
from edgecnn.train.checkpoint import META_KEY, read_checkpoint
from edgecnn.train.options import TrainConfig, TransferConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    """Input size and normalization a set of pretrained weights expects."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.mean), tuple(self.std))

    @property
    def is_imagenet(self) -> bool:
        return tuple(self.mean) == IMAGENET_MEAN and tuple(self.std) == IMAGENET_STD


def _edgecnn_meta(path: Path) -> dict[str, Any] | None:
    """The edgecnn meta of a safetensors file, or None for other weight files."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(META_KEY)
    except Exception:
        return None
    return json.loads(text) if text else None


def _is_torchvision(arch: str) -> bool:
    from edgecnn.models.registry import model_builder

    return model_builder(arch).__module__.endswith("torchvision_zoo")


def pretrained_preprocessing(arch: str, weights: str | Path) -> Preprocessing | None:
    """What ``weights`` for ``arch`` were trained with; None when unknown (then the data config is kept)."""
    path = Path(str(weights))
    meta = _edgecnn_meta(path)
    if meta is not None:
        norm = meta["normalization"]
        return Preprocessing(int(meta["input_size"]), tuple(norm["mean"]), tuple(norm["std"]),
                             f"checkpoint {path.name}")
    if path.exists() or path.suffix in (".safetensors", ".pt", ".pth", ".bin"):
        if _is_torchvision(arch):  # torchvision's classification weights are ImageNet weights
            return Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, "ImageNet (torchvision weights file)")
        return None
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(arch)
        w = enum.DEFAULT if str(weights) == "DEFAULT" else enum[str(weights).split(".")[-1]]
    except (KeyError, ValueError):
        raise EdgeCNNError(f"'{weights}' is neither a weights file nor a torchvision weight name of {arch}") from None
    t = w.transforms()
    return Preprocessing(int(t.crop_size[0]), tuple(t.mean), tuple(t.std), f"torchvision {w}")


def transfer_data(data: DataConfig, arch: str, weights: str | Path,
                  options: TransferConfig) -> tuple[DataConfig, Normalization | None]:
    """The data config (input size) and normalization that match the weights' pre-processing.

    Apply the normalization to the prepared data with ``dataclasses.replace(prepared, normalization=...)``."""
    prep = pretrained_preprocessing(arch, weights) if options.match_preprocessing else None
    if prep is None:
        return data, None
    size = options.image_size or prep.image_size
    log.info("transfer: matching %s pre-processing: %d px, mean %s, std %s", prep.source, size, prep.mean, prep.std)
    normalize = "imagenet" if prep.is_imagenet else data.normalize
    return data.model_copy(update={"image_size": size, "normalize": normalize}), prep.normalization


@dataclass
class PretrainedModel:
    model: nn.Module
    arch_args: dict[str, Any]  # constructor arguments that rebuild this architecture (checkpoint meta)
    head: str  # the new classifier layer
    new_params: list[str]  # parameters not loaded from the weights (trained in the head phase)
    source: str


def load_pretrained(arch: str, num_classes: int, input_size: int, weights: str | Path,
                    arch_args: dict[str, Any] | None = None, in_channels: int = 3) -> PretrainedModel:
    """``arch`` with ``weights`` loaded wherever names and shapes match and a fresh classifier for ``num_classes``;
    RGB weights used on ``in_channels`` = 1 data get their first convolution's kernels summed over RGB."""
    from edgecnn.models import create_model
    from edgecnn.models.profile import output_layer
    from edgecnn.models.registry import adapt_input_channels

    arch_args = dict(arch_args or {})
    path = Path(str(weights))
    meta = _edgecnn_meta(path)
    tv = _is_torchvision(arch)
    state: dict[str, torch.Tensor] | None  # None: torchvision's own weights, loaded by the builder
    if meta is not None:
        if meta["arch"] != arch:
            raise EdgeCNNError(f"the pretrained checkpoint {path} is a {meta['arch']}, not a {arch}; set the model "
                               f"name to {meta['arch']} or use weights for {arch}")
        state, _, _ = read_checkpoint(path)
        arch_args = {**meta.get("arch_args", {}), **arch_args}
        if tv and "adapt_small_input" not in arch_args:
            from edgecnn.models.torchvision_zoo import small_input_stem

            arch_args["adapt_small_input"] = small_input_stem(int(meta["input_size"]), meta.get("pretrained"), None)
        model = create_model(arch, num_classes=num_classes, input_size=input_size, **arch_args)
        load_matching(model, state, str(path))
    elif tv:
        model = create_model(arch, num_classes=num_classes, input_size=input_size, weights=str(weights), **arch_args)
        arch_args.setdefault("adapt_small_input", False)  # the weights' stem is kept
        state = read_state_dict(path) if path.exists() else None
    else:
        state = read_state_dict(path)
        model = create_model(arch, num_classes=num_classes, input_size=input_size, **arch_args)
        load_matching(model, state, str(path))
    head = output_layer(model, input_size)
    head_module = dict(model.named_modules())[head]
    head_module.reset_parameters()  # a new classifier, even when the class count matches
    own = model.state_dict()
    new = [n for n, _ in model.named_parameters()
           if n.startswith(head + ".") or (state is not None and (n not in state or state[n].shape != own[n].shape))]
    source_channels = int(meta.get("in_channels", 3)) if meta is not None else 3
    if in_channels != source_channels:
        if source_channels != 3:
            raise EdgeCNNError(f"the pretrained checkpoint {path} takes {source_channels} channel(s), the data "
                               f"{in_channels}; set data.channels: {source_channels} or use RGB weights")
        adapt_input_channels(model, in_channels)
    return PretrainedModel(model, arch_args, head, new, str(weights))


def backbone_blocks(model: nn.Module, head: str) -> list[str]:
    """The model's blocks in forward order, for unfreezing the last N: top-level children, with top-level
    Sequential/ModuleList containers split into their children (ResNet layerK.i, MobileNet features.i, CustomNet
    stages); modules without parameters and the classifier are left out."""
    blocks = []
    for name, child in model.named_children():
        parts = list(child.named_children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else []
        for sub_name, sub in (parts or [("", child)]):
            full = f"{name}.{sub_name}" if sub_name else name
            if full == head or not any(True for _ in sub.parameters()):
                continue
            blocks.append(full)
    return blocks


def _block_of(param: str, blocks: list[str]) -> int | None:
    matches = [i for i, b in enumerate(blocks) if param.startswith(b + ".")]
    return max(matches, key=lambda i: len(blocks[i])) if matches else None


def _freeze(model: nn.Module, trainable: set[str], freeze_bn: bool) -> list:
    """requires_grad only for ``trainable``; frozen BatchNorms run in eval mode (their statistics stay fixed)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    hooks = []
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) \
                    and not any(p.requires_grad for p in module.parameters()):
                hooks.append(module.register_forward_pre_hook(_eval_mode))
    return hooks


def _eval_mode(module: nn.Module, _args) -> None:
    module.train(False)


@dataclass
class TransferResult:
    best_checkpoint: Path
    head: str
    blocks: list[str]
    unfrozen: list[str]
    trainable_params: dict[str, int]
    head_fit: dict[str, Any] | None = None
    finetune_fit: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_checkpoint"] = str(self.best_checkpoint)
        return d


def _phase(model: nn.Module, data: PreparedData, cfg: TrainConfig, out_dir: Path, phase: str, hooks: list, *,
           seed: int, meta: dict[str, Any] | None, resume: bool, show_progress: bool, lr_scale=None):
    """One fit() phase into out_dir/phase (freeze hooks removed afterwards); the model ends on its best epoch."""
    from edgecnn.train.trainer import fit

    try:
        r = fit(model, data, cfg, out_dir / phase, seed=seed, meta={**(meta or {}), "phase": phase}, resume=resume,
                show_progress=show_progress, lr_scale=lr_scale)
    finally:
        for h in hooks:
            h.remove()
    state, _, _ = read_checkpoint(r.best_checkpoint)
    model.load_state_dict(state)
    return r


def transfer_learn(model: nn.Module, data: PreparedData, train: TrainConfig, options: TransferConfig,
                   out_dir: str | Path, *, head: str, new_params: list[str] | None = None, seed: int = 0,
                   meta: dict[str, Any] | None = None, resume: bool = False,
                   show_progress: bool = True) -> TransferResult:
    """Phase 1 (``head_epochs``): train ``head`` (and ``new_params``) with the rest frozen. Phase 2 (``train``'s
    epochs, unless ``unfreeze: none``): unfreeze all or the last N blocks, at ``backbone_lr_scale`` times the LR
    (times ``layer_decay`` per block further from the head). Outputs go to out_dir/head and out_dir/finetune."""

    out_dir = Path(out_dir)
    blocks = backbone_blocks(model, head)
    head_params = {n for n, _ in model.named_parameters() if n.startswith(head + ".")} | set(new_params or [])
    counts: dict[str, int] = {}
    head_fit = finetune_fit = None
    best = None
    history: list[dict[str, Any]] = []
    if options.head_epochs:
        hooks = _freeze(model, head_params, options.freeze_bn)
        counts["head"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        cfg = TrainConfig.model_validate({**train.model_dump(), "epochs": options.head_epochs,
                                          "lr": options.head_lr or train.lr})
        r = _phase(model, data, cfg, out_dir, "head", hooks, seed=seed, meta=meta, resume=resume,
                   show_progress=show_progress)
        head_fit, best = r.to_dict(), r.best_checkpoint
        history += [{**row, "phase": "head"} for row in r.history]
    unfrozen: list[str] = []
    if options.unfreeze != "none":
        n = len(blocks) if options.unfreeze == "all" else min(int(options.unfreeze), len(blocks))
        unfrozen = blocks[len(blocks) - n:]
        trainable = head_params | {p for p, _ in model.named_parameters()
                                   if (i := _block_of(p, blocks)) is not None and blocks[i] in unfrozen}
        hooks = _freeze(model, trainable, options.freeze_bn)
        counts["finetune"] = sum(p.numel() for p in model.parameters() if p.requires_grad)

        def lr_scale(name: str) -> float:
            i = _block_of(name, blocks)
            if name in head_params or i is None:
                return 1.0
            return options.backbone_lr_scale * options.layer_decay ** (len(blocks) - 1 - i)

        r = _phase(model, data, train, out_dir, "finetune", hooks, seed=seed + 1, meta=meta, resume=resume,
                   show_progress=show_progress, lr_scale=lr_scale)
        finetune_fit, best = r.to_dict(), r.best_checkpoint
        history += [{**row, "phase": "finetune"} for row in r.history]
    for p in model.parameters():
        p.requires_grad_(True)
    if best is None:
        raise EdgeCNNError("transfer learning with head_epochs: 0 and unfreeze: none trains nothing; set one of them")
    return TransferResult(best, head, blocks, unfrozen, counts, head_fit, finetune_fit, history)


def transfer(arch: str, weights: str | Path, data: PreparedData, train: TrainConfig,
             options: TransferConfig | None = None, out_dir: str | Path = "runs/transfer", *,
             arch_args: dict[str, Any] | None = None, seed: int = 0, meta: dict[str, Any] | None = None,
             resume: bool = False, show_progress: bool = True) -> TransferResult:
    """Load ``weights`` into ``arch`` for ``data``'s classes and run both transfer phases; the checkpoints'
    meta rebuilds the architecture (``arch_args`` as loaded) with nothing else."""
    options = options or TransferConfig()
    torch.manual_seed(seed)
    pre = load_pretrained(arch, len(data.classes), data.image_size, weights, arch_args, data.channels)
    full_meta = {**data.model_meta(arch, pre.arch_args, pretrained=str(weights)).to_dict(), **(meta or {}),
                 "transfer": options.model_dump()}
    return transfer_learn(pre.model, data, train, options, out_dir, head=pre.head, new_params=pre.new_params,
                          seed=seed, meta=full_meta, resume=resume, show_progress=show_progress)
