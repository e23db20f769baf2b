"""A dataset is its content, and a split is what drew it: changed images under the same names (same size, mtime put
back) are new data for every stage, a split drawn with another seed, fractions or limit is never reused, and a
decoded cache proves it holds what was written before it is used."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.config import DataConfig
from edgecnn.data.fingerprint import fingerprint_files
from edgecnn.data.prepare import prepare_data


def _bmp_folder(root: Path, per_class: int = 6) -> Path:
    """Two classes of 12x12 BMPs: every file has the same size, so a swap keeps sizes."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (12, 12, 3)) + 120 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.bmp")
    return root


def _swap_keeping_stats(first: Path, second: Path) -> None:
    """Exchange two files' bytes and put their mtimes back: size and mtime say nothing changed."""
    stats = [first.stat(), second.stat()]
    one, two = first.read_bytes(), second.read_bytes()
    assert len(one) == len(two)
    first.write_bytes(two)
    second.write_bytes(one)
    for path, st in zip((first, second), stats):
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _config(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(root=root, image_size=12, cache_dir=tmp_path / "cache", **kw)


def test_replaced_images_under_the_same_names_are_new_data(tmp_path):
    root = _bmp_folder(tmp_path / "data")
    split = tmp_path / "run" / "split.json"
    before = prepare_data(_config(root, tmp_path), 0, split)
    split_before = split.read_bytes()
    _swap_keeping_stats(root / "a" / "0.bmp", root / "b" / "0.bmp")
    after = prepare_data(_config(root, tmp_path), 0, split)
    assert after.report["fingerprint"] != before.report["fingerprint"]
    assert not after.report["decoded_from_cache"]  # the old cache holds the old pixels: not used
    assert split.read_bytes() != split_before  # the same lists, a new fingerprint: every stage's key changes
    assert after.files == before.files
    name = next(n for n in ("train", "val", "test") if "a/0.bmp" in after.files[n])
    row = after.files[name].index("a/0.bmp")
    expected = np.asarray(Image.open(root / "a" / "0.bmp")).transpose(2, 0, 1)
    assert np.array_equal(after.splits[name].images[row].numpy(), expected)


def test_a_changed_split_setting_draws_a_new_split_and_keeps_the_old(tmp_path):
    root = _bmp_folder(tmp_path / "data", per_class=20)
    split = tmp_path / "run" / "split.json"
    first = prepare_data(_config(root, tmp_path), 0, split)
    assert prepare_data(_config(root, tmp_path), 0, split).files == first.files  # same settings: reused
    changes = [({}, 1), ({"split": {"val": 0.3, "test": 0.1}}, 0), ({"limit_per_class": 10}, 0)]
    previous = first
    for n, (change, seed) in enumerate(changes, start=1):
        now = prepare_data(_config(root, tmp_path, **change), seed, split)
        assert now.files != previous.files
        record = json.loads(split.read_text())
        assert record["seed"] == seed and record["train"] == now.files["train"]
        assert (split.parent / f"split.prev-{n}.json").exists()
        previous = now
    assert sum(len(v) for v in previous.files.values()) == 20  # 10 per class


def test_a_cache_whose_rows_were_overwritten_is_decoded_again(tmp_path):
    root = _bmp_folder(tmp_path / "data")
    fresh = prepare_data(_config(root, tmp_path), 0)
    expected = {name: fresh.splits[name].images[:].numpy().copy() for name in ("train", "val", "test")}
    npy = next((tmp_path / "cache").glob("images-*.npy"))
    size = npy.stat().st_size
    with open(npy, "r+b") as f:  # zero the last rows, header and size intact
        f.seek(size - 12 * 12 * 3 * 4)
        f.write(bytes(12 * 12 * 3 * 4))
    again = prepare_data(_config(root, tmp_path), 0)
    assert not again.report["decoded_from_cache"]
    for name in ("train", "val", "test"):
        assert np.array_equal(again.splits[name].images[:].numpy(), expected[name])


@pytest.mark.parametrize("damage", ["garbage", "short lists", "no payload digest"])
def test_corrupt_cache_metadata_is_decoded_again(tmp_path, damage):
    root = _bmp_folder(tmp_path / "data")
    prepare_data(_config(root, tmp_path), 0)
    meta_path = next((tmp_path / "cache").glob("images-*.json"))
    meta = json.loads(meta_path.read_text())
    if damage == "garbage":
        meta_path.write_text("{\"valid\": [tru")
    elif damage == "short lists":
        meta_path.write_text(json.dumps({**meta, "valid": meta["valid"][:3], "gray": meta["gray"][:3]}))
    else:
        meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "payload"}))
    again = prepare_data(_config(root, tmp_path), 0)
    assert not again.report["decoded_from_cache"] and len(again.splits["train"]) > 0


def test_digests_are_remembered_until_a_file_changes(tmp_path):
    root = _bmp_folder(tmp_path / "data")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.bmp"))
    first = fingerprint_files(root, files, tmp_path / "cache")
    second = fingerprint_files(root, files, tmp_path / "cache")
    assert first.read == len(files) and second.read == 0 and first.digest == second.digest
    _swap_keeping_stats(root / "a" / "1.bmp", root / "a" / "2.bmp")
    third = fingerprint_files(root, files, tmp_path / "cache")
    assert third.read == 2 and third.digest != first.digest
    assert fingerprint_files(root, files, None).digest == third.digest  # without a cache: the same identity


def test_a_finished_run_retrains_when_its_images_change_under_the_same_names(tmp_path):
    from edgecnn.config import parse_config
    from edgecnn.pipeline import run

    root = _bmp_folder(tmp_path / "data")
    cfg = parse_config({"name": "same-names", "output": str(tmp_path / "runs"), "targets": [],
                        "data": {"root": str(root), "image_size": 12, "cache_dir": str(tmp_path / "cache"),
                                 "split": {"val": 0.2, "test": 0.2}},
                        "model": {"name": "customnet", "args": {"stem_channels": 4, "channels": [8], "blocks": 0}},
                        "train": {"epochs": 1, "batch_size": 4},
                        "evaluate": {"latency_batches": [1], "latency_repeats": 3}})
    assert "train" not in run(cfg, show_progress=False).skipped_stages
    assert "train" in run(cfg, show_progress=False).skipped_stages  # unchanged: reused
    _swap_keeping_stats(root / "a" / "3.bmp", root / "b" / "3.bmp")
    assert "train" not in run(cfg, show_progress=False).skipped_stages


@pytest.mark.parametrize("content", ["{", "[]", '{"train": 3}'], ids=["truncated", "a list", "no lists"])
def test_an_unreadable_split_file_is_kept_aside_and_the_split_drawn_again(tmp_path, content):
    root = _bmp_folder(tmp_path / "data")
    split = tmp_path / "run" / "split.json"
    first = prepare_data(_config(root, tmp_path), 0, split)
    split.write_text(content)
    again = prepare_data(_config(root, tmp_path), 0, split)
    assert again.files == first.files  # the same seeded draw
    assert (split.parent / "split.prev-1.json").read_text() == content
