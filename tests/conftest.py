"""Shared fixtures: small deterministic ImageFolders cut from the bundled EuroSAT sample; no downloads."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Keep the decoded-image cache of the tests away from the user's cache, and remove it afterwards.
if "EDGECNN_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="edgecnn-test-cache-")
    os.environ["EDGECNN_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

from edgecnn.data.datasets import SAMPLE_ROOT  # noqa: E402


def make_subset(dst: Path, per_class: int, classes: list[str] | None = None) -> Path:
    """Copy the first ``per_class`` sample images of each class (sorted names) into ``dst``."""
    for cls_dir in sorted(p for p in SAMPLE_ROOT.iterdir() if p.is_dir()):
        if classes is not None and cls_dir.name not in classes:
            continue
        out = dst / cls_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(cls_dir.iterdir())[:per_class]:
            shutil.copy(f, out / f.name)
    return dst


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory) -> Path:
    """10 classes x 30 images."""
    return make_subset(tmp_path_factory.mktemp("small"), 30)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """Modules that pin torch to one thread (to keep CPU timings and numerics stable) must not leak it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def randomize_bn(model) -> None:
    """BatchNorm statistics and affine parameters as after training (seeded), so no activation sits exactly at a
    quantization tie, as it does with fresh BN (mean 0, var 1)."""
    import torch
    import torch.nn as nn

    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
