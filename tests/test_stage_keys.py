"""The train stage's cache key changes with everything that changes the trained model, so a skipped stage is always
safe to skip (one case per key)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from edgecnn.config import parse_config
from edgecnn.data.batches import Normalization
from edgecnn.data.options import DataConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.pipeline import train_stage_inputs
from edgecnn.stages import content_hash

BASE = {"data": {"limit_per_class": 4}, "train": {"epochs": 1}}


@pytest.fixture(scope="module")
def data(small_folder, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    prepared = prepare_data(DataConfig(root=small_folder, limit_per_class=4), 0, run_dir / "split.json")
    return prepared, run_dir


def _key(cfg_dict, data, run_dir) -> str:
    return content_hash(train_stage_inputs(parse_config(cfg_dict), data, run_dir))


def _with(base=BASE, **sections):
    """A copy of ``base`` with ``section__key=value`` set."""
    cfg = json.loads(json.dumps(base))
    for dotted, value in sections.items():
        node = cfg
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


@pytest.mark.parametrize("change", [
    {"pretrained": {}},  # adding transfer learning
    {"model__weights": "resnet18-weights.pth"},
    {"pretrained__head_epochs": 0},
    {"pretrained__unfreeze": 2},
    {"pretrained__weights": "other.pth"},
    {"pretrained__layer_decay": 0.5},
    {"train__epochs": 2},
    {"train__label_smoothing": 0.0},
    {"model__args": {"channels": [8, 16]}},
    {"data__augment": {"hflip": True}},
    {"data__resize": "crop"},
    {"data__channels": 1},
    {"seed": 1},
], ids=lambda c: next(iter(c)))
def test_each_model_changing_key_changes_the_train_key(change, data):
    prepared, run_dir = data
    base = _with(pretrained={}) if any(k.startswith("pretrained__") for k in change) else _with()
    if "model__weights" in change:  # a model whose builder loads weights
        base = _with(base, model__name="resnet18")
    assert _key(base, prepared, run_dir) != _key(_with(base, **change), prepared, run_dir)


def test_the_prepared_pre_processing_is_in_the_train_key(data):
    """Transfer learning resizes and renormalises the data; a checkpoint trained on other pre-processing is not
    reused even when the data section reads the same."""
    prepared, run_dir = data
    base = _key(_with(), prepared, run_dir)
    assert _key(_with(), replace(prepared, image_size=32), run_dir) != base
    imagenet = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert _key(_with(), replace(prepared, normalization=imagenet), run_dir) != base


def test_the_split_and_a_local_weights_file_are_in_the_train_key(data, tmp_path):
    prepared, run_dir = data
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"one")
    cfg = _with(model__name="resnet18", model__weights=str(weights))
    before = _key(cfg, prepared, run_dir)
    weights.write_bytes(b"two")  # same path, other content
    assert _key(cfg, prepared, run_dir) != before
    split = json.loads((run_dir / "split.json").read_text())
    other = tmp_path / "run"
    other.mkdir()
    split["files"] = {k: list(reversed(v)) for k, v in split.get("files", {}).items()} or {"x": ["y"]}
    (other / "split.json").write_text(json.dumps(split))
    assert _key(_with(), prepared, other) != _key(_with(), prepared, run_dir)


@pytest.mark.parametrize("where", [{"train__threads": 1}, {"train__device": "cpu"}, {"data__storage": "memory"},
                                   {"data__cache_dir": "/elsewhere"}], ids=lambda c: next(iter(c)))
def test_where_and_how_it_runs_does_not_change_the_train_key(where, data):
    """Threads, device and how the cache is read change where a model trains, not the model: a run trained on a GPU
    (or with the cache loaded into memory) is reused on a rerun elsewhere."""
    prepared, run_dir = data
    assert _key(_with(**where), prepared, run_dir) == _key(_with(), prepared, run_dir)
