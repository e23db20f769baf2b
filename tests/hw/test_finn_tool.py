"""FINN as an external tool: finding its environment, the build-folder writers, the worker's verdict, and (slow, when
FINN's environment is installed) FINN's own front end on edgecnn's files."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
from conftest import require

from edgecnn.errors import EdgeCNNError
from edgecnn.export.finn import FULL_STEPS, build_config, folding_config, full_steps
from edgecnn.hw.finn.tool import FinnReport, finn_python, require_finn
from edgecnn.hw.targets import get_target

WORKER = Path(__file__).parents[2] / "src" / "edgecnn" / "hw" / "finn" / "worker.py"


def _worker():
    spec = importlib.util.spec_from_file_location("finn_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ environment


def test_no_finn_environment_is_a_one_line_error_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    monkeypatch.delenv("EDGECNN_FINN_PYTHON", raising=False)
    assert finn_python() is None
    with pytest.raises(EdgeCNNError, match="edgecnn tools install finn"):
        require_finn()


def test_a_named_interpreter_that_does_not_exist_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_FINN_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(EdgeCNNError, match="does not exist"):
        finn_python()


def test_the_managed_environment_is_found_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    monkeypatch.delenv("EDGECNN_FINN_PYTHON", raising=False)
    python = tmp_path / "tools" / "finn" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert finn_python() == python


def test_estimate_that_requires_finn_fails_in_one_line_without_it(tmp_path, monkeypatch):
    from edgecnn.hw import estimate
    from edgecnn.hw.validation.reference_nets import mlp_qonnx

    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    monkeypatch.delenv("EDGECNN_FINN_PYTHON", raising=False)
    import onnx

    path = tmp_path / "tfc.qonnx.onnx"
    onnx.save(mlp_qonnx([64] * 3), str(path))
    assert "finn" not in estimate(path, "zcu104-finn").extra  # auto: FINN absent, edgecnn's figures alone
    with pytest.raises(EdgeCNNError, match="FINN is not installed"):
        estimate(path, "zcu104-finn", finn=True)


def test_cli_tools_install_rejects_an_unknown_tool():
    from typer.testing import CliRunner

    from edgecnn.cli import app

    result = CliRunner().invoke(app, ["tools", "install", "vivado"])
    assert result.exit_code == 2 and "unknown tool 'vivado'" in result.output


# ------------------------------------------------------------------------------------------------ writers


def test_folding_config_is_finns_apply_config_format():
    config = folding_config({"Defaults": {"x": 1}, "MVAU_hls_0": {"PE": 2, "SIMD": 3}, "Thresholding_rtl_0": {"PE": 1}})
    assert config == {"Defaults": {}, "MVAU_hls_0": {"PE": 2, "SIMD": 3}, "Thresholding_rtl_0": {"PE": 1}}
    with pytest.raises(EdgeCNNError, match="positive integers"):
        folding_config({"MVAU_hls_0": {"PE": 0, "SIMD": 1}})


def test_build_config_for_a_board_builds_to_a_bitstream():
    config = build_config(get_target("zcu104-finn"), steps=list(FULL_STEPS))
    assert config["board"] == "ZCU104" and config["fpga_part"] == "xczu7ev-ffvc1156-2-e"
    assert config["shell_flow_type"] == "vivado_zynq" and config["synth_clk_period_ns"] == 10.0
    assert config["folding_config_file"] == "folding_config.json"
    assert {"bitfile", "pynq_driver", "deployment_package", "estimate_reports"} <= set(config["generate_outputs"])
    assert config["steps"][0] == "step_qonnx_to_finn" and config["steps"][-1] == "step_deployment_package"
    assert "target_fps" not in config  # the folding is edgecnn's, in folding_config.json


def test_build_config_for_a_part_without_a_finn_shell_stops_at_the_ip():
    config = build_config(get_target("zybo-z7-10"), steps=list(FULL_STEPS))
    assert "board" not in config and "bitfile" not in config["generate_outputs"]
    assert config["fpga_part"] == "xc7z010clg400-1" and config["synth_clk_period_ns"] == pytest.approx(1e3 / 150)


def test_build_config_refuses_a_target_that_is_not_an_fpga():
    with pytest.raises(EdgeCNNError, match="no FPGA part"):
        build_config(get_target("kv260"), steps=list(FULL_STEPS))


def test_full_steps_keep_the_streamlining_finn_used():
    resnet = "finn.builder.custom_step_library.resnet.step_resnet_streamline"
    steps = full_steps(["step_qonnx_to_finn", "step_tidy_up", resnet, "step_convert_to_hw"])
    assert resnet in steps and "step_streamline" not in steps and len(steps) == len(FULL_STEPS)
    assert full_steps(["step_streamline"]) == list(FULL_STEPS)


# ------------------------------------------------------------------------------------------------ verdict


def test_report_from_the_worker_sums_finns_layer_resources():
    raw = {"compiled": True, "network": {"estimated_throughput_fps": 1017.25, "max_cycles": 98304,
                                         "critical_path_cycles": 651210, "max_cycles_node_name": "MVAU_hls_1"},
           "layer_resources": {"MVAU_hls_0": {"LUT": 369.0, "BRAM_18K": 1, "DSP": 0, "URAM": 0},
                               "MVAU_rtl_0": {"LUT": 100.0, "BRAM_18K": 0, "DSP": 2, "URAM": 0}}}
    report = FinnReport.from_worker(raw)
    assert report.fps == 1017.25 and report.bottleneck == "MVAU_hls_1"
    assert report.resources == {"lut": 469.0, "bram18": 1.0, "dsp": 2.0, "uram": 0.0}
    assert report.verdict() == "FINN built every layer as a hardware layer"


def test_refusal_names_the_first_node_and_why_in_one_line():
    raw = {"compiled": False, "failed_step": "step_create_dataflow_partition", "error": "FINNUserError: ...",
           "unmapped": [{"name": "Mul_0", "op_type": "Mul", "why": "float scale between hardware layers"},
                        {"name": "MatMul_0", "op_type": "MatMul", "why": "float input"}]}
    line = FinnReport.from_worker(raw).verdict()
    assert "Mul_0 (Mul)" in line and "float scale" in line and "+1 more: MatMul_0" in line and "\n" not in line


def _graph(ops):
    """A qonnx ModelWrapper of a chain of nodes (op_type, domain), float tensors of shape (1, 4)."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper

    nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=f"{op}_{i}", domain=domain)
             for i, (op, domain) in enumerate(ops)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"t{len(ops)}", TensorProto.FLOAT, [1, 4])])
    return ModelWrapper(helper.make_model(graph))


