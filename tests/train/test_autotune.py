"""The measured choice of numeric format and layout: the fastest candidate wins (a timer test double makes one
slow), the choice is cached and reused, a new model or machine measures again, explicit values are not measured."""
from __future__ import annotations

import json

import torch
from torch import nn

from edgecnn.train import autotune
from edgecnn.train.autotune import Numerics, candidates, choose


def _model(width: int = 8, classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))


def _timer(slow: set[str], calls: list[str]):
    """Runs the step (so the candidate really works) but reports 1 s, or 10 s for the candidates in ``slow``."""
    def timer(step, numerics: Numerics) -> float:
        step()
        calls.append(numerics.label)
        return 10.0 if numerics.label in slow else 1.0 + 0.01 * len(numerics.label)
    return timer


def test_the_fastest_candidate_wins_and_is_cached(tmp_path):
    cache = tmp_path / "numerics.json"
    calls: list[str] = []
    slow = {"fp32/contiguous", "fp32/channels_last", "bf16/contiguous"}
    got = choose(_model(), "auto", "auto", 4, 16, cache=cache, timer=_timer(slow, calls), steps=1, warmup=0)
    assert got.numerics == Numerics("bf16", True) and not got.cached and len(calls) == 4
    assert got.to_dict()["speed_vs_fastest"]["fp32/contiguous"] < 0.2
    calls.clear()
    again = choose(_model(), "auto", "auto", 4, 16, cache=cache, timer=_timer(set(), calls), steps=1, warmup=0)
    assert again.cached and again.numerics == Numerics("bf16", True) and calls == []  # reused, not measured
    other = choose(_model(width=16), "auto", "auto", 4, 16, cache=cache, timer=_timer(set(), calls), steps=1,
                   warmup=0)
    assert not other.cached and calls  # another model: measured again
    assert len(json.loads(cache.read_text())) == 2


def test_a_new_machine_measures_again(tmp_path, monkeypatch):
    cache = tmp_path / "numerics.json"
    calls: list[str] = []
    choose(_model(), "auto", "auto", 4, 16, cache=cache, timer=_timer(set(), calls), steps=1, warmup=0)
    real = autotune.machine_signature
    monkeypatch.setattr(autotune, "machine_signature", lambda device: {**real(device), "cpu": "another CPU"})
    calls.clear()
    got = choose(_model(), "auto", "auto", 4, 16, cache=cache, timer=_timer(set(), calls), steps=1, warmup=0)
    assert not got.cached and len(calls) == 4


def test_explicit_values_are_honoured_without_measuring(tmp_path):
    calls: list[str] = []
    got = choose(_model(), "off", False, 4, 16, cache=tmp_path / "c.json", timer=_timer(set(), calls))
    assert got.numerics == Numerics("off", False) and not got.measured and calls == []
    assert candidates("bf16", "auto", torch.device("cpu")) == [Numerics("bf16", False), Numerics("bf16", True)]
    assert [c.amp for c in candidates("auto", True, torch.device("cpu"))] == ["off", "bf16"]


def test_fit_records_the_measured_choice(small_folder, tmp_path, monkeypatch):
    from edgecnn.data.options import DataConfig
    from edgecnn.data.prepare import prepare_data
    from edgecnn.train.options import TrainConfig
    from edgecnn.train.trainer import fit

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    data = prepare_data(DataConfig(root=small_folder, image_size=16, split={"val": 0.2, "test": 0.2}), seed=0)
    n = len(data.classes)
    result = fit(_model(classes=n), data, TrainConfig(epochs=1, batch_size=16), tmp_path / "run",
                 show_progress=False)
    chosen = result.numerics
    assert chosen["measured"] and len(chosen["seconds_per_step"]) == 4
    assert chosen["label"] in chosen["seconds_per_step"]
    assert result.amp == ("fp32" if chosen["amp"] == "off" else "bfloat16")
    assert (tmp_path / "cache" / "numerics.json").exists()
    explicit = fit(_model(classes=n), data, TrainConfig(epochs=1, batch_size=16, amp="off", channels_last=False),
                   tmp_path / "run2", show_progress=False)
    assert explicit.numerics["measured"] is False and explicit.amp == "fp32"
