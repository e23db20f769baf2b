"""A FINN build folder for a low-bit model: what a user with Vivado needs to go from edgecnn's model to a bitstream.

The writers of its files: ``folding_config.json`` (edgecnn's folding under FINN's node names, which FINN's own front
end gives), ``dataflow_build_config.json`` (part, clock, shell flow, the full step list to a bitstream and driver)
and a README with the one command to run. ``edgecnn.api.export_finn`` puts the folder together.
"""
from __future__ import annotations

from typing import Any

from edgecnn.errors import EdgeCNNError

#: FINN's full flow (finn.builder.build_dataflow_config.default_build_dataflow_steps, finn-plus 1.6.1)
FULL_STEPS = (
    "step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw", "step_minimize_bit_width_initial",
    "step_create_dataflow_partition", "step_specialize_layers", "step_target_fps_parallelization",
    "step_apply_folding_config", "step_minimize_bit_width", "step_transpose_decomposition",
    "step_generate_estimate_reports", "step_assign_ddr_weight_offsets", "step_generate_hardware",
    "step_create_stitched_ip", "step_measure_rtlsim_performance", "step_out_of_context_synthesis",
    "step_prepare_synthesis", "step_synthesize_bitfile", "step_make_driver", "step_deployment_package",
)
MODEL_FILE = "model.qonnx.onnx"


def folding_config(folding: dict[str, dict[str, int]]) -> dict[str, Any]:
    """FINN's folding_config.json: ``{"Defaults": {}, node name: {"PE": p, "SIMD": s, "resType": ..., ...}, ...}``
    (ApplyConfig format: any node attribute; PE and SIMD must be positive integers)."""
    config: dict[str, Any] = {"Defaults": {}}
    for name, attrs in folding.items():
        if name == "Defaults":
            continue
        bad = [k for k in ("PE", "SIMD") if k in attrs and (not isinstance(attrs[k], int) or attrs[k] < 1)]
        if bad:
            raise EdgeCNNError(f"folding of {name}: {', '.join(bad)} must be positive integers, got {attrs}")
        config[name] = dict(attrs)
    return config


def build_config(target, *, steps: list[str] | tuple[str, ...], fps: float | None = None,
                 output_dir: str = "output") -> dict[str, Any]:
    """FINN's dataflow_build_config.json for ``target``, building to a bitstream, a PYNQ driver and a deployment
    package with the folding in folding_config.json (FINN's DataflowBuildConfig fields)."""
    flow = target.dataflow
    if target.kind != "dataflow" or flow is None or not flow.fpga_part:
        raise EdgeCNNError(f"target '{target.name}' names no FPGA part for FINN; use a dataflow target such as "
                           "zcu104-finn (see `edgecnn targets`)")
    outputs = ["estimate_reports", "stitched_ip"]
    config: dict[str, Any] = {
        "output_dir": output_dir, "synth_clk_period_ns": round(1e3 / target.clock_mhz, 6),
        "fpga_part": flow.fpga_part, "folding_config_file": "folding_config.json", "steps": list(steps),
        "auto_fifo_depths": True, "save_intermediate_models": True,
    }
    if flow.finn_board:  # a shell exists for the board: bitstream, driver and deployment package
        outputs += ["bitfile", "pynq_driver", "deployment_package"]
        config.update(board=flow.finn_board, shell_flow_type="vivado_zynq")
    config["generate_outputs"] = outputs
    if fps is not None:
        config["target_fps"] = int(round(fps))
    return config


def full_steps(estimate_steps: list[str]) -> list[str]:
    """FINN's full flow with the streamlining step FINN's front end used for this model (its ResNet streamlining
    for residual adds)."""
    streamline = next((s for s in estimate_steps if "streamline" in s), "step_streamline")
    return [streamline if s == "step_streamline" else s for s in FULL_STEPS]


def readme(target, model_name: str, report) -> str:
    finn = f"FINN {report.finn_version}" if report.finn_version else "FINN"
    verdict = report.verdict()
    fps = f"{report.fps:,.0f} FPS" if report.fps else "no estimate"
    return f"""# FINN build folder: {model_name} on {target.name}

{verdict}. {finn}'s estimate at edgecnn's folding: {fps} at {target.clock_mhz:g} MHz (finn_estimate.json).

With Vivado installed (its settings sourced) and finn-plus in the active environment:

    finn build dataflow_build_config.json {MODEL_FILE}

writes the bitstream, the PYNQ driver and the deployment package under `output/` (board
{target.dataflow.finn_board or 'none: FINN has no shell for this part, so it stops at the stitched IP'}).
Folding (PE/SIMD per node): folding_config.json. Edit it and rerun to trade resources for speed.
"""
