"""`edgecnn data`: the dataset check finds exactly the planted duplicates (identical, near, not the flat look-alike),
counts, sizes and modes; the pair search equals brute force; the pHash equals a plain per-image computation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgecnn.cli import app
from edgecnn.data.check import check_prepared, near_pairs, phash_rows, popcount
from edgecnn.data.options import DataConfig
from edgecnn.data.prepare import prepare_data

SIZE = 32


def _smooth(rng: np.random.Generator, width: int = SIZE, height: int = SIZE, mode: str = "RGB") -> Image.Image:
    """A random image with coarse structure (an upsampled 4x4 grid): a stable perceptual hash."""
    bands = 1 if mode == "L" else 3
    grid = rng.integers(0, 256, (4, 4, bands), dtype=np.uint8)
    im = Image.fromarray(grid[..., 0] if bands == 1 else grid, mode)
    return im.resize((width, height), Image.Resampling.BICUBIC)


def _flat(level: tuple[int, int, int]) -> Image.Image:
    noise = np.random.default_rng(5).normal(0, 1.0, (SIZE, SIZE, 1))
    return Image.fromarray(np.clip(np.array(level) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """3 classes (a: 21 images, b: 4, c: 3 in train) with one identical copy (a/a1 = b/b_dup, train/test), one near
    copy (a/a2 brighter and noisier = c/c_near, train/val), two flat images differing only in brightness
    (train/test), a grayscale and a non-square file, a corrupt and a non-image file; the split is written here."""
    root = tmp_path_factory.mktemp("planted") / "data"
    rng = np.random.default_rng(0)
    for cls in "abc":
        (root / cls).mkdir(parents=True)
    for k in range(24):
        _smooth(rng, width=40 if k == 23 else SIZE).save(root / "a" / f"a{k}.png")
    for cls in "bc":
        for k in range(5):
            _smooth(rng).save(root / cls / f"{cls}{k}.png")
    shutil.copy(root / "a" / "a1.png", root / "b" / "b_dup.png")
    near = np.asarray(Image.open(root / "a" / "a2.png"), dtype=np.float64) + 8 + rng.normal(0, 2, (SIZE, SIZE, 3))
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(root / "c" / "c_near.png")
    _flat((120, 130, 140)).save(root / "a" / "flat1.png")
    Image.fromarray(np.asarray(_flat((120, 130, 140))) + np.uint8(3)).save(root / "c" / "flat2.png")
    _smooth(rng, mode="L").save(root / "b" / "b_gray.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "a" / "notes.txt").write_text("not an image")
    split = {"train": [f"a/a{k}.png" for k in range(20)] + ["a/flat1.png", "b/b0.png", "b/b1.png", "b/b2.png",
                                                            "b/b_gray.png", "c/c0.png", "c/c1.png", "c/c2.png"],
             "val": ["a/a20.png", "a/a21.png", "b/b3.png", "c/c3.png", "c/c_near.png"],
             "test": ["a/a22.png", "a/a23.png", "b/b4.png", "c/c4.png", "b/b_dup.png", "c/flat2.png"]}
    split_file = root.parent / "split.json"
    split_file.write_text(json.dumps({"classes": ["a", "b", "c"], **split}))
    cfg = DataConfig(root=root, image_size=SIZE, cache_dir=root.parent / "cache")
    return prepare_data(cfg, 0, split_file)


def _across(check, second: str, first: str):
    return next(o for o in check.duplicates.across if (o.first, o.second) == (first, second))


def test_the_planted_duplicates_and_only_they_are_found(planted):
    check = check_prepared(planted)
    test_train, val_train = _across(check, "test", "train"), _across(check, "val", "train")
    assert (test_train.identical_pairs, test_train.identical_images, test_train.near_pairs, test_train.images) == \
        (1, 1, 0, 1)
    assert test_train.examples == [{"first": "a/a1.png", "second": "b/b_dup.png", "distance": 0, "identical": True}]
    assert (val_train.identical_pairs, val_train.near_pairs, val_train.images) == (0, 1, 1)
    assert val_train.examples[0]["second"] == "c/c_near.png" and val_train.examples[0]["distance"] <= 4
    assert _across(check, "test", "val").images == 0
    assert check.duplicates.low_contrast == 2  # the flat pair is left out, not paired
    assert all(w == {"identical_pairs": 0, "near_pairs": 0} for w in check.duplicates.within.values())
    loud = [a for a in check.actions if "copy in train" in a]
    assert loud[0].startswith("1 test image(s) have a copy in train (1 identical, 0 near): test accuracies are")
    assert loud[1].startswith("1 val image(s) have a copy in train (0 identical, 1 near)")


def test_the_flat_pair_would_pair_without_the_contrast_floor(planted):
    """The two flat images differ only in brightness, so their hashes agree: the floor is what keeps them apart."""
    check = check_prepared(planted, min_contrast=0)
    assert _across(check, "test", "train").images == 2 and check.duplicates.low_contrast == 0


def test_counts_sizes_modes_and_skipped_files(planted):
    check = check_prepared(planted, settings={"train.class_balance": "none"})
    assert check.counts["train"] == {"a": 21, "b": 4, "c": 3}
    assert check.counts["test"] == {"a": 2, "b": 2, "c": 2}
    assert (check.imbalance, check.smallest_class, check.smallest_count) == (7.0, "c", 3)
    s = check.sizes
    assert (s.distinct, s.largest, s.not_square, s.max_aspect, s.smaller) == (2, (40, 32), 1, 1.25, 0)
    assert s.modes == {"RGB": 38, "L": 1} and s.grayscale == 1 and s.bits == {"8": 39}
    assert check.skipped["corrupt"] == 1 and check.skipped["non_image"] == 1
    assert check.channels == planted.splits["train"].images.shape[1]
    text = "\n".join(check.actions)
    assert "images of 2 sizes (largest 40x32) are resized to 32x32 by stretching (data.resize: stretch" in text
    assert "classes are imbalanced 7.0:1 (smallest: c with 3 train images); consider train.class_balance" in text
    assert "1 of 39 images are grayscale" in text and "1 corrupt image(s) (e.g. b/broken.png)" in text
    assert set(check.seconds) == {"counts", "headers", "hashes", "duplicates"}
    json.dumps(check.to_dict())


def _brute_force(hashes: np.ndarray, threshold: int) -> set[tuple[int, int, int]]:
    dist = popcount(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(dist <= threshold, k=1))
    return {(int(a), int(b), int(dist[a, b])) for a, b in zip(i, j)}


@pytest.mark.parametrize("threshold", [0, 3, 4, 8])
def test_banding_finds_every_pair_brute_force_finds(threshold):
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    base[:500] &= np.uint64(0xFFFF_0000_FFFF_FFFF)  # clustered: big buckets in one band
    planted = base[rng.choice(len(base), 300)].copy()
    for k in range(len(planted)):  # 0 to 10 random bits flipped: within and beyond the threshold
        for bit in rng.choice(64, rng.integers(0, 11), replace=False):
            planted[k] ^= np.uint64(1) << np.uint64(bit)
    hashes = np.concatenate([base, planted, base[:20]])  # and exact repeats
    i, j, d = near_pairs(hashes, threshold, batch=997)
    found = list(zip(i.tolist(), j.tolist(), d.tolist()))
    assert len(found) == len(set(found))  # no pair twice
    assert set(found) == _brute_force(hashes, threshold)
    assert len(found) > 20


def _reference_phash(img: np.ndarray, block: int) -> int:
    """imagehash's pHash written out per image: luminance, area resize to 32x32, DCT-II by its formula, the
    top-left block against its median, bits read as one binary number."""
    x = img.astype(np.float64)
    lum = x[0] if len(x) == 1 else 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    f = lum.shape[0] // 32
    small = lum.reshape(32, f, 32, f).mean(axis=(1, 3))
    n = np.arange(32)
    coef = np.zeros((block, block))
    for u in range(block):
        for v in range(block):
            coef[u, v] = np.sum(small * np.cos(np.pi * (2 * n[:, None] + 1) * u / 64)
                                * np.cos(np.pi * (2 * n[None, :] + 1) * v / 64))
    bits = (coef > np.median(coef)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def _reference_contrast(img: np.ndarray) -> float:
    """The std of the image made of the 8x8 lowest frequencies: the 32x32 luminance through an orthonormal DCT, the
    other coefficients zeroed, back."""
    x = img.astype(np.float64)
    lum = x[0] if len(x) == 1 else 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    f = lum.shape[0] // 32
    small = lum.reshape(32, f, 32, f).mean(axis=(1, 3))
    n = np.arange(32)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64) * np.sqrt(2 / 32)
    basis[0] /= np.sqrt(2)
    coef = basis @ small @ basis.T
    coef[8:, :] = coef[:, 8:] = 0
    return float((basis.T @ coef @ basis).std())


@pytest.mark.parametrize("shape", [(3, 64, 64), (3, 96, 96), (1, 32, 32)])
def test_phash_matches_a_per_image_reference(shape):
    rng = np.random.default_rng(len(shape) + shape[1])
    images = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    h64, h256, contrast = phash_rows(torch.from_numpy(images))
    for k, img in enumerate(images):
        assert int(h64[k]) == _reference_phash(img, 8)
        assert sum(int(w) << (64 * (3 - p)) for p, w in enumerate(h256[k])) == _reference_phash(img, 16)
    assert np.allclose(contrast, [_reference_contrast(img) for img in images])
    assert phash_rows(torch.full((1, *shape), 77, dtype=torch.uint8))[2][0] < 1e-9  # flat: no contrast


def _invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["data", *map(str, args)])
    return result.exit_code, result.output


def test_cli_prints_and_writes_json(planted, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("seed: 3\ndata:\n  image_size: 32\n")
    code, out = _invoke(planted.root, "--config", config, "--json", tmp_path / "check.json")
    assert code == 0, out
    record = json.loads((tmp_path / "check.json").read_text())
    assert record["image_size"] == 32 and record["classes"] == ["a", "b", "c"]
    assert sum(sum(c.values()) for c in record["counts"].values()) == 39
    assert record["duplicates"]["near_threshold"] == 4 and record["actions"]
    assert "duplicates" in out and "what the run does" in out


@pytest.mark.parametrize("args", [["nowhere"], ["HERE", "--near-threshold", "40"]])
def test_cli_errors_are_one_line(planted, tmp_path, args):
    args = [str(planted.root) if a == "HERE" else str(tmp_path / a) if a == "nowhere" else a for a in args]
    code, out = _invoke(*args, "--image-size", SIZE)
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out, out
    assert lines[0].startswith("error: ")


def test_a_grayscale_folder_reads_as_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    for cls in "ab":
        (tmp_path / "gray" / cls).mkdir(parents=True)
        for k in range(4):
            _smooth(rng, mode="L").save(tmp_path / "gray" / cls / f"{k}.png")
    data = prepare_data(DataConfig(root=tmp_path / "gray", image_size=SIZE, cache_dir=tmp_path / "cache"), 0)
    check = check_prepared(data)
    assert check.channels == 1 and check.sizes.modes == {"L": 8}
    assert "grayscale images: the model takes 1 channel (data.channels: auto)" in check.actions
    assert "all images are 32x32: used as they are" in check.actions


def test_a_run_checks_its_data_and_warns_of_copies_across_its_splits(tmp_path, caplog):
    """`edgecnn run` checks the data it splits: data_check.json, the actions in data.json (the report shows them)
    and a warning in the log when test images have copies in train; data.check: false skips it."""
    import logging

    from conftest import make_subset

    from edgecnn.config import parse_config
    from edgecnn.pipeline import run

    root = make_subset(tmp_path / "data", 6, ["Forest", "Highway"])
    for cls in ("Forest", "Highway"):  # every image twice: some copies land in other splits than their original
        for f in sorted((root / cls).iterdir()):
            shutil.copy(f, f.with_name("copy-" + f.name))
    base = {"output": str(tmp_path / "runs"), "train": {"epochs": 1, "batch_size": 8}, "targets": [],
            "data": {"root": str(root), "image_size": 16, "split": {"val": 0.25, "test": 0.25}},
            "model": {"name": "customnet", "args": {"stem_channels": 4, "channels": [8], "blocks": 0}},
            "evaluate": {"latency_batches": [1], "latency_repeats": 3}}
    with caplog.at_level(logging.INFO, logger="edgecnn"):
        outcome = run(parse_config({**base, "name": "checked"}), show_progress=False)
    check = json.loads((outcome.run_dir / "data_check.json").read_text())
    leaks = {(o["first"], o["second"]): o["identical_images"] for o in check["duplicates"]["across"]}
    assert sum(leaks.values()) > 0 and outcome.data_report["check"]["actions"] == check["actions"]
    assert any(r.levelno == logging.WARNING and "have an identical or near copy" in r.getMessage()
               for r in caplog.records)
    assert "Data check" in (outcome.run_dir / "report" / "index.html").read_text()
    unchecked = run(parse_config({**base, "name": "unchecked", "data": {**base["data"], "check": False}}),
                    show_progress=False)
    assert not (unchecked.run_dir / "data_check.json").exists() and "check" not in unchecked.data_report
