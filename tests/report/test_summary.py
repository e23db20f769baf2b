"""What the report leads with, computed from result rows: the variant to deploy, per target, and the hardware
table."""
from __future__ import annotations

from edgecnn.report.summary import best_per_target, best_variant, hardware_rows

ROWS = [{"variant": "fp32", "precision": "fp32", "accuracy": 0.98, "size_bytes": 4000,
         "latency_ms_onnxruntime_b1": 2.0, "fps_kv260": "n/a (dpu targets run INT8 files)"},
        {"variant": "int8-ptq", "precision": "int8-ptq", "accuracy": 0.975, "size_bytes": 1000,
         "latency_ms_onnxruntime_b1": 1.0, "fps_kv260": 900.0, "latency_ms_kv260": 1.111, "energy_mj_kv260": 8.8,
         "unmapped_kv260": ["softmax (Softmax): runs on the host"]},
        {"variant": "w2a2", "precision": "w2a2", "accuracy": 0.95, "size_bytes": 300,
         "latency_ms_onnxruntime_b1": 0.5, "fps_kv260": 5000.0}]  # faster but 3 points below fp32


def test_best_variant_per_target_is_the_fastest_within_a_point_of_fp32():
    rows = ROWS
    best = best_variant(rows)
    assert best.row["variant"] == "int8-ptq" and best.speedup == 2.0 and best.size_ratio == 0.25
    assert best.accuracy_drop_points == 0.5
    assert best_per_target(rows) == [("kv260", "int8-ptq", 900.0)]


def test_the_hardware_table_has_a_row_per_variant_and_target_it_runs_on():
    headers, rows = hardware_rows(ROWS)
    assert headers[:5] == ["variant", "target", "FPS (est.)", "latency ms", "energy mJ/image"]
    assert [r[:3] for r in rows] == [["int8-ptq", "kv260", "900"], ["w2a2", "kv260", "5,000"]]
    assert rows[0][3:5] == ["1.111", "8.800"] and rows[0][-1] == "1: softmax (Softmax): runs on the host"
    assert rows[1][-1] == "none"
