"""The checkpoint boundary: load_checkpoint returns the rebuilt model with its typed CheckpointMeta, read_checkpoint the
file's flat metadata as stored; a file whose metadata cannot describe a model is a one-line error."""
from __future__ import annotations

import pytest
import torch

from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model
from edgecnn.results import CheckpointMeta
from edgecnn.train.checkpoint import (
    LoadedCheckpoint,
    base_meta,
    load_checkpoint,
    model_from_meta,
    read_checkpoint,
    save_checkpoint,
)

TINY = dict(stem_channels=4, channels=[8], blocks=0)
STORED = {"arch": "customnet", "arch_args": TINY, "classes": ["a", "b"], "input_size": 16, "in_channels": 3,
          "resize": "stretch", "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "experiment": "e",
          "precision": "fp32", "epoch": 3}


def _saved(tmp_path, meta=STORED):
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=2, input_size=16, **TINY)
    return model, save_checkpoint(model, tmp_path / "m.safetensors", meta)


def test_load_checkpoint_returns_the_model_and_its_typed_meta(tmp_path):
    model, path = _saved(tmp_path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, LoadedCheckpoint) and isinstance(loaded.meta, CheckpointMeta)
    reloaded, meta = loaded  # unpacks as before
    assert (meta.arch, meta.classes, meta.input_size, meta.arch_args) == ("customnet", ["a", "b"], 16, TINY)
    assert meta.experiment == "e" and meta.extra == {"precision": "fp32", "epoch": 3}
    assert not reloaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v)
    _, _, stored = read_checkpoint(path)  # the file-level reader keeps the flat mapping as stored
    assert stored == STORED and meta.to_dict() == STORED


def test_base_meta_and_model_from_meta_take_the_typed_meta(tmp_path):
    meta = CheckpointMeta.from_dict({**STORED, "pruned": {"method": "unstructured", "sparsity": 0.5}})
    assert base_meta(meta) == {k: STORED[k] for k in ("arch", "arch_args", "classes", "input_size", "in_channels",
                                                      "resize", "normalization", "experiment")}
    assert sum(p.numel() for p in model_from_meta(meta).parameters()) > 0


def test_metadata_without_a_model_description_is_a_one_line_error(tmp_path):
    _, path = _saved(tmp_path, {"arch": "customnet", "classes": ["a", "b"]})
    with pytest.raises(EdgeCNNError, match=r"without input_size, normalization; it cannot be rebuilt") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
