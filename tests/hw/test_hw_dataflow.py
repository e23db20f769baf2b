"""FINN formulas against hand-computed cases, the published CNV figures, and the folding optimizer."""
from __future__ import annotations

import math

import pytest

from edgecnn.hw import HardwareModelError, estimate, get_target, load_graph
from edgecnn.hw.estimators import finn_formulas as finn
from edgecnn.hw.estimators.dataflow import lower
from edgecnn.hw.estimators.folding import legal_foldings
from edgecnn.hw.validation.reference_nets import CNV_FOLDING, cnv_qonnx, plain_cnn

CNV_CYCLES = {
    (1, 1): [32400, 28224, 20736, 28800, 20736, 18432, 32768, 32768, 1024],
    (2, 2): [64800, 112896, 82944, 115200, 82944, 73728, 65536, 65536, 1024],
}


def test_mvau_cycles_and_memory_by_hand():
    # (MH/PE)*(MW/SIMD)*vectors = (64/16)*(27/3)*900
    assert finn.mvau_cycles(27, 64, 16, 3, 900) == 32400
    assert finn.mvau_wmem(27, 64, 16, 3) == 36
    # FINN-R BRAM table: width 1 -> ceil(omega/16384); width 9 -> ceil(omega/2048)*ceil(9/9)
    assert finn.bram18_for_weights(20000, 1) == 2
    assert finn.bram18_for_weights(4096, 9) == 2
    assert finn.bram18_for_weights(600, 40) == math.ceil(600 / 1024) * math.ceil(40 / 18)
    assert finn.bram18_for_weights(100, 40) == 1 * 2  # omega <= 512, width > 18: ceil(100/512)*ceil(40/36)
    assert finn.uram_for_weights(5000, 100) == 2 * 2


def test_mvau_lut_and_dsp_by_hand():
    # PE=2, SIMD=4, MW=64, W=A=2, B=2, WMEM=8 (LUTRAM), TMEM=4:
    # mult = 4*(2*ceil(4/6)-1)*4 = 16; adder = 4*(2*4-1) = 28
    # alpha = log2(64)+2+2-1-0 = 9 -> acc = ceil(9 + log2(1+2^-9) + 1) = 11
    # thr = 3*11*ceil(4/64) = 33; comp = 3*11 = 33; c2 = 2*4*2*ceil(8/64) = 16
    # LUT = 300 + 1.1*2*(16+28+11+33+33) + 16 = 582.2 -> 582
    assert finn.acc_bits(64, 2, 2, False) == 11
    assert finn.mvau_lut(2, 4, 64, 2, 2, 2, 8, 4, res_dsp=False, weights_in_lutram=True) == 582
    assert finn.mvau_dsp(2, 4, 8, 8, res_dsp=True) == 8 and finn.mvau_dsp(2, 4, 8, 8, res_dsp=False) == 0


