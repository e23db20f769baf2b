"""Training on imbalanced data: train.class_balance (inverse-frequency loss weights, or a class-balanced sampler that
keeps epochs a pure function of the seed and shared across data-parallel ranks) and train.select_by (the validation
metric, accuracy or macro-F1, that picks the best checkpoint and drives early stopping)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import Crash, crash_training_at, make_subset

from edgecnn.config import DataConfig, TrainConfig
from edgecnn.data.augment import Augmentation
from edgecnn.data.batches import Normalization, TensorSet, balanced_order, iterate_batches
from edgecnn.data.prepare import prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.accuracy import classification_report
from edgecnn.models import create_model
from edgecnn.records import FitResult
from edgecnn.train import trainer
from edgecnn.train.checkpoint import load_checkpoint, read_checkpoint
from edgecnn.train.trainer import balanced_cross_entropy, class_weights, fit, select_best

TINY = dict(stem_channels=8, channels=[16, 32], blocks=1)
NINE_TO_ONE = torch.tensor([0] * 90 + [1] * 10)


# ---------------------------------------------------------------------------------------------- loss weights

def test_loss_weights_of_a_nine_to_one_set_by_hand():
    """90 / 10 images of 2 present classes (a third absent): w_c = N / (K n_c) = 100 / (2 * 90), 100 / (2 * 10)."""
    weights = class_weights(NINE_TO_ONE, 3)
    torch.testing.assert_close(weights, torch.tensor([5 / 9, 5.0, 0.0]))
    assert float(0.9 * weights[0] + 0.1 * weights[1]) == pytest.approx(1.0)  # frequency-weighted mean 1
    assert float(90 * weights[0]) == pytest.approx(float(10 * weights[1]))  # each class weighs the same in all
    torch.testing.assert_close(class_weights(torch.tensor([0, 1, 2, 0, 1, 2]), 3), torch.ones(3))


def test_weighted_loss_is_each_images_loss_times_its_class_weight():
    logits = torch.zeros(2, 2)  # every image's cross-entropy is log 2, smoothed or not
    weights = class_weights(NINE_TO_ONE, 2)
    loss = balanced_cross_entropy(logits, torch.tensor([0, 1]), weights, label_smoothing=0.1)
    assert float(loss) == pytest.approx((5 / 9 + 5.0) / 2 * math.log(2))
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 3, generator=gen), torch.randint(3, (8,), generator=gen)
    weights = torch.tensor([0.5, 2.0, 1.5])
    # without smoothing: F.cross_entropy's weight= summed over the batch, divided by the batch size
    expected = F.cross_entropy(logits, labels, weight=weights, reduction="sum") / 8
    torch.testing.assert_close(balanced_cross_entropy(logits, labels, weights), expected)
    # weights of 1 (a balanced set) or none: the plain label-smoothed cross-entropy
    plain = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(balanced_cross_entropy(logits, labels, torch.ones(3), 0.1), plain)
    torch.testing.assert_close(balanced_cross_entropy(logits, labels, None, 0.1), plain)


# ---------------------------------------------------------------------------------------------- the sampler

def test_sampler_draws_a_nine_to_one_set_about_uniformly():
    draws = torch.cat([balanced_order(NINE_TO_ONE, torch.Generator().manual_seed(s)) for s in range(200)])
    assert len(draws) == 200 * 100 and draws.min() >= 0 and draws.max() < 100  # same epoch length, valid rows
    minority = float((NINE_TO_ONE[draws] == 1).float().mean())
    assert minority == pytest.approx(0.5, abs=0.02)  # 0.1 without balancing; sd of the mean about 0.0035
    per_row = torch.bincount(draws, minlength=100).float()
    # within a class rows are drawn uniformly: about 10000 / 10 each for the minority, 10000 / 90 for the majority
    assert per_row[90:].min() > 800 and per_row[90:].max() < 1200
    assert per_row[:90].min() > 60 and per_row[:90].max() < 170


def _set(labels: torch.Tensor, size: int = 8) -> TensorSet:
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()
    return TensorSet(images, labels)


def _batches(data: TensorSet, seed: int, rank: int = 0, world: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    augment = Augmentation(hflip=True, vflip=True, rot90=True)  # draws from the same generator after the order
    return list(iterate_batches(data, 16, Normalization.named("none"), shuffle=True, seed=seed, augment=augment,
                                rank=rank, world=world, balance=True))


def test_sampler_epoch_is_a_pure_function_of_the_seed_and_shared_by_the_ranks():
    data = _set(NINE_TO_ONE)
    first, again, other = _batches(data, 7), _batches(data, 7), _batches(data, 8)
    assert len(first) == math.ceil(100 / 16)  # the epoch length of an unbalanced one
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not all(torch.equal(y1, y2) for (_, y1), (_, y2) in zip(first, other))
    assert float(torch.cat([y for _, y in first]).float().mean()) > 0.3  # balanced (an unbalanced epoch: 0.1)
    ranks = [_batches(data, 7, rank=r, world=3) for r in range(3)]
    for step, (x, y) in enumerate(first):  # rank r holds rows r::3 of every global batch, augmentation included
        for r in range(3):
            xr, yr = ranks[r][step]
            assert torch.equal(xr, x[r::3]) and torch.equal(yr, y[r::3])


# ---------------------------------------------------------------------------------------------- select_by

def _row(epoch: int, labels: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    report = classification_report(labels, predicted, ["common", "rare"])
    return {"epoch": epoch, "val_acc": report.accuracy, "val_macro_f1": report.macro_f1}


def test_macro_f1_picks_another_epoch_than_accuracy_when_they_disagree():
    """Epoch 1 calls everything common (90% accurate, the rare class never found); epoch 2 finds every rare image
    at the price of 12 common ones (88% accurate, far better macro-F1); epoch 3 ties epoch 2."""
    common_only = torch.zeros(100, dtype=torch.long)
    finds_rare = torch.cat([torch.zeros(78, dtype=torch.long), torch.ones(22, dtype=torch.long)])
    history = [_row(1, NINE_TO_ONE, common_only), _row(2, NINE_TO_ONE, finds_rare),
               _row(3, NINE_TO_ONE, finds_rare)]
    assert history[0]["val_acc"] == pytest.approx(0.90) and history[1]["val_acc"] == pytest.approx(0.88)
    assert select_best(history, "accuracy") == (1, pytest.approx(0.90))
    epoch, score = select_best(history, "macro_f1")
    assert epoch == 2 and score == pytest.approx(history[1]["val_macro_f1"]) and score > history[0]["val_macro_f1"]


def _scripted_validation(monkeypatch, scores: list[tuple[float, float]]) -> None:
    """Validation returns these (accuracy, macro-F1) per epoch, whatever the weights."""
    calls = iter(scores)

    def fake(*args, **kwargs):
        acc, f1 = next(calls)
        return 1.0, acc, f1

    monkeypatch.setattr(trainer, "_validate", fake)


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """Two classes, 36 and 4 images (9:1), 16x16."""
    root = tmp_path_factory.mktemp("imbalanced")
    make_subset(root, 36, ["Forest"])
    make_subset(root, 4, ["SeaLake"])
    return prepare_data(DataConfig(root=root, image_size=16), seed=0)


def _model(num_classes: int = 2):
    torch.manual_seed(0)
    return create_model("customnet", num_classes=num_classes, input_size=16, **TINY)


def _meta(data):
    return data.model_meta("customnet", TINY).to_dict()


@pytest.mark.parametrize("select_by, best, stops_after", [("accuracy", 1, 3), ("macro_f1", 2, 4)])
def test_select_by_picks_the_best_checkpoint_and_drives_early_stopping(imbalanced, tmp_path, monkeypatch,
                                                                       select_by, best, stops_after):
    _scripted_validation(monkeypatch, [(0.9, 0.47), (0.88, 0.8), (0.85, 0.6), (0.8, 0.7), (0.7, 0.5)])
    cfg = TrainConfig(epochs=5, batch_size=16, amp="off", early_stop_patience=2, select_by=select_by)
    result = fit(_model(), imbalanced, cfg, tmp_path, seed=0, meta=_meta(imbalanced), show_progress=False)
    assert result.best_epoch == best and result.stopped_early and result.epochs_run == stops_after
    assert result.select_by == select_by
    assert result.best_val_acc == pytest.approx([0.9, 0.88][best - 1])  # the accuracy of the epoch it picked
    assert result.best_val_score == pytest.approx([0.9, 0.8][best - 1])
    _, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta.extra["epoch"] == best


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("class_balance, select_by", [("loss", "accuracy"), ("sampler", "macro_f1"),
                                                      ("none", "macro_f1")])
def test_tiny_fit_with_each_option_runs_and_records_its_metric(imbalanced, tmp_path, class_balance, select_by):
    cfg = TrainConfig(epochs=2, batch_size=16, amp="off", channels_last=False, class_balance=class_balance,
                      select_by=select_by)
    result = fit(_model(), imbalanced, cfg, tmp_path, seed=0, meta=_meta(imbalanced), show_progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(0 <= row["val_macro_f1"] <= 1 and math.isfinite(row["train_loss"]) for row in result.history)
    key = {"accuracy": "val_acc", "macro_f1": "val_macro_f1"}[select_by]
    best_row = result.history[result.best_epoch - 1]
    assert result.select_by == select_by and result.best_val_score == pytest.approx(best_row[key])
    assert result.best_val_acc == pytest.approx(best_row["val_acc"])
    assert FitResult.from_dict(result.to_dict()) == result
    _, _, saved = read_checkpoint(tmp_path / "last.safetensors")
    assert saved["select_by"] == select_by and saved["best_val_score"] == pytest.approx(result.best_val_score)


def test_loss_weights_change_training_and_sampler_changes_the_batches(imbalanced, tmp_path, monkeypatch):
    seen: dict[str, list[torch.Tensor]] = {}
    real = trainer.iterate_batches

    def run(class_balance: str) -> FitResult:
        labels: list[torch.Tensor] = []

        def recording(*args, **kwargs):
            for x, y in real(*args, **kwargs):
                labels.append(y)
                yield x, y

        monkeypatch.setattr(trainer, "iterate_batches", recording)
        cfg = TrainConfig(epochs=1, batch_size=16, amp="off", channels_last=False, class_balance=class_balance)
        result = fit(_model(), imbalanced, cfg, tmp_path / class_balance, seed=0, meta=_meta(imbalanced),
                     show_progress=False)
        seen[class_balance] = labels
        return result

    none, loss, _ = run("none"), run("loss"), run("sampler")
    assert [torch.equal(a, b) for a, b in zip(seen["none"], seen["loss"])] == [True] * len(seen["none"])
    assert none.history[0]["train_loss"] != pytest.approx(loss.history[0]["train_loss"])
    assert len(seen["sampler"]) == len(seen["none"])  # same epoch length
    share = float(torch.cat(seen["sampler"]).float().mean())  # SeaLake is class 1, 4 of 40 images (fewer in train)
    assert share > 0.25 > float(torch.cat(seen["none"]).float().mean())


def test_balanced_run_resumes_bit_identical_after_a_crash(imbalanced, tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=3, batch_size=8, amp="off", channels_last=False, class_balance="sampler",
                      select_by="macro_f1")
    meta = _meta(imbalanced)
    reference = fit(_model(), imbalanced, cfg, tmp_path / "ref", seed=0, meta=meta, show_progress=False)
    restore = crash_training_at(monkeypatch, epoch=2, batch=2)  # mid-epoch 2
    with pytest.raises(Crash):
        fit(_model(), imbalanced, cfg, tmp_path / "run", seed=0, meta=meta, show_progress=False)
    restore()
    resumed = fit(_model(), imbalanced, cfg, tmp_path / "run", seed=0, meta=meta, resume=True, show_progress=False)
    assert resumed.resumed_from_epoch == 1
    for a, b in zip(reference.history, resumed.history):
        assert {k: a[k] for k in ("train_loss", "val_acc", "val_macro_f1")} == \
            {k: b[k] for k in ("train_loss", "val_acc", "val_macro_f1")}
    assert (resumed.best_epoch, resumed.best_val_score) == (reference.best_epoch, reference.best_val_score)
    ref_state, _, _ = read_checkpoint(tmp_path / "ref" / "last.safetensors")
    new_state, _, _ = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    other = cfg.model_copy(update={"select_by": "accuracy"})
    with pytest.raises(EdgeCNNError, match="select_by"):  # its best.safetensors was picked by macro-F1
        fit(_model(), imbalanced, other, tmp_path / "run", seed=0, meta=meta, resume=True, show_progress=False)


def test_defaults_keep_the_stage_key_of_earlier_runs():
    key = TrainConfig().key()
    assert "class_balance" not in key and "select_by" not in key
    changed = TrainConfig(class_balance="sampler", select_by="macro_f1").key()
    assert changed["class_balance"] == "sampler" and changed["select_by"] == "macro_f1"



def _train_cli(config: Path, name: str, *nproc: str) -> list[dict]:
    """``edgecnn train`` in a subprocess (one thread per rank); the run's history."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgecnn", "--quiet", "train", str(config), "--name", name, *nproc]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((config.parent / "runs" / name / "train" / "history.json").read_text())


