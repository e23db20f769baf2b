"""Runs FINN's own compiler front end on one QONNX file; executed by the FINN environment's interpreter.

edgecnn cannot import FINN (finn-plus pins onnx, protobuf, brevitas and qonnx versions edgecnn does not use), so
this file is a standalone script: ``python finn_worker.py REQUEST.json RESULT.json``. It imports nothing from
edgecnn. It runs FINN's build steps from ``step_qonnx_to_finn`` to ``step_generate_estimate_reports`` (no
Vivado: the steps that simulate or synthesise are not run) and writes one JSON result:

- ``compiled``: whether every node between the first and the last hardware layer became a FINN hardware layer;
  otherwise ``unmapped`` names each node left over, its input data type and why FINN kept it;
- ``folding_config``: the folding FINN built with (edgecnn's folding for the compute layers, the remaining
  nodes folded to keep off the critical path, or FINN's own ``target_fps`` folding);
- ``network``, ``layer_cycles``, ``layer_resources``: FINN's estimate reports.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

HW_DOMAIN = "finn.custom_op.fpgadataflow"
RESNET_STREAMLINE = "finn.builder.custom_step_library.resnet.step_resnet_streamline"
#: FINN node attributes that fold a node, and the attribute whose divisors are legal values
FOLD_DIMENSIONS = {"PE": ("MH", "NumChannels", "Channels", "Labels"), "SIMD": ("MW", "IFMChannels", "NumChannels")}


def _boot(build_dir: Path) -> None:
    """FINN settings from a build folder, and the simulation names that need Vivado stubbed (never used here)."""
    os.environ["FINN_BUILD_DIR"] = str(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    import finn.xsi as xsi

    for name in xsi._LAZY_NAMES:  # build_dataflow_steps imports finn.xsi.SimEngine at module level
        setattr(xsi, name, None)


def _steps(has_join: bool) -> list[str]:
    from finn.builder import build_dataflow_config as bc

    steps = list(bc.estimate_only_dataflow_steps)
    if has_join:  # residual adds: FINN's own ResNet streamlining moves scales past forks and joins
        steps[steps.index("step_streamline")] = RESNET_STREAMLINE
    return steps


def _is_hw(node) -> bool:
    return node.domain.startswith(HW_DOMAIN)


def _why(model, node) -> str:
    dtypes = [str(model.get_tensor_datatype(t)) for t in node.input if model.get_initializer(t) is None]
    kind = node.op_type
    if kind in ("MatMul", "Conv", "Im2Col") and "FLOAT32" in dtypes:
        return (f"{kind} on a float input ({', '.join(dtypes)}): the layer before it leaves a float scale; "
                "quantize its input onto one integer grid")
    if kind in ("Add", "Sub") or "Add" in kind:
        return "residual add whose inputs are not on one integer grid: give both branches one shared quantizer"
    if kind in ("Mul", "Div"):
        return "float scale between hardware layers that streamlining could not absorb into a threshold"
    return f"FINN has no hardware layer for {kind} with input {', '.join(dtypes) or 'constants'}"


def _unmapped(model) -> list[dict]:
    """Non-hardware nodes between the first and the last hardware layer (FINN leaves head and tail on the host)."""
    nodes = list(model.graph.node)
    hw = [i for i, n in enumerate(nodes) if _is_hw(n)]
    if not hw:
        return [{"name": n.name, "op_type": n.op_type, "why": _why(model, n)} for n in nodes]
    return [{"name": n.name, "op_type": n.op_type, "why": _why(model, n)}
            for n in nodes[hw[0]:hw[-1] + 1] if not _is_hw(n)]


def _child(model):
    """The dataflow partition's model (FINN builds the hardware layers in a child graph)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parts = model.get_nodes_by_op_type("StreamingDataflowPartition")
    return ModelWrapper(getCustomOp(parts[0]).get_nodeattr("model")) if parts else model


def _attrs(inst, names) -> dict:
    out = {}
    for name in names:
        with contextlib.suppress(Exception):
            value = inst.get_nodeattr(name)
            out[name] = value.tolist() if hasattr(value, "tolist") else value
    return out


