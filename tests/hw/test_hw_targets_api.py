"""Target catalog, user targets, budget parsing, the estimate API, its records and its views."""
from __future__ import annotations

import json

import pytest

from edgecnn.hw import (
    HardwareModelError,
    estimate,
    get_target,
    list_targets,
    parse_budget,
    plot_layer_cycles,
    render_estimate,
)
from edgecnn.hw.targets import CATALOG


def test_catalog_has_the_issue_targets():
    names = {t.name for t in list_targets()}
    assert {"zcu102", "zcu104", "kv260", "zybo-z7-10", "pynq-z1", "pynq-z2", "ultra96", "zcu104-finn",
            "edgetpu-like", "tpuv1-like", "cpu-host"} <= names
    assert {f"dpu-b{n}" for n in (512, 800, 1024, 1152, 1600, 2304, 3136, 4096)} <= names
    b4096 = get_target("kv260").dpu
    assert (b4096.pp, b4096.icp, b4096.ocp) == (8, 16, 16)
    # PG338: B4096 @ 300 MHz = 1.229 TOPS peak
    assert b4096.peak_ops_per_cycle * 300e6 / 1e12 == pytest.approx(1.2288, abs=1e-4)
    assert get_target("zybo-z7-10").resources.lut == 17600
    assert all(t.power.source for t in list_targets())  # every power figure says where it comes from


def test_list_targets_pattern_and_alias():
    assert [t.name for t in list_targets("dpu-b1*")] == ["dpu-b1024", "dpu-b1152", "dpu-b1600"]
    assert get_target("xc7z010").name == "zybo-z7-10"


def test_unknown_target_suggests_close_matches():
    with pytest.raises(HardwareModelError) as err:
        get_target("kv26")
    msg = str(err.value)
    assert msg.startswith("unknown target 'kv26'") and "kv260" in msg and "edgecnn targets" in msg


