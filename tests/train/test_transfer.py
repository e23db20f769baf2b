from __future__ import annotations

import pytest
import torch
from conftest import make_subset

from edgecnn.config import DataConfig, TrainConfig, TransferConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model
from edgecnn.train.checkpoint import load_checkpoint, read_checkpoint
from edgecnn.train.trainer import fit
from edgecnn.train.transfer import (
    backbone_blocks,
    load_pretrained,
    pretrained_preprocessing,
    transfer,
    transfer_data,
)

ARGS = dict(stem_channels=8, channels=[16, 32], blocks=1)
SOURCE_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial"]
TARGET_CLASSES = ["Pasture", "PermanentCrop", "Residential", "River", "SeaLake", "Forest"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny CustomNet "pretrained" on five classes at 24 px (its own normalization), and target data with six
    classes at 32 px: the transfer must resize and normalize as the source was trained."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("transfer")
    src = prepare_data(DataConfig(root=make_subset(out / "src", 20, SOURCE_CLASSES), image_size=24,
                                  split={"val": 0.2, "test": 0.0}), seed=0)
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=5, input_size=24, **ARGS)
    meta = {"arch": "customnet", "arch_args": ARGS, "classes": src.classes, "input_size": 24,
            "normalization": {"mean": list(src.normalization.mean), "std": list(src.normalization.std)}}
    res = fit(model, src, TrainConfig(epochs=3, batch_size=32, amp="off"), out / "source", meta=meta,
              show_progress=False)
    return res.best_checkpoint, meta, make_subset(out / "dst", 20, TARGET_CLASSES), out


def test_preprocessing_of_the_weights_is_matched(pretrained):
    ckpt, meta, target_folder, _ = pretrained
    prep = pretrained_preprocessing("customnet", ckpt)
    assert prep.image_size == 24 and prep.mean == tuple(meta["normalization"]["mean"])
    data_cfg, norm = transfer_data(DataConfig(root=target_folder, image_size=32), "customnet", ckpt, TransferConfig())
    assert data_cfg.image_size == 24 and tuple(norm.mean) == tuple(meta["normalization"]["mean"])
    kept, none = transfer_data(DataConfig(root=target_folder, image_size=32), "customnet", ckpt,
                               TransferConfig(match_preprocessing=False))
    assert kept.image_size == 32 and none is None
    # torchvision weights files are ImageNet weights: 224 px and ImageNet mean/std
    tv = pretrained_preprocessing("resnet18", target_folder / "weights.pth")
    assert tv.image_size == 224 and tv.is_imagenet


def test_new_head_frozen_backbone_then_discriminative_finetuning(pretrained):
    ckpt, meta, target_folder, out = pretrained
    data = prepare_data(DataConfig(root=target_folder, image_size=24, split={"val": 0.2, "test": 0.2}), seed=0)
    pre = load_pretrained("customnet", len(data.classes), 24, ckpt)
    source, _ = load_checkpoint(ckpt)
    # the backbone carries the pretrained weights, the classifier is new and sized for six classes
    torch.testing.assert_close(pre.model.features[0][0].weight, source.features[0][0].weight)
    assert pre.head == "classifier.2" and pre.model.classifier[2].out_features == 6

    blocks = backbone_blocks(pre.model, pre.head)
    assert blocks[0] == "features.0" and pre.head not in blocks
    before = {k: v.clone() for k, v in pre.model.state_dict().items()}
    opts = TransferConfig(head_epochs=2, unfreeze=1, backbone_lr_scale=0.1)
    res = transfer("customnet", ckpt, data, TrainConfig(epochs=1, batch_size=16, amp="off"), opts, out / "t1",
                   seed=0, show_progress=False)
    head_state = load_checkpoint(out / "t1" / "head" / "best.safetensors")[0].state_dict()
    for name, value in before.items():
        if name.startswith("classifier.2."):
            assert not torch.equal(head_state[name], value), name  # the head learned
        else:  # frozen weights and frozen BatchNorm statistics did not move during the head phase
            torch.testing.assert_close(head_state[name], value, msg=name)
    assert res.trainable_params["head"] == sum(p.numel() for p in pre.model.classifier[2].parameters())
    # fine-tuning unfroze only the last block (plus the head), at a tenth of the LR
    assert res.unfrozen == [blocks[-1]]
    final, fmeta = load_checkpoint(res.best_checkpoint)
    final = final.state_dict()
    assert torch.equal(final["features.0.0.weight"], before["features.0.0.weight"])  # still frozen
    changed = [n for n in final if n.startswith(blocks[-1] + ".") and n.endswith("weight")
               and not torch.equal(final[n], head_state[n])]
    assert changed
    assert fmeta.classes == data.classes and fmeta.pretrained == str(ckpt)
    _, _, last_meta = read_checkpoint(out / "t1" / "finetune" / "last.safetensors")
    initial_lrs = sorted({round(g["initial_lr"], 10) for g in last_meta["optimizer"]["param_groups"]})
    assert initial_lrs == [round(0.1 * 3e-3, 10), 3e-3]  # backbone block at 0.1x the head's LR
    assert [r["phase"] for r in res.history] == ["head", "head", "finetune"]


def test_transfer_errors(pretrained):
    ckpt, _, target_folder, out = pretrained
    with pytest.raises(EdgeCNNError, match="is a customnet, not a lenet5"):
        load_pretrained("lenet5", 6, 24, ckpt)
    data = prepare_data(DataConfig(root=target_folder, image_size=24, split={"val": 0.2, "test": 0.2}), seed=0)
    with pytest.raises(EdgeCNNError, match="trains nothing"):
        transfer("customnet", ckpt, data, TrainConfig(epochs=1, amp="off"), TransferConfig(head_epochs=0,
                                                                                           unfreeze="none"),
                 out / "none", show_progress=False)
    with pytest.raises(ValueError, match="unfreeze"):
        TransferConfig(unfreeze=0)
