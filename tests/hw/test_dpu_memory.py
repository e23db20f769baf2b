"""The DPU's on-chip buffers are placed on the board's memories: BRAM first, the rest in UltraRAM where the
board has it (the ZCU104's and KV260's reference designs); a configuration larger than both is said not to fit,
never reported as more BRAM than the chip has."""
from __future__ import annotations

import math

import pytest

from edgecnn.hw.estimators.dpu import URAM_PER_BRAM36, _place_memory


@pytest.mark.parametrize("need, bram, uram, placed", [
    (514, 312, 96, {"bram36": 312, "uram": math.ceil((514 - 312) / URAM_PER_BRAM36)}),  # ZCU104, 2 x B4096
    (257, 144, 64, {"bram36": 144, "uram": 15}),  # KV260, B4096: (257 - 144) / 8 = 14.1 -> 15
    (771, 912, 0, {"bram36": 771}),  # ZCU102, 3 x B4096: fits in BRAM
])
def test_buffers_fill_bram_then_uram(need, bram, uram, placed):
    notes: list[str] = []
    used = _place_memory({"dpu_cores": 1, "bram36": need}, {"bram36": bram, "uram": uram}, notes)
    assert {k: used[k] for k in placed} == placed
    assert used["bram36"] <= bram
    assert bool(notes) == (need > bram)


def test_a_configuration_larger_than_the_board_is_said_not_to_fit():
    notes: list[str] = []
    used = _place_memory({"bram36": 771}, {"bram36": 312, "uram": 10}, notes)
    assert used["bram36"] == 771 and "does not fit this board" in notes[0]


def test_every_dpu_board_target_reports_no_more_bram_than_it_has(tmp_path):
    from edgecnn.export.onnx import export_onnx
    from edgecnn.hw import estimate, list_targets
    from edgecnn.models import create_model

    path = export_onnx(create_model("customnet", 10, 32, stem_channels=8, channels=[16], blocks=0),
                       tmp_path / "m.onnx", 32, {})
    for target in (t for t in list_targets() if t.kind == "dpu"):
        est = estimate(path, target.name)
        bram = est.resources_available.get("bram36")
        if bram and "does not fit" not in " ".join(est.notes):
            assert est.resources_used.get("bram36", 0) <= bram, target.name