def _describe(model) -> list[dict]:
    from qonnx.custom_op.registry import getCustomOp

    rows = []
    for node in model.graph.node:
        inst = getCustomOp(node)
        rows.append({"name": node.name, "op_type": node.op_type,
                     **_attrs(inst, ("MW", "MH", "PE", "SIMD", "NumChannels", "IFMChannels", "Channels", "Kernel",
                                     "IFMDim", "OFMDim", "numInputVectors", "Labels"))})
    return rows


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _fold_rest(model, given: dict[str, dict], target_cycles: int) -> dict[str, dict]:
    """Each node not in ``given``: the smallest legal PE/SIMD that keeps it at or below ``target_cycles``."""
    from qonnx.custom_op.registry import getCustomOp

    config: dict[str, dict] = {"Defaults": {}}
    for node in model.graph.node:
        inst = getCustomOp(node)
        if node.name in given:
            config[node.name] = {}
            for key, value in given[node.name].items():
                try:
                    inst.set_nodeattr(key, value)
                except Exception:  # noqa: BLE001 - an attribute this node type lacks (MVAU_rtl has no resType)
                    continue
                config[node.name][key] = value
            continue
        chosen: dict[str, int] = {}
        for attr, dims in FOLD_DIMENSIONS.items():
            dim = next((v for v in (_attrs(inst, dims).values()) if isinstance(v, int) and v > 0), None)
            if dim is None or attr not in _attrs(inst, (attr,)):
                continue
            for value in _divisors(dim):
                with contextlib.suppress(Exception):
                    inst.set_nodeattr(attr, value)
                    if inst.get_exp_cycles() <= target_cycles:
                        break
            chosen[attr] = int(inst.get_nodeattr(attr))
        if chosen:
            config[node.name] = chosen
    return config


def _match(model, layers: list[dict]) -> dict[str, dict]:
    """edgecnn's folding of each compute layer onto FINN's MVAU/VVAU nodes: in graph order, with equal shapes."""
    finn_nodes = [n for n in _describe(model) if n["op_type"].startswith(("MVAU", "VVAU"))]
    if len(finn_nodes) != len(layers):
        raise RuntimeError(f"edgecnn folds {len(layers)} compute layers but FINN built {len(finn_nodes)} MVAU/VVAU "
                           "nodes")
    given = {}
    for node, layer in zip(finn_nodes, layers):
        if node["op_type"].startswith("MVAU") and (node.get("MW"), node.get("MH")) != (layer["mw"], layer["mh"]):
            raise RuntimeError(f"{node['name']} is {node.get('MW')}x{node.get('MH')} in FINN but edgecnn's layer "
                               f"{layer['name']} is {layer['mw']}x{layer['mh']}")
        given[node["name"]] = {"PE": int(layer["pe"]), "SIMD": int(layer["simd"]), **layer.get("attrs", {})}
    return given


def _reports(report_dir: Path) -> dict:
    out = {}
    for key, name in (("network", "estimate_network_performance.json"), ("layer_cycles", "estimate_layer_cycles.json"),
                      ("layer_resources", "estimate_layer_resources.json"), ("ops", "op_and_param_counts.json")):
        path = report_dir / name
        if path.exists():
            out[key] = json.loads(path.read_text())
    return out


def _config(request: dict, out_dir: Path, steps: list[str]):
    from finn.builder import build_dataflow_config as bc

    fps_mode = request.get("target_fps") is not None and not request.get("folding")
    return bc.DataflowBuildConfig(
        output_dir=str(out_dir), synth_clk_period_ns=float(request["clock_ns"]), board=request.get("board"),
        fpga_part=request["part"], shell_flow_type=bc.ShellFlowType(request.get("shell", "vivado_zynq")),
        target_fps=int(request["target_fps"]) if fps_mode else None, steps=steps,
        generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS], save_intermediate_models=False)


def _execute(model, inputs_npy: str, outputs_npy: str) -> None:
    """FINN's own Python execution of the graph after conversion to hardware layers, image by image."""
    import numpy as np
    from qonnx.core.onnx_exec import execute_onnx

    x = np.load(inputs_npy)
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    out = [execute_onnx(model, {name_in: x[i:i + 1]})[name_out] for i in range(len(x))]
    np.save(outputs_npy, np.concatenate(out, axis=0))


