from __future__ import annotations

import json

import pytest
import torch
from conftest import Crash, crash_training_at

from edgecnn.config import DataConfig, TrainConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.measure.predict import predict_logits
from edgecnn.models import create_model
from edgecnn.train import trainer
from edgecnn.train.checkpoint import load_checkpoint, read_checkpoint
from edgecnn.train.trainer import fit, lr_factor

TINY = dict(stem_channels=8, channels=[16, 32], blocks=1)


@pytest.fixture(scope="module")
def data(small_folder):
    return prepare_data(DataConfig(root=small_folder, image_size=32), seed=0)


def _model():
    torch.manual_seed(0)
    return create_model("customnet", num_classes=10, input_size=32, **TINY)


META = {"arch": "customnet", "arch_args": TINY, "classes": [], "input_size": 32,
        "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}}


def test_short_training_beats_chance_by_far(data, tmp_path):
    cfg = TrainConfig(epochs=12, batch_size=32, lr=3e-3)
    result = fit(_model(), data, cfg, tmp_path, seed=0, meta={**META, "classes": data.classes}, show_progress=False)
    assert result.best_val_acc >= 0.45  # chance is 0.10
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    model, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta.extra["epoch"] == result.best_epoch and meta.classes == data.classes
    assert json.loads((tmp_path / "history.json").read_text())[-1]["epoch"] == 12


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_after_interruption_matches_uninterrupted_run(data, tmp_path, monkeypatch, ema):
    cfg = TrainConfig(epochs=4, batch_size=32, lr=3e-3, amp="off", ema=ema)
    meta = {**META, "classes": data.classes}
    reference = fit(_model(), data, cfg, tmp_path / "ref", seed=0, meta=meta, show_progress=False)

    restore = crash_training_at(monkeypatch, epoch=3, batch=3)  # validation batches come from measure.predict
    with pytest.raises(Crash):
        fit(_model(), data, cfg, tmp_path / "run", seed=0, meta=meta, show_progress=False)
    restore()
    _, _, saved = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert saved["epoch"] == 1  # epochs 1 and 2 were saved; epoch 3 was lost mid-way

    resumed = fit(_model(), data, cfg, tmp_path / "run", seed=0, meta=meta, resume=True, show_progress=False)
    assert resumed.resumed_from_epoch == 2
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(reference.history, resumed.history):
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    for name in ("last", "best"):  # with ema: the average is checkpointed and resumed too
        ref_state, ref_extra, _ = read_checkpoint(tmp_path / "ref" / f"{name}.safetensors")
        new_state, new_extra, _ = read_checkpoint(tmp_path / "run" / f"{name}.safetensors")
        for k in ref_state:
            torch.testing.assert_close(ref_state[k], new_state[k], rtol=1e-4, atol=1e-5)
        for k in ref_extra:
            if k.startswith("ema."):
                torch.testing.assert_close(ref_extra[k], new_extra[k], rtol=1e-4, atol=1e-5)


def test_ema_weights_are_validated_and_kept(data, tmp_path):
    """With train.ema the averaged weights (not the last step's) are scored on validation and saved as best."""
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, amp="off", ema=0.9, scheduler="constant")
    result = fit(_model(), data, cfg, tmp_path, seed=0, meta={**META, "classes": data.classes}, show_progress=False)
    raw, extra, saved = read_checkpoint(tmp_path / "last.safetensors")
    averaged = {k[len("ema.module."):]: v for k, v in extra.items() if k.startswith("ema.module.")}
    assert set(averaged) == set(raw) and int(extra["ema.n_averaged"]) == 3 * -(-len(data.splits["train"]) // 32)
    weight = next(k for k in raw if k.endswith("weight") and raw[k].ndim == 4)
    assert not torch.allclose(raw[weight], averaged[weight])  # an average of the path, not the end point
    model, meta = load_checkpoint(tmp_path / "best.safetensors")
    logits = predict_logits(model, data.splits["val"], data.normalization)
    val_acc = float((logits.argmax(1) == data.splits["val"].labels).float().mean())
    assert val_acc == pytest.approx(result.best_val_acc, abs=1e-6) and meta.extra["epoch"] == result.best_epoch
    if result.best_epoch == 3:
        for k, v in averaged.items():
            torch.testing.assert_close(v.to(model.state_dict()[k].dtype), model.state_dict()[k])


def test_ema_off_keeps_the_stage_key_of_earlier_runs():
    assert "ema" not in TrainConfig().key()
    assert TrainConfig(ema=0.999).key()["ema"] == 0.999


def test_early_stopping_and_lr_schedule(data, tmp_path):
    assert lr_factor(0, 100, 10, "onecycle") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "onecycle") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "onecycle") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.01 + 0.99 * 0.5)
    cfg = TrainConfig(epochs=30, batch_size=64, lr=1e-7, warmup_epochs=0, early_stop_patience=2)
    result = fit(_model(), data, cfg, tmp_path, seed=0, meta={**META, "classes": data.classes}, show_progress=False)
    assert result.stopped_early and result.epochs_run < 30


