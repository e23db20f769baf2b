from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_subset
from PIL import Image

from edgecnn.data import datasets
from edgecnn.data.datasets import decode_images, scan_image_folder, stratified_split
from edgecnn.errors import EdgeCNNError


def test_split_is_deterministic_and_stratified():
    labels = np.repeat(np.arange(5), [100, 80, 60, 40, 20])
    a = stratified_split(labels, 0.1, 0.2, seed=3)
    b = stratified_split(labels, 0.1, 0.2, seed=3)
    c = stratified_split(labels, 0.1, 0.2, seed=4)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["train"], c["train"])
    all_idx = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(all_idx.tolist()) == list(range(len(labels)))  # a partition
    for cls, n in enumerate([100, 80, 60, 40, 20]):
        assert (labels[a["test"]] == cls).sum() == round(0.2 * n)
        assert (labels[a["val"]] == cls).sum() == round(0.1 * n)


def test_decode_cache_is_reused_without_decoding(small_folder, tmp_path, monkeypatch):
    index = scan_image_folder(small_folder)
    first = decode_images(index, 64, tmp_path)
    assert not first.from_cache and first.valid.all() and first.images.shape == (300, 3, 64, 64)

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(datasets, "_decode_one", boom)
    second = decode_images(index, 64, tmp_path)
    assert second.from_cache
    assert torch.equal(second.images.tensor(), first.images.tensor())


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeCNNError, match="data folder not found"):
        scan_image_folder(tmp_path / "nope")


def test_folder_without_classes(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(EdgeCNNError, match="no class folders"):
        scan_image_folder(tmp_path)


def test_empty_class_is_named(tmp_path):
    make_subset(tmp_path, 2, ["Forest"])
    (tmp_path / "Empty").mkdir()
    with pytest.raises(EdgeCNNError, match="Empty' has no images"):
        scan_image_folder(tmp_path)


def test_corrupt_non_image_gray_rgba_and_mixed_sizes_are_handled(tmp_path):
    make_subset(tmp_path, 3, ["Forest", "River"])
    (tmp_path / "Forest" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "Forest" / "notes.txt").write_text("hello")
    Image.new("L", (64, 64), 128).save(tmp_path / "River" / "gray.png")
    Image.new("RGBA", (64, 64), (10, 20, 30, 40)).save(tmp_path / "River" / "rgba.png")
    Image.new("RGB", (100, 80), (200, 0, 0)).save(tmp_path / "River" / "big.png")
    index = scan_image_folder(tmp_path)
    assert index.skipped == [("Forest/notes.txt", "not an image file")]
    decoded = decode_images(index, 64, tmp_path / "cache")
    assert [f for f, _ in decoded.failures] == ["Forest/broken.jpg"]
    assert decoded.valid.sum() == len(index.files) - 1
    assert decoded.converted == 2 and decoded.resized == 1
    gray = decoded.images[index.files.index("River/gray.png")]
    assert gray.shape == (3, 64, 64) and (gray == 128).all()


def test_prepare_data_records_and_reuses_split(small_folder, tmp_path):
    from edgecnn.config import DataConfig
    from edgecnn.data.prepare import prepare_data

    cfg = DataConfig(root=small_folder)
    split_file = tmp_path / "split.json"
    first = prepare_data(cfg, seed=1, split_file=split_file)
    assert split_file.exists()
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 240, "val": 30, "test": 30}
    assert set(first.files["test"]).isdisjoint(first.files["train"])
    # The same settings reuse the recorded files (from the decoded cache); another seed draws a new split.
    again = prepare_data(cfg, seed=1, split_file=split_file)
    assert again.files == first.files
    assert again.report["decoded_from_cache"]
    assert prepare_data(cfg, seed=99, split_file=split_file).files != first.files