def test_worker_reports_only_nodes_between_hardware_layers():
    require("qonnx", "lowbit")
    hw = "finn.custom_op.fpgadataflow"
    model = _graph([("Transpose", ""), ("Thresholding", hw), ("Mul", ""), ("MVAU", hw), ("Mul", "")])
    unmapped = _worker()._unmapped(model)
    assert [u["name"] for u in unmapped] == ["Mul_2"]  # head and tail stay on the host, as FINN leaves them
    assert "float scale" in unmapped[0]["why"]


# ------------------------------------------------------------------------------------------------ FINN itself (slow)

needs_finn = pytest.mark.skipif(finn_python() is None, reason="FINN's environment is not installed "
                                                             "(edgecnn tools install finn)")


def _lowbit_file(tmp_path, ready: bool, residual: str | None = None, bits: str = "w4a4", channels: int = 3) -> Path:
    import torch

    from edgecnn.compress.lowbit import finn_ready, to_lowbit
    from edgecnn.export.qonnx import export_qonnx
    from edgecnn.models.customnet import CustomNet

    torch.manual_seed(0)
    net = CustomNet(num_classes=4, input_size=16, stem_channels=4, channels=[8, 16], blocks=1 if residual else 0,
                    residual=residual is not None, in_channels=channels)
    q = to_lowbit(net, {"default": bits, "residual": residual or "separate"}, 16)
    if not ready:
        return export_qonnx(q, tmp_path / "raw.qonnx.onnx", 16)
    with finn_ready(q):
        return export_qonnx(q, tmp_path / "ready.qonnx.onnx", 16)


@pytest.mark.slow
@needs_finn
def test_finn_builds_a_finn_ready_customnet_and_agrees_on_fps(tmp_path):
    from edgecnn.hw import estimate

    est = estimate(_lowbit_file(tmp_path, ready=True), "zcu104-finn", fps=2000, finn=True)
    finn = est.extra["finn"]
    assert finn["compiled"] and est.extra["finn_deployable"]
    assert abs(finn["fps"] - est.fps) <= 0.05 * finn["fps"]


