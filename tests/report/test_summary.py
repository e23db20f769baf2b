"""What the report leads with, computed from result rows: the variant to deploy, per target, and the hardware
table."""
from __future__ import annotations

from edgecnn.report.summary import best_per_target, best_variant, front, hardware_rows, pareto_front

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


def test_pareto_front_keeps_what_nothing_beats_on_both_axes():
    # (cost, accuracy, name): b is beaten by a (cheaper and more accurate); d and e are equal, neither beats the other
    points = [(1.0, 0.90, "a"), (2.0, 0.85, "b"), (3.0, 0.95, "c"), (5.0, 0.97, "d"), (5.0, 0.97, "e"),
              (6.0, 0.96, "f")]
    names = [p[2] for p in front(points, lambda p: p[0], lambda p: p[1])]
    assert names == ["a", "c", "d", "e"]
    # the same points with cost read as throughput (higher is better): f is the fastest, then d/e; a and b are beaten
    fast = [p[2] for p in front(points, lambda p: p[0], lambda p: p[1], higher_cost_is_better=True)]
    assert fast == ["f", "d", "e"]
    rows = [{"variant": n, "accuracy": a, "size_bytes": c} for c, a, n in points] + [{"variant": "x", "accuracy": 1.0}]
    assert pareto_front(rows, "size_bytes") == ["a", "c", "d", "e"]  # a row without the cost is not placed