def test_user_targets_file(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("targets:\n  - name: my-zynq\n    kind: dataflow\n    clock_mhz: 125\n"
                    "    resources: {lut: 30000, bram36: 80, dsp: 100}\n"
                    "    power: {watts: 1.2, source: my bench measurement}\n")
    t = get_target("my-zynq", extra_file=user)
    assert t.kind == "dataflow" and t.clock_mhz == 125 and t.dataflow.utilization_cap == 0.85
    assert get_target("kv260", extra_file=user).name == "kv260"  # the catalog is still there
    user.write_text("targets:\n  - name: typo\n    kind: dataflow\n    clock_mhz: 100\n    lutt: 3\n"
                    "    power: {watts: 1, source: x}\n")
    with pytest.raises(HardwareModelError, match="unknown key 'lutt'"):
        get_target("typo", extra_file=user)
    user.write_text("targets:\n  - name: nodpu\n    kind: dpu\n    clock_mhz: 100\n    power: {watts: 1, source: x}\n")
    with pytest.raises(HardwareModelError, match="needs a 'dpu:' section"):
        get_target("nodpu", extra_file=user)


def test_catalog_file_is_the_packaged_yaml():
    assert CATALOG.name == "targets.yaml" and CATALOG.is_file()


def test_parse_budget():
    assert parse_budget("lut=10000, bram=50,dsp=80") == {"lut": 10000.0, "bram36": 50.0, "dsp": 80.0}
    assert parse_budget("bram18=20") == {"bram36": 10.0}
    with pytest.raises(HardwareModelError, match="unknown budget resource 'lutt' — did you mean: lut"):
        parse_budget("lutt=5")
    with pytest.raises(HardwareModelError, match="must be a number"):
        parse_budget("lut=many")
    with pytest.raises(HardwareModelError, match="has no '='"):
        parse_budget("lut")
    with pytest.raises(HardwareModelError, match=">= 0"):
        parse_budget("dsp=-1")


def test_estimate_record_views(tmp_path, make_conv_model):
    path = make_conv_model(batch="batch", softmax=True)
    est = estimate(path, "kv260")
    d = est.to_dict()
    json.dumps(d)  # JSON-serialisable
    assert d["kind"] == "dpu" and d["layers"] and d["bottleneck"]
    row = est.summary_row()
    assert {"fps", "latency_ms", "energy_mj", "lut", "bram", "dsp", "power_w"} <= set(row)
    assert row["fps"] == pytest.approx(est.fps, rel=1e-5)
    # energy = power x time per image
    assert est.energy_mj_per_image == pytest.approx(est.power_w / est.fps * 1e3)
    assert "kv260" in est.power_source and "Kria" in est.power_source
    # Softmax: the DPU leaves it to the CPU, listed with a cost
    (soft,) = est.unmapped
    assert soft.op == "softmax" and "CPU" in soft.why and "us" in soft.cost
    png = plot_layer_cycles(est, tmp_path / "cycles.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(render_estimate(est))
    text = console.export_text()
    assert "FPS" in text and "softmax" in text


def test_estimate_argument_errors(make_conv_model):
    path = make_conv_model()
    with pytest.raises(HardwareModelError, match="did you mean: .*pynq-z1"):
        estimate(path, "pynq-z")
    with pytest.raises(HardwareModelError, match="positive number"):
        estimate(path, "pynq-z1", fps=-3)
    est = estimate(path, "kv260", budget={"lut": 10})
    assert any("dataflow targets only" in n for n in est.notes)


def test_estimator_options_are_typed_and_an_unknown_one_is_a_one_line_error(make_conv_model):
    from edgecnn.hw.estimators.base import estimator_for
    from edgecnn.hw.estimators.dataflow import DataflowOptions
    from edgecnn.hw.estimators.dpu import DPUOptions
    from edgecnn.hw.estimators.systolic import SystolicOptions

    path = make_conv_model()
    with pytest.raises(HardwareModelError) as err:
        estimate(path, "kv260", folding=[(1, 1)])
    assert str(err.value) == ("unknown option 'folding' for a dpu target (known options: budget, calibration, fps, "
                              "threads)")
    with pytest.raises(HardwareModelError, match=r"^unknown option 'foldng' for a dataflow target — did you mean: "
                                                 r"folding\? \(known options: budget, folding, fps, threads\)$"):
        estimate(path, "pynq-z1", foldng=[(1, 1)])
    assert estimator_for("dpu").options(calibration={"host_ms": 1.0}) == DPUOptions(calibration={"host_ms": 1.0})
    assert estimator_for("systolic").options(dataflow="os") == SystolicOptions(dataflow="os")
    assert estimator_for("dataflow").options_type is DataflowOptions
    # the typed options reach the estimator as the keywords did
    assert estimate(path, "edgetpu-like", dataflow="os").extra["dataflow"] == "os"
    assert estimate(path, "kv260", threads=1).extra["threads"] == 1


def test_fits_and_resources_are_typed_fields_and_the_json_keeps_its_layout(make_conv_model):
    from edgecnn.hw.estimators.base import FabricResources

    path = make_conv_model()
    est = estimate(path, "pynq-z1", finn=False)
    assert isinstance(est.fits, bool) and "fits" not in est.extra
    res = est.resources
    assert res is not None and (res.lut, res.bram36, res.dsp) == tuple(est.resources_used[k]
                                                                        for k in ("lut", "bram36", "dsp"))
    d = est.to_dict()
    assert "fits" not in d and list(d["extra"])[:2] == ["folding_mode", "fits"] and d["extra"]["fits"] is est.fits
    row = est.summary_row()
    assert row["fits"] is est.fits and row["lut"] == pytest.approx(res.lut) and row["bram"] == pytest.approx(res.bram36)
    dpu = estimate(path, "kv260")
    assert dpu.fits is None and "fits" not in dpu.summary_row() and "fits" not in dpu.to_dict()["extra"]
    # the KV260's B4096 buffers fill its 144 BRAM36 and spill into UltraRAM (PG338's URAM option)
    assert dpu.resources == FabricResources(bram36=dpu.resources_used["bram36"], uram=dpu.resources_used["uram"])
    assert dpu.resources.bram36 <= dpu.resources_available["bram36"]
    assert estimate(path, "cpu-host").resources is None