@pytest.mark.slow
@needs_finn
def test_finn_refuses_the_float_average_head_and_edgecnn_says_which_node(tmp_path):
    from edgecnn.hw import estimate

    est = estimate(_lowbit_file(tmp_path, ready=False), "zcu104-finn", finn=True)
    assert not est.extra["finn_deployable"]
    assert any(n.startswith("FINN refuses it: Mul_") for n in est.notes)


@pytest.mark.slow
@needs_finn
@pytest.mark.parametrize("bits", ["w4a4", "w4a2", "w8a8"])  # a2: the pooled sum is narrower than 8 bits
def test_finn_executes_what_edgecnn_exported(tmp_path, bits):
    """FINN's Python execution of the graph it converted to hardware layers gives the QONNX file's logits (to float
    rounding of the last scale), also where the global pool's sum is narrower than its 8-bit output."""
    import numpy as np

    from edgecnn.export.qonnx import run_qonnx
    from edgecnn.hw.finn.tool import run_finn

    path = _lowbit_file(tmp_path, ready=True, bits=bits)
    x = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    report = run_finn(path, get_target("zcu104-finn"), target_fps=1000, inputs=x)
    assert report.compiled and report.logits is not None
    assert np.abs(report.logits - run_qonnx(path, x)).max() < 1e-5


@pytest.mark.slow
@needs_finn
def test_finn_builds_and_executes_a_grayscale_model(tmp_path):
    """A model of grayscale data (data.channels: 1) reaches FINN with its one input channel: FINN compiles it and
    its execution of 1-channel images gives the QONNX file's logits."""
    import numpy as np

    from edgecnn.export.qonnx import run_qonnx
    from edgecnn.hw.finn.tool import run_finn

    path = _lowbit_file(tmp_path, ready=True, channels=1)
    x = np.random.default_rng(0).standard_normal((6, 1, 16, 16)).astype(np.float32)
    report = run_finn(path, get_target("zcu104-finn"), target_fps=1000, inputs=x)
    assert report.compiled and report.logits is not None
    assert np.abs(report.logits - run_qonnx(path, x)).max() < 1e-5


@pytest.mark.slow
@needs_finn
def test_finn_builds_residual_blocks_only_on_one_grid(tmp_path):
    """A residual CustomNet with ``residual: shared`` goes through FINN (its ResNet streamlining) with the FPS
    edgecnn estimates; with two grids FINN refuses it and edgecnn says how to quantize it instead."""
    from edgecnn.hw import estimate

    shared = estimate(_lowbit_file(tmp_path, ready=True, residual="shared"), "zcu104-finn", fps=2000, finn=True)
    assert shared.extra["finn_deployable"]
    assert abs(shared.extra["finn"]["fps"] - shared.fps) <= 0.05 * shared.extra["finn"]["fps"]
    separate = estimate(_lowbit_file(tmp_path, ready=True, residual="separate"), "zcu104-finn", finn=True)
    assert not separate.extra["finn_deployable"]
    assert any("residual: shared" in note for note in separate.notes)