@pytest.mark.parametrize("class_balance", ["sampler", pytest.param("loss", marks=pytest.mark.slow)])
def test_two_ranks_balance_and_select_like_one_process(tmp_path, class_balance):
    """Under DDP every rank draws the same balanced order (or uses the same weights) and the macro-F1 is taken
    over the whole validation split (the ranks' predictions gathered), so two ranks track one process."""
    root = make_subset(tmp_path / "images", 30, ["Forest", "River"])
    make_subset(root, 5, ["SeaLake"])
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "ddp", "seed": 0, "output": str(tmp_path / "runs"), "data": {"root": str(root), "image_size": 32},
        "model": {"name": "customnet", "args": TINY},
        "train": {"epochs": 2, "batch_size": 16, "amp": "off", "channels_last": False, "threads": 1,
                  "class_balance": class_balance, "select_by": "macro_f1"}}))
    two, one = _train_cli(config, "two", "--nproc", "2"), _train_cli(config, "one")
    # the same global batches; only BatchNorm sees half a batch per rank
    assert abs(two[0]["train_loss"] - one[0]["train_loss"]) < 0.15
    assert all(abs(a["val_macro_f1"] - b["val_macro_f1"]) <= 0.15 for a, b in zip(two, one))
    _, _, saved = read_checkpoint(tmp_path / "runs" / "two" / "train" / "last.safetensors")
    assert saved["ranks"] == 2 and saved["select_by"] == "macro_f1"