class _TimeUp(Exception):
    """The time limit of a FINN attempt ran out."""


def _build(request: dict, out_dir: Path, steps: list[str]) -> dict:
    """FINN's steps on the file: its verdict, folding, reports; the model's logits when asked (``inputs_npy``)."""
    from finn.builder.build_dataflow import resolve_build_steps
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(request["model"])
    cfg = _config(request, out_dir, steps)
    result: dict = {"steps": list(steps), "compiled": False, "unmapped": [], "failed_step": None}
    timings = {}
    for step in resolve_build_steps(cfg):
        name = step.__name__
        if name == "step_apply_folding_config" and request.get("folding"):
            child = _child(model)
            folding = _fold_rest(child, _match(child, request["folding"]), int(request["target_cycles"]))
            path = out_dir / "folding_config.json"
            path.write_text(json.dumps(folding, indent=2))
            cfg.folding_config_file = path
            result["folding_config"] = folding
        start = time.time()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model = step(model, cfg)
        except _TimeUp:
            raise
        except Exception as exc:  # noqa: BLE001 - FINN's refusal is the result
            # the nodes left outside hardware say why only once conversion has run; before it, FINN's message does
            converted = "step_convert_to_hw" in timings
            result.update(failed_step=name, error=" ".join(f"{type(exc).__name__}: {exc}".split()),
                          unmapped=_unmapped(model) if converted else [], trace=traceback.format_exc(limit=3))
            return result
        timings[name] = round(time.time() - start, 2)
        if name == "step_convert_to_hw":
            result["unmapped"] = _unmapped(model)
            if request.get("inputs_npy") and not result["unmapped"]:
                _execute(model, request["inputs_npy"], request["outputs_npy"])
                result["executed"] = True
    result["compiled"] = not result["unmapped"]
    result["nodes"] = _describe(_child(model))
    auto = out_dir / "report" / "auto_folding_config.json"
    if cfg.target_fps is not None and auto.exists():
        result["folding_config"] = json.loads(auto.read_text())
    result.update(_reports(out_dir / "report"), seconds=timings)
    return result


def _with_time_limit(seconds: int, fn, *args):
    import signal

    def stop(signum, frame):
        raise _TimeUp()

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(request: dict) -> dict:
    """FINN's default flow; for a graph with residual adds that it refuses, FINN's ResNet streamlining (which moves
    scales past forks and joins) under a time limit, since it does not finish on every graph."""
    out_dir = Path(request["out_dir"]).resolve()
    _boot(out_dir / "tmp")
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(request["model"])
    has_join = any(n.op_type == "Add" and all(model.get_initializer(i) is None for i in n.input)
                   for n in model.graph.node)
    result = _build(request, out_dir, _steps(False))
    if result["compiled"] or not has_join:
        return result
    limit = int(request.get("resnet_time_limit_s", 60))
    residual = ("the model has residual adds: FINN builds one only when both of its inputs are integers on one grid "
                "(one shared quantizer)")
    try:
        second = _with_time_limit(limit, _build, request, out_dir, _steps(True))
    except _TimeUp:
        result["notes"] = [residual, f"FINN's ResNet streamlining did not finish in {limit} s either"]
        return result
    if second["compiled"]:
        return second
    result["notes"] = [residual, f"FINN's ResNet streamlining refused it too ({second.get('failed_step')})"]
    return result


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent  # edgecnn.hw.finn must not shadow FINN's own finn package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    request = json.loads(Path(argv[1]).read_text())
    try:
        result = run(request)
    except Exception as exc:  # noqa: BLE001 - reported to edgecnn as data, never a traceback on its console
        result = {"compiled": False, "failed_step": "setup", "error": f"{type(exc).__name__}: {exc}",
                  "trace": traceback.format_exc(limit=5), "unmapped": []}
    try:
        from importlib.metadata import version

        result["finn_version"] = version("finn-plus")
    except Exception:  # noqa: BLE001 - a FINN installed from source has no distribution metadata
        result["finn_version"] = None
    Path(argv[2]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