class _SizeRecorder(torch.nn.Module):
    """A model that notes the image side of every training batch it sees."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            self.sizes.append(x.shape[-1])
        return self.inner(x)


def test_progressive_resizing_grows_the_training_images(data, tmp_path):
    from edgecnn.train.options import ProgressiveResize
    from edgecnn.train.trainer import progressive_size

    spec = ProgressiveResize(start=48, until=0.5)
    assert [progressive_size(e, 70, 64, spec) for e in (0, 17, 18, 34, 35, 69)] == [48, 48, 56, 56, 64, 64]
    assert progressive_size(3, 10, 64, None) == 64

    model = _SizeRecorder(_model())
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3, amp="off", progressive={"start": 16, "until": 0.5})
    result = fit(model, data, cfg, tmp_path, seed=0, meta={**META, "classes": data.classes}, show_progress=False)
    steps = -(-len(data.splits["train"]) // 64)
    assert model.sizes == [16] * steps + [24] * steps + [32] * 2 * steps  # 16 -> 32 by half of 4 epochs
    assert [r["image_size"] for r in result.history] == [16, 24, 32, 32]
    assert "progressive" not in TrainConfig().key() and TrainConfig(progressive={"start": 16}).key()["progressive"]


def test_progressive_resizing_refuses_a_fixed_size_head(data, tmp_path):
    from edgecnn.errors import EdgeCNNError

    torch.manual_seed(0)
    fixed = create_model("customnet", num_classes=10, input_size=32, global_pool=False, **TINY)
    cfg = TrainConfig(epochs=1, batch_size=32, amp="off", progressive={"start": 16})
    with pytest.raises(EdgeCNNError, match="does not take 16x16 images"):
        fit(fixed, data, cfg, tmp_path, seed=0, meta={**META, "classes": data.classes}, show_progress=False)


def test_the_time_limit_counts_wall_time_and_starts_no_epoch_that_would_overrun(data, tmp_path, monkeypatch):
    """Validation and checkpoints count too (here a slow validation of ~1.5 s per epoch): with a 4 s limit the fit
    ends within it instead of counting only the training steps."""
    import time

    slow = trainer._validate

    def slow_validate(*args, **kwargs):
        time.sleep(1.5)
        return slow(*args, **kwargs)

    monkeypatch.setattr(trainer, "_validate", slow_validate)
    cfg = TrainConfig(epochs=50, batch_size=64, time_limit_min=4 / 60, amp="off", channels_last=False)
    start = time.perf_counter()
    result = fit(_model(), data, cfg, tmp_path, seed=0, meta={**META, "classes": data.classes}, show_progress=False)
    wall = time.perf_counter() - start
    assert result.stopped_early and 1 <= result.epochs_run < 4
    assert wall < 4 + 1.0, f"a 4 s limit ran {wall:.1f} s"


def test_an_8_pixel_input_trains(tmp_path, small_folder):
    """The numerics speed test runs the model on one image: in training mode BatchNorm fails on its 1x1 maps."""
    tiny = prepare_data(DataConfig(root=small_folder, image_size=8, limit_per_class=3), seed=0)
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, input_size=8)  # layer3 and layer4 run on 1x1 maps
    cfg = TrainConfig(epochs=1, batch_size=16)  # amp and channels_last on auto: the speed test runs
    result = fit(model, tiny, cfg, tmp_path, seed=0, meta={**META, "arch": "resnet18", "arch_args": {},
                                                             "input_size": 8, "classes": tiny.classes},
                 show_progress=False)
    assert result.epochs_run == 1
