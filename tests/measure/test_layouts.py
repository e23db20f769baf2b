"""Eager PyTorch latency in the fastest memory layout: chosen by measurement, explicit layouts honoured, accuracy
untouched."""
from __future__ import annotations

import pytest
import torch

from edgecnn.data.options import DataConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.measure.latency import LatencyResult, torch_latency_layouts
from edgecnn.measure.options import EvaluateConfig
from edgecnn.models import create_model
from edgecnn.variants.measuring import make_variant
from edgecnn.variants.precisions import BuildJob


def _timer(slow: str, calls: list):
    """A test double for torch_latency: ``slow`` takes 10 ms, the other layout 2 ms."""
    def timer(model, size, batch, *, channels_last, **kwargs):
        layout = "channels_last" if channels_last else "contiguous"
        calls.append((layout, kwargs))
        ms = 10.0 if layout == slow else 2.0
        return LatencyResult("torch", batch, 1, 0, 3, ms, ms, batch / ms * 1e3, layout=layout)
    return timer


@pytest.mark.parametrize("slow, fast", [("channels_last", "contiguous"), ("contiguous", "channels_last")])
def test_fastest_layout_is_kept(slow, fast):
    calls: list = []
    timing = torch_latency_layouts(torch.nn.Identity(), 8, 4, timer=_timer(slow, calls), repeats=3,
                                   dtype=torch.float32)
    assert timing.layout == fast and timing.result.layout == fast and timing.result.median_ms == 2.0
    assert timing.median_ms == {slow: 10.0, fast: 2.0}
    assert {c[0] for c in calls} == {"contiguous", "channels_last"}
    assert all(c[1] == {"repeats": 3, "dtype": torch.float32} for c in calls)  # the variant's own dtype each time


def test_explicit_layout_is_not_measured_against_the_other():
    calls: list = []
    timing = torch_latency_layouts(torch.nn.Identity(), 8, 4, layout="channels_last",
                                   timer=_timer("channels_last", calls))
    assert timing.layout == "channels_last" and [c[0] for c in calls] == ["channels_last"]
    assert timing.median_ms == {"channels_last": 10.0}


def test_layout_choice_leaves_accuracy_alone(small_folder, tmp_path):
    """The same variant measured with each explicit layout and with auto: identical predictions and accuracy."""
    data = prepare_data(DataConfig(root=small_folder, image_size=32, limit_per_class=6), seed=0)
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=10, input_size=32, stem_channels=8, channels=[8, 16], blocks=1)
    outcomes = {}
    for layout in ("auto", "contiguous", "channels_last"):
        job = BuildJob("fp32", model.eval(), data.model_meta("customnet", {}), data, tmp_path / layout)
        ev = EvaluateConfig(latency_batches=[1], latency_repeats=3, backends=["torch"], layout=layout)
        _, metrics, preds = make_variant(job, ev)
        outcomes[layout] = (metrics, preds)
        assert metrics["torch_layout_b1"] in ((layout,) if layout != "auto" else ("contiguous", "channels_last"))
    auto_metrics, auto_preds = outcomes["auto"]
    assert set(auto_metrics["latency_ms_torch_by_layout_b1"]) == {"contiguous", "channels_last"}
    for layout in ("contiguous", "channels_last"):
        metrics, preds = outcomes[layout]
        assert torch.equal(preds, auto_preds) and metrics["accuracy"] == auto_metrics["accuracy"]
        assert "latency_ms_torch_by_layout_b1" not in metrics
