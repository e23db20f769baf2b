"""DPU and systolic-array formulas on hand-computed cases, and their estimators' behaviour."""
from __future__ import annotations

import math

import pytest

from edgecnn.hw import estimate, get_target, load_graph
from edgecnn.hw.estimators.dpu import CALIBRATION, conv_cycles, depthwise_cycles, fc_cycles, layer_bytes
from edgecnn.hw.estimators.systolic import gemm_dims, map_layer, mapping_efficiency, scalesim_cycles
from edgecnn.hw.graph import Layer
from edgecnn.hw.validation.reference_nets import plain_cnn


def _conv(cin, cout, hw, k=3, groups=1, batch=1, op="conv"):
    return Layer(name="c", op=op, onnx_op="Conv", in_shape=(batch, cin, hw, hw), out_shape=(batch, cout, hw, hw),
                 kernel=(k, k), groups=groups, cin=cin, cout=cout,
                 macs=batch * hw * hw * cout * (cin // groups) * k * k, weights=cout * (cin // groups) * k * k)


def test_dpu_conv_cycles_by_hand():
    # ceil(OC/OCP)*ceil(IC/ICP)*ceil(OW/PP)*OH*Kh*Kw = ceil(40/16)*ceil(20/16)*ceil(14/8)*14*9 = 3*2*2*126
    assert conv_cycles(_conv(20, 40, 14), pp=8, icp=16, ocp=16) == 3 * 2 * 2 * 14 * 9
    # a perfectly shaped layer runs at the array's peak: cycles = MACs / (PP*ICP*OCP)
    layer = _conv(32, 32, 16)
    assert conv_cycles(layer, 8, 16, 16) == layer.macs // (8 * 16 * 16)
    # depthwise at half the pixel parallelism (PG338): ceil(C/ICP)*ceil(OW/(PP/2))*OH*K*K = 2*ceil(14/4)*14*9
    assert depthwise_cycles(_conv(32, 32, 14, groups=32, op="dwconv"), 8, 16) == 2 * 4 * 14 * 9
    fc = Layer(name="f", op="fc", onnx_op="Gemm", in_shape=(1, 100), out_shape=(1, 10), cin=100, cout=10, macs=1000)
    assert fc_cycles(fc, 16, 16) == 1 * 7
    assert layer_bytes(fc) == 100 + 10 + 0 + 40


def test_dpu_threads_cores_and_softmax(make_conv_model):
    graph = load_graph(make_conv_model(softmax=True))
    single = estimate(graph, "zcu104", threads=1)
    multi = estimate(graph, "zcu104", threads=4)
    assert multi.fps > single.fps and single.latency_ms == pytest.approx(multi.latency_ms)
    assert single.fps == pytest.approx(single.extra["fps_single_thread"])
    assert single.latency_ms >= CALIBRATION["host_ms"]
    # 1 thread: host + DPU in series; the multi-thread rate is bounded by the cores and by 4 threads' round trip
    dpu_ms, host_ms = single.extra["dpu_ms_per_frame"], single.extra["host_ms_per_frame"]
    cpu_ms = sum(u.cost_ms for u in single.unmapped)
    assert single.latency_ms == pytest.approx(dpu_ms + host_ms + cpu_ms)
    assert multi.fps <= 4 * 1e3 / (host_ms + cpu_ms + dpu_ms / 2) * (1 + 1e-9)
    assert [u.op for u in single.unmapped] == ["softmax"]
    # a bigger array is never slower; a B512 is slower than a B4096 on the same model
    big = estimate(graph, "dpu-b4096", threads=1)
    small = estimate(graph, "dpu-b512", threads=1)
    assert big.extra["dpu_ms_per_frame"] < small.extra["dpu_ms_per_frame"]


def test_dpu_memory_bound_layer():
    # a 1x1 conv on a large map moves many bytes for few MACs: memory time dominates
    model = plain_cnn([(8, 1, 1, 0)], 224, [2], in_channels=8)
    est = estimate(model, "kv260", threads=1)
    conv = next(r for r in est.layers if r.op == "conv")
    assert conv.bound == "memory"


def test_scalesim_formula_by_hand():
    # (2R + C + T - 2) * ceil(Sr/R) * ceil(Sc/C) with R=C=4, Sr=8, Sc=4, T=9
    assert scalesim_cycles(8, 4, 9, 4, 4) == (8 + 4 + 9 - 2) * 2 * 1
    assert mapping_efficiency(6, 4, 4, 4) == pytest.approx(24 / 32)
    layer = _conv(4, 8, 4, k=3)
    assert gemm_dims(layer) == (16, 8, 36, 1)
    os_cyc, os_eff = map_layer(layer, "os", 4, 4)
    ws_cyc, _ = map_layer(layer, "ws", 4, 4)
    is_cyc, _ = map_layer(layer, "is", 4, 4)
    assert os_cyc == (8 + 4 + 36 - 2) * math.ceil(16 / 4) * math.ceil(8 / 4) and os_eff == 1.0
    assert ws_cyc == (8 + 4 + 16 - 2) * math.ceil(36 / 4) * math.ceil(8 / 4)
    assert is_cyc == (8 + 4 + 8 - 2) * math.ceil(36 / 4) * math.ceil(16 / 4)
    # depthwise: one GEMM per channel with Sc = 1 -> one column of the array used
    dw = _conv(16, 16, 8, groups=16, op="dwconv")
    cycles, eff = map_layer(dw, "ws", 4, 4)
    assert cycles == 16 * scalesim_cycles(9, 1, 64, 4, 4) and eff == pytest.approx(9 / (12 * 4))


def test_systolic_estimator(make_conv_model):
    path = make_conv_model(softmax=True)
    edge = estimate(path, "edgetpu-like")
    tpu = estimate(path, "tpuv1-like")
    assert edge.kind == "systolic" and edge.extra["dataflow"] == "ws"
    assert 0 < edge.extra["utilization"] <= 1 and 0 < edge.extra["mapping_efficiency"] <= 1
    assert [u.op for u in edge.unmapped] == ["softmax"]
    assert tpu.power_w == get_target("tpuv1-like").power.watts
    # output stationary gives a different cycle count than weight stationary
    os_est = estimate(path, "edgetpu-like", dataflow="os")
    assert os_est.extra["dataflow"] == "os" and os_est.latency_ms != edge.latency_ms


def test_cpu_row_scales_with_macs(make_conv_model):
    est = estimate(make_conv_model(), "cpu-host")
    gmacs = get_target("cpu-host").cpu.gmacs
    compute = sum(r.time_ms for r in est.layers if r.macs)
    assert compute == pytest.approx(sum(r.macs for r in est.layers) / (gmacs * 1e9) * 1e3)