def test_vvau_swg_pool_threshold_cycles_by_hand():
    assert finn.vvau_cycles(32, 3, 3, 8, 3, 10, 10) == (32 // 8) * (9 // 3) * 100
    # SWG: IFM 32x32x3, K3, OFM 30, SIMD 3: 32*3*1*1 + 30*max(30*9*1, 1*32*1) = 96 + 8100
    assert finn.swg_cycles(3, 3, 3, 32, 32, 30, 30, 1, 1, 3) == 8196
    assert finn.streaming_maxpool_cycles(28, 2) == int(28 * 28 * 1.25)
    assert finn.pool_cycles(16, 4, 2, 7, 7) == 16 * 4 // 2 * 49
    assert finn.thresholding_cycles(64, 4, 8, 8) == 16 * 64
    assert finn.thresholding_lut(64, 4, 4) == 4 * 4 + 4 * 4 * math.ceil(16 / 64)


@pytest.mark.parametrize("bits", [(1, 1), (2, 2)])
def test_cnv_matches_finn_examples(bits):
    """Per-layer MVAU cycles and FPS at 100 MHz of the finn-examples CNV builds (Pynq-Z1)."""
    est = estimate(cnv_qonnx(*bits), "pynq-z1", folding=CNV_FOLDING[bits])
    mvau = [row.cycles for row in est.layers if row.op.endswith("/MVAU")]
    assert mvau == CNV_CYCLES[bits]
    expected_fps = 100e6 / max(CNV_CYCLES[bits])
    assert est.extra["fps_compute_only"] == pytest.approx(expected_fps)
    # the sliding-window generators and pools do not become the bottleneck with finn-examples' folding
    assert est.fps == pytest.approx(expected_fps) and est.bottleneck.endswith(":MVAU")
    assert round(est.fps) == {(1, 1): 3052, (2, 2): 868}[bits]
    assert est.latency_ms * 1e-3 * 100e6 >= sum(CNV_CYCLES[bits])  # latency sums the pipeline


def test_folding_optimizer_respects_budget_and_divisors():
    graph = load_graph(cnv_qonnx(2, 2))
    target = get_target("pynq-z1")
    previous_fps = 0.0
    for lut in (8000, 15000, 30000, 45000):
        budget = {"lut": lut, "bram36": 120, "dsp": 200}
        est = estimate(graph, target, budget=budget)
        used = est.resources_used
        assert est.fits, est.notes
        assert used["lut"] <= lut and used["bram36"] <= 120 and used["dsp"] <= 200
        assert est.fps >= previous_fps  # a larger budget never makes it slower
        previous_fps = est.fps
        nodes = lower(graph).nodes
        assert sum(node.name in est.extra["folding"] for node in nodes) == 15  # the 9 MVAUs and 6 SWGs are folded
        for node in nodes:
            fold = est.extra["folding"].get(node.name, {})
            pe, simd = fold.get("PE", 1), fold.get("SIMD", 1)
            assert node.max_pe % pe == 0 and node.max_simd % simd == 0
    assert previous_fps > 3 * estimate(graph, target, budget={"lut": 8000, "bram36": 120, "dsp": 200}).fps


def test_folding_for_target_fps_uses_fewest_resources():
    graph = load_graph(cnv_qonnx(1, 1))
    slow = estimate(graph, "pynq-z1", fps=500)
    fast = estimate(graph, "pynq-z1", fps=3000)
    assert slow.fps >= 500 and fast.fps >= 3000
    assert slow.resources_used["lut"] < fast.resources_used["lut"]
    unreachable = estimate(graph, "pynq-z1", fps=1e9)
    assert any("not reachable" in n for n in unreachable.notes)


def test_illegal_folding_is_refused():
    with pytest.raises(HardwareModelError, match="PE must divide 64"):
        estimate(cnv_qonnx(1, 1), "pynq-z1", folding=[(5, 3)] + CNV_FOLDING[(1, 1)][1:])
    with pytest.raises(HardwareModelError, match="one \\(PE, SIMD\\) per Conv/Gemm"):
        estimate(cnv_qonnx(1, 1), "pynq-z1", folding=[(1, 1)])


def test_legal_foldings_are_divisors():
    node = next(n for n in lower(load_graph(cnv_qonnx(1, 1))).nodes if n.kind == "MVAU")
    pairs = legal_foldings(node)
    assert (16, 3) in pairs and all(64 % pe == 0 and 27 % simd == 0 for pe, simd in pairs)


def test_two_bit_weights_use_fewer_luts_than_eight_bit():
    convs = [(16, 3, 1, 1), (32, 3, 1, 1)]
    fold = [(4, 9), (4, 16), (2, 8)]
    two = estimate(plain_cnn(convs, 16, [10], w_bits=2, a_bits=2), "pynq-z1", folding=fold)
    eight = estimate(plain_cnn(convs, 16, [10], w_bits=8, a_bits=8), "pynq-z1", folding=fold)
    assert [r.cycles for r in two.layers] == [r.cycles for r in eight.layers]  # same folding, same cycles
    assert two.resources_used["lut"] < eight.resources_used["lut"]
    assert two.resources_used["bram36"] <= eight.resources_used["bram36"]


def test_unknown_op_is_unmapped_and_rest_estimated():
    from onnx import helper

    model = plain_cnn([(8, 3, 1, 1), (8, 3, 1, 1)], 16, [10], w_bits=4, a_bits=4)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "Swishy", "custom.ops"
    model.opset_import.append(helper.make_opsetid("custom.ops", 1))
    est = estimate(model, "pynq-z1")
    (odd,) = est.unmapped
    assert odd.op == "Swishy" and "not modelled" in odd.why and odd.cost_ms > 0
    assert sum(1 for r in est.layers if r.op.endswith("/MVAU")) == 3 and est.fps > 0
