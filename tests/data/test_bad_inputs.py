"""Hostile data folders: each problem is skipped with a reason or refused with a one-line error, never a traceback."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from conftest import make_subset
from PIL import Image

from edgecnn.data.datasets import decode_images, scan_image_folder
from edgecnn.data.options import DataConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.errors import EdgeCNNError


@pytest.fixture()
def folder(tmp_path):
    """Three classes x 6 sample images."""
    return make_subset(tmp_path / "data", 6, classes=["Forest", "River", "SeaLake"])


def _bomb_png(path, width=20000, height=20000):
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's signature)."""
    raw = b"\x00" + b"\x00" * 3  # one row of one pixel; the header lies about the size
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_skipped_before_decoding(folder, tmp_path):
    _bomb_png(folder / "Forest" / "bomb.png")
    index = scan_image_folder(folder)
    decoded = decode_images(index, 32, tmp_path / "cache")
    reasons = dict(decoded.failures)
    assert "Forest/bomb.png" in reasons and ("too large" in reasons["Forest/bomb.png"]
                                            or "DecompressionBomb" in reasons["Forest/bomb.png"])
    assert decoded.valid.sum() == 18


def test_a_link_loop_and_a_non_utf8_name_are_skipped_with_a_reason(folder, tmp_path):
    os.symlink("loop.jpg", folder / "River" / "loop.jpg")  # points at itself
    bad = os.path.join(os.fsencode(folder / "River"), b"bad\xff.jpg")
    with open(bad, "wb") as f:
        f.write((folder / "River" / sorted(os.listdir(folder / "River"))[0]).read_bytes())
    index = scan_image_folder(folder)
    skipped = dict(index.skipped)
    assert "unreadable" in skipped["River/loop.jpg"]
    assert any(reason == "file name is not valid UTF-8" for reason in skipped.values())
    data = prepare_data(DataConfig(root=folder, image_size=32), seed=0)  # the run goes on without them
    assert sum(len(s) for s in data.splits.values()) == 18


@pytest.mark.timeout(60)
def test_a_fifo_named_like_an_image_is_skipped_not_read(folder, tmp_path):
    """Opening a FIFO blocks until a writer comes: the scan skips anything that is not a regular file."""
    os.mkfifo(folder / "Forest" / "pipe.jpg")
    skipped = dict(scan_image_folder(folder).skipped)
    assert skipped["Forest/pipe.jpg"].startswith("not a regular file")
    data = prepare_data(DataConfig(root=folder, image_size=32, cache_dir=tmp_path / "cache"), seed=0)
    assert sum(len(s) for s in data.splits.values()) == 18


def test_a_16_bit_png_keeps_its_contrast(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(ramp).save(tmp_path / cls / "ramp.png")  # PIL writes uint16 as a 16-bit PNG
    decoded = decode_images(scan_image_folder(tmp_path), 64, tmp_path / "cache")
    pixels = decoded.images[0, 0].numpy()
    assert pixels.min() <= 2 and pixels.max() >= 253  # a full ramp, not clipped to white
    assert abs(float(pixels.mean()) - 127.5) < 3


def test_a_class_folder_linking_back_to_the_dataset_is_skipped(folder):
    os.symlink(folder, folder / "Everything")
    assert scan_image_folder(folder).classes == ["Forest", "River", "SeaLake"]


def test_one_class_is_refused(tmp_path):
    make_subset(tmp_path, 4, classes=["Forest"])
    with pytest.raises(EdgeCNNError, match="at least two classes"):
        scan_image_folder(tmp_path)


def test_classes_too_small_for_the_split_are_named(tmp_path):
    make_subset(tmp_path, 2, classes=["Forest", "River"])
    with pytest.raises(EdgeCNNError, match=r"val split \(0.2\) got no image: class '\w+' has only 2 usable"):
        prepare_data(DataConfig(root=tmp_path, image_size=32, split={"val": 0.2, "test": 0.1}), seed=0)