@pytest.mark.slow
@needs_finn
def test_export_folder_loads_in_finn(tmp_path):
    """The build configuration edgecnn writes is one FINN's own DataflowBuildConfig reads (it checks the folding file
    beside it), with every step name known to FINN's builder."""
    target = get_target("zcu104-finn")
    path = tmp_path / "dataflow_build_config.json"
    path.write_text(json.dumps(build_config(target, steps=list(FULL_STEPS))))
    (tmp_path / "folding_config.json").write_text(json.dumps(folding_config({"MVAU_hls_0": {"PE": 1, "SIMD": 1}})))
    check = ("import sys, finn.xsi as x\n[setattr(x, n, None) for n in x._LAZY_NAMES]\n"
             "from finn.builder.build_dataflow_config import DataflowBuildConfig\n"
             "from finn.builder.build_dataflow import resolve_build_steps\n"
             "cfg = DataflowBuildConfig.construct_from(__import__('pathlib').Path(sys.argv[1]))\n"
             "print(len(resolve_build_steps(cfg)), cfg.board, cfg.fpga_part)\n")
    done = subprocess.run([str(finn_python()), "-P", "-c", check, str(path)], capture_output=True, text=True,
                          env={"FINN_BUILD_DIR": str(tmp_path / "b"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == [str(len(FULL_STEPS)), "ZCU104", "xczu7ev-ffvc1156-2-e"]


@pytest.mark.parametrize("spec,res_type", [("w4a4", "dsp"), ("w2a2", "lut")])
def test_folding_handed_to_finn_carries_the_design_edgecnn_priced(tmp_path, spec, res_type):
    """Each MVAU goes to FINN with edgecnn's PE/SIMD and edgecnn's choices as FINN attributes: DSP multipliers for
    4..8-bit operands (LUTs below), weight memories of <= 128 words in LUTRAM, thresholds of <= 4-bit outputs in LUTRAM
    (FINN's own defaults, resType/ram_style 'auto', estimate LUT multipliers and BRAM memories instead)."""
    require("brevitas", "lowbit")
    import torch

    from edgecnn.compress.lowbit import finn_ready, to_lowbit
    from edgecnn.export.qonnx import export_qonnx
    from edgecnn.hw import estimate
    from edgecnn.hw.finn.tool import compute_layers
    from edgecnn.models.customnet import CustomNet

    torch.manual_seed(0)
    q = to_lowbit(CustomNet(num_classes=4, input_size=16, stem_channels=4, channels=[8, 16], blocks=0,
                            residual=False), spec, 16)
    with finn_ready(q):
        path = export_qonnx(q, tmp_path / "m.qonnx.onnx", 16)
    est = estimate(path, "zcu104-finn", finn=False)
    layers = compute_layers(path, est)
    assert len(layers) == 4 and [layer["mh"] for layer in layers] == [4, 8, 16, 4]
    for layer in layers:
        assert (layer["pe"], layer["simd"]) == tuple(est.extra["folding"][layer["name"]].values())
        wmem = layer["mw"] * layer["mh"] // (layer["pe"] * layer["simd"])
        assert layer["attrs"]["ram_style"] == ("distributed" if wmem <= 128 else "block")
    inner = layers[1:-1]  # first layer reads the 8-bit input: 8 + w bits; the classifier has no thresholds
    assert all(layer["attrs"]["resType"] == res_type for layer in inner)
    assert all(layer["attrs"]["ram_style_thresholds"] == "distributed" for layer in inner)


def test_finn_answers_are_reused_only_for_the_same_file_and_request(tmp_path, monkeypatch):
    """A stand-in FINN interpreter (it records each call and answers like the worker): the same file and request are
    answered from edgecnn's cache, a changed file or another request runs FINN again, and a failed start is not
    kept."""
    import os
    import stat

    from edgecnn.hw.finn.tool import run_finn

    calls = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho run >> {calls}\n"
                    "echo '{\"compiled\": true, \"network\": {\"estimated_throughput_fps\": 123.0}}' > \"$4\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDGECNN_FINN_PYTHON", str(fake))
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.qonnx.onnx"
    model.write_bytes(b"first")
    target = get_target("zcu104-finn")
    assert run_finn(model, target, target_fps=100).fps == 123.0
    assert run_finn(model, target, target_fps=100).compiled
    assert calls.read_text().count("run") == 1  # the second answer came from the cache
    run_finn(model, target, target_fps=200)
    model.write_bytes(b"second")
    run_finn(model, target, target_fps=200)
    assert calls.read_text().count("run") == 3
    os.remove(calls)
    fake.write_text("#!/bin/sh\nexit 3\n")  # a broken environment: a one-line error, nothing cached
    with pytest.raises(EdgeCNNError, match="the FINN environment at"):
        run_finn(tmp_path / "m.qonnx.onnx", target, target_fps=300)


def test_a_broken_finn_environment_leaves_edgecnns_estimate_standing(tmp_path, monkeypatch):
    """When FINN is found but fails, an estimate that merely offered FINN's check keeps edgecnn's figures with a note;
    one that required FINN (--finn) stops with the one-line error."""
    import stat

    import onnx

    from edgecnn.hw import estimate
    from edgecnn.hw.validation.reference_nets import mlp_qonnx

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named finn' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDGECNN_FINN_PYTHON", str(fake))
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tfc.qonnx.onnx"
    onnx.save(mlp_qonnx([64] * 3), str(path))
    est = estimate(path, "zcu104-finn")
    assert est.fps > 0 and "finn" not in est.extra
    assert any(n.startswith("FINN's check did not run") and "No module named finn" in n for n in est.notes)
    with pytest.raises(EdgeCNNError, match="No module named finn"):
        estimate(path, "zcu104-finn", finn=True)
