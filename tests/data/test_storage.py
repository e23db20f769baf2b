"""The decoded cache on disk: memory-mapped and in-memory reads agree, one decode is shared by processes, a truncated
file is rebuilt, and a memory-mapped reader's resident pages stay bounded."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from edgecnn.data import datasets, storage
from edgecnn.data.batches import Normalization
from edgecnn.data.datasets import decode_images, scan_image_folder


def test_mapped_and_in_memory_reads_are_the_same_images(small_folder, tmp_path):
    index = scan_image_folder(small_folder)
    mapped = decode_images(index, 64, tmp_path)
    loaded = decode_images(index, 64, tmp_path, mapped=False)
    assert mapped.images.mapped and not loaded.images.mapped and loaded.from_cache
    assert torch.equal(mapped.images.tensor(), loaded.images.tensor())
    rows = torch.tensor([5, 0, 299, 5])
    view = mapped.images.select(torch.arange(100, 300))
    assert torch.equal(view[torch.tensor([0, 199])], loaded.images[torch.tensor([100, 299])])
    assert torch.equal(mapped.images[rows], loaded.images.tensor()[rows])
    # normalization statistics come out the same whether the rows are mapped or a tensor
    assert Normalization.from_images(mapped.images) == Normalization.from_images(loaded.images.tensor())
    x = loaded.images.tensor().float().div(255)
    assert np.allclose(Normalization.from_images(mapped.images).std, x.std(dim=(0, 2, 3)).numpy(), atol=2e-6)


def test_a_truncated_cache_is_decoded_again(small_folder, tmp_path, monkeypatch):
    index = scan_image_folder(small_folder)
    first = decode_images(index, 64, tmp_path).images.tensor()
    npy = next(tmp_path.glob("images-*.npy"))
    with open(npy, "r+b") as f:  # a write cut short (e.g. a full disk under an older version)
        f.truncate(npy.stat().st_size - 5000)
    calls = []
    real = datasets._decode_one
    monkeypatch.setattr(datasets, "_decode_one", lambda *a: calls.append(1) or real(*a))
    again = decode_images(index, 64, tmp_path)
    assert not again.from_cache and len(calls) == 300
    assert torch.equal(again.images.tensor(), first)
    assert decode_images(index, 64, tmp_path).from_cache
    assert not list(tmp_path.glob("*.tmp"))  # the writer left no temporary behind


def test_two_processes_decode_once_and_share_the_cache(small_folder, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from edgecnn.data.datasets import decode_images, scan_image_folder
        d = decode_images(scan_image_folder({str(small_folder)!r}), 48, {str(tmp_path)!r})
        print(json.dumps({{"from_cache": d.from_cache, "sum": int(d.images.tensor().sum())}}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o["from_cache"] for o in outs) == [False, True]  # one decoded, the other waited and read it
    assert outs[0]["sum"] == outs[1]["sum"]
    assert len(list(tmp_path.glob("images-*.npy"))) == 1


def _mapping_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_a_mapped_reader_keeps_only_recent_rows_resident(small_folder, tmp_path, monkeypatch):
    index = scan_image_folder(small_folder)
    rows = decode_images(index, 64, tmp_path).images
    npy = next(tmp_path.glob("images-*.npy"))
    full_kb = rows.nbytes // 1024
    monkeypatch.setattr(storage, "RELEASE_BYTES", 64 * 12288)  # drop the mappings every 64 images
    for start in range(0, len(rows), 32):
        rows[start:start + 32]
    assert _mapping_rss_kb(npy) <= 0.4 * full_kb, (_mapping_rss_kb(npy), full_kb)
    monkeypatch.setattr(storage, "RELEASE_BYTES", 1 << 40)  # never released: every page read stays mapped
    for start in range(0, len(rows), 32):
        rows[start:start + 32]
    assert _mapping_rss_kb(npy) >= 0.9 * full_kb
