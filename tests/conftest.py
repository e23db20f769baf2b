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

ROOT = Path(__file__).resolve().parents[1]
#: Set by .ci/run (which installs edgecnn[all]): a module of an installed extra that cannot be imported fails its
#: tests instead of skipping them.
REQUIRE_EXTRAS = "EDGECNN_REQUIRE_EXTRAS"


def ci_extras() -> set[str]:
    """The extras .ci/run installs: those named by edgecnn[all] in pyproject.toml (README: pip install -e ".[all]")."""
    import re

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: set[str] = set()
    for requirement in project["optional-dependencies"]["all"]:
        if m := re.fullmatch(r"\s*edgecnn\[([^\]]*)\]\s*", requirement):
            extras.update(e.strip() for e in m.group(1).split(","))
    return extras


def require(module: str, extra: str, *, load: bool = True):
    """``module`` of edgecnn's optional ``extra``, imported (``load=False``: only looked up, not imported, e.g. for
    TensorFlow, which must not be loaded before Triton; returns None then); what ``pytest.importorskip`` does, without
    its silent skip in CI. When the module cannot be imported the test (or, at module level, the module) is skipped
    with the reason; but with EDGECNN_REQUIRE_EXTRAS=1 (.ci/run) and an extra that .ci/run installs (edgecnn[all])
    it fails: a broken or missing install must not pass CI as a row of skips."""
    import importlib
    import importlib.util

    try:
        if load:
            return importlib.import_module(module)
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named '{module}'", name=module)
        return None
    except ImportError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if os.environ.get(REQUIRE_EXTRAS, "") not in ("", "0") and extra in ci_extras():
        pytest.fail(f"extra '{extra}' is installed by .ci/run but '{module}' cannot be imported: {error}",
                    pytrace=False)
    where = "" if extra in ci_extras() else f" (edgecnn[all] leaves '{extra}' out: .ci/run does not install it)"
    pytest.skip(f"'{module}' cannot be imported ({error}): pip install 'edgecnn[{extra}]'{where}",
                allow_module_level=True)


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


class Crash(Exception):
    """A kill in the middle of training, raised by ``crash_training_at``."""


def crash_training_at(monkeypatch, epoch: int, batch: int):
    """Make the trainer raise Crash at ``batch`` of training ``epoch`` (1-based: the epoch-th call of its batch
    iterator), as a kill mid-epoch would; returns a function that restores the real iterator."""
    from edgecnn.train import trainer

    real = trainer.iterate_batches
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        for i, item in enumerate(real(*args, **kwargs)):
            if calls["n"] == epoch and i == batch:
                raise Crash()
            yield item

    monkeypatch.setattr(trainer, "iterate_batches", crashing)
    return lambda: monkeypatch.setattr(trainer, "iterate_batches", real)
