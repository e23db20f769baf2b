"""FINN as an external tool: its environment, one call of its compiler front end, and the verdict it returns.

finn-plus (the maintained FINN fork) pins onnx 1.21.0, protobuf 5.29.6, brevitas 0.13.0, qonnx 1.0.0, rich < 14 and
its own torch; edgecnn pins onnx 1.22.0 and runs TensorFlow's converter, which needs a newer protobuf. One
environment cannot hold both, so FINN lives in its own virtual environment (``edgecnn tools install finn``, under
edgecnn's cache, or any interpreter named by ``EDGECNN_FINN_PYTHON``) and edgecnn talks to it through files and a
subprocess running ``finn_worker.py``, as the hls4ml flow treats Vivado.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecnn.errors import EdgeCNNError

if TYPE_CHECKING:
    from edgecnn.hw.estimators.base import Estimate
    from edgecnn.hw.targets import Target

FINN_PACKAGES = ("finn-plus==1.6.1", "psutil")  # finn-plus 1.6.1 imports psutil without declaring it
PYTHON_ENV = "EDGECNN_FINN_PYTHON"
WORKER = Path(__file__).with_name("worker.py")
INSTALL_HINT = ("run `edgecnn tools install finn` (its own environment, about 6 GB) or set EDGECNN_FINN_PYTHON to a "
                "Python that has finn-plus")


def tools_dir() -> Path:
    """Where edgecnn keeps the environments of its external tools."""
    return Path(os.environ.get("EDGECNN_CACHE", Path.home() / ".cache" / "edgecnn")) / "tools"


def finn_python() -> Path | None:
    """The interpreter of the FINN environment: ``EDGECNN_FINN_PYTHON``, else edgecnn's managed one, else None."""
    named = os.environ.get(PYTHON_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.exists():
            raise EdgeCNNError(f"{PYTHON_ENV}={named} does not exist; point it at the python of an environment that "
                               "has finn-plus, or unset it to use `edgecnn tools install finn`")
        return path
    managed = tools_dir() / "finn" / "bin" / "python"
    return managed if managed.exists() else None


def require_finn() -> Path:
    python = finn_python()
    if python is None:
        raise EdgeCNNError(f"FINN is not installed for edgecnn; {INSTALL_HINT}")
    return python


def install_finn(force: bool = False, log=print) -> Path:
    """Create edgecnn's FINN environment (a venv under the tools folder) and install finn-plus into it."""
    venv = tools_dir() / "finn"
    python = venv / "bin" / "python"
    if python.exists() and not force:
        log(f"FINN environment already at {venv} (pass --force to reinstall)")
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip>=24"],
             [str(python), "-m", "pip", "install", "-q", *FINN_PACKAGES]]
    for cmd in steps:
        log("$ " + " ".join(cmd))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EdgeCNNError(f"installing FINN failed at `{' '.join(cmd[2:4])}`: {tail[0]}; the environment at "
                               f"{venv} is incomplete, rerun with --force")
    return python


@dataclass
class FinnUnmapped:
    """A node FINN left between its hardware layers, and why."""

    name: str
    op_type: str
    why: str


@dataclass
class FinnReport:
    """FINN's verdict on one QONNX file and its own estimates (estimate_network_performance.json and friends)."""

    compiled: bool
    failed_step: str | None = None
    error: str = ""
    unmapped: list[FinnUnmapped] = field(default_factory=list)
    fps: float | None = None
    max_cycles: int | None = None
    critical_path_cycles: int | None = None
    bottleneck: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    layer_cycles: dict[str, int] = field(default_factory=dict)
    layer_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    folding_config: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    finn_version: str | None = None
    logits: Any = field(default=None, repr=False)  # FINN's execution of the converted graph, when asked

    @classmethod
    def from_worker(cls, raw: dict[str, Any]) -> FinnReport:
        net = raw.get("network") or {}
        layers = raw.get("layer_resources") or {}
        totals = {"lut": 0.0, "bram18": 0.0, "dsp": 0.0, "uram": 0.0}
        layers = {name: res for name, res in layers.items() if name != "total"}  # FINN adds its own "total" row
        for res in layers.values():
            totals["lut"] += float(res.get("LUT", 0))
            totals["bram18"] += float(res.get("BRAM_18K", 0))
            totals["dsp"] += float(res.get("DSP", 0))
            totals["uram"] += float(res.get("URAM", 0))
        return cls(compiled=bool(raw.get("compiled")), failed_step=raw.get("failed_step"),
                   error=raw.get("error", ""), unmapped=[FinnUnmapped(**u) for u in raw.get("unmapped", [])],
                   fps=net.get("estimated_throughput_fps"), max_cycles=net.get("max_cycles"),
                   critical_path_cycles=net.get("critical_path_cycles"), bottleneck=net.get("max_cycles_node_name"),
                   resources=totals if layers else {}, layer_cycles=raw.get("layer_cycles") or {},
                   layer_resources=layers, folding_config=raw.get("folding_config") or {},
                   steps=raw.get("steps") or [], notes=raw.get("notes") or [], finn_version=raw.get("finn_version"))

    def verdict(self) -> str:
        """One line: compiled, or the first node FINN refused and why."""
        if self.compiled:
            return "FINN built every layer as a hardware layer"
        if self.unmapped:
            first = self.unmapped[0]
            more = f" (+{len(self.unmapped) - 1} more: {', '.join(u.name for u in self.unmapped[1:4])})" \
                if len(self.unmapped) > 1 else ""
            return f"FINN refuses it: {first.name} ({first.op_type}) stays outside hardware — {first.why}{more}"
        return f"FINN stopped at {self.failed_step}: {self.error.splitlines()[0] if self.error else 'no message'}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "logits"}


def compute_layers(path: str | Path, estimate: Estimate) -> list[dict[str, Any]]:
    """edgecnn's folding of the MVAU/VVAU nodes of a dataflow estimate, in graph order, with their shapes (FINN's
    worker matches them to its own nodes by order and MW x MH)."""
    from edgecnn.hw.estimators.dataflow import lower
    from edgecnn.hw.estimators.finn_formulas import thresholds_in_lutram
    from edgecnn.hw.graph import load_graph

    folding = estimate.extra.get("folding", {})
    rows = []
    for node in lower(load_graph(path)).nodes:
        if node.kind not in ("MVAU", "VVAU"):
            continue
        par = folding.get(node.name, {})
        node.pe, node.simd = int(par.get("PE", 1)), int(par.get("SIMD", 1))
        weights = node.p["mw"] * node.p["mh"] if node.kind == "MVAU" else node.p["ch"] * node.p["kh"] * node.p["kw"]
        rows.append({"name": node.name, "kind": node.kind, "mw": node.p.get("mw"), "mh": node.p.get("mh"),
                     "pe": node.pe, "simd": node.simd,
                     # the design edgecnn priced, as FINN node attributes: multipliers in DSPs or LUTs, small weight
                     # and threshold memories in LUTRAM (hw/estimators/finn_formulas.py HWNode.resources)
                     "attrs": {"resType": "dsp" if node.p["res_dsp"] else "lut",
                               "ram_style": "distributed" if weights // (node.pe * node.simd) <= 128 else "block",
                               "ram_style_thresholds": "distributed" if thresholds_in_lutram(node.p["obits"])
                               else "block"}})
    return rows


def _cache_path(path: str | Path, python: Path, request: dict[str, Any]) -> Path:
    """Where FINN's answer for this file content, FINN environment and request is kept (edgecnn's cache): a rerun of
    the same estimate (every `edgecnn run` prices its variants again) does not start FINN again."""
    import hashlib

    key = hashlib.sha256(Path(path).read_bytes())
    key.update(WORKER.read_bytes())
    key.update(json.dumps({"python": str(python), "installed": python.stat().st_mtime, "request": request},
                          sort_keys=True, default=str).encode())
    return tools_dir().parent / "finn-results" / f"{key.hexdigest()[:32]}.json"


def run_finn(path: str | Path, target, *, out_dir: str | Path | None = None, layers: list[dict] | None = None,
             target_cycles: int | None = None, target_fps: float | None = None, timeout_s: float = 900,
             inputs: Any = None) -> FinnReport:
    """FINN's front end on ``path`` for a dataflow ``target``: with edgecnn's folding (``layers`` + the cycle target
    the other nodes must meet) or with FINN's own folding for ``target_fps``; its verdict and estimates. With
    ``inputs`` (an N x C x H x W float array), FINN also executes the graph it converted to hardware layers with its
    own Python execution, image by image: ``report.logits``."""
    python = require_finn()
    flow = target.dataflow
    if target.kind != "dataflow" or flow is None or not flow.fpga_part:
        raise EdgeCNNError(f"target '{target.name}' names no FPGA part for FINN; use a dataflow target such as "
                           "zcu104-finn (see `edgecnn targets`)")
    request = {"part": flow.fpga_part, "board": flow.finn_board, "clock_ns": 1e3 / target.clock_mhz,
               "target_fps": target_fps, "folding": layers, "target_cycles": target_cycles}
    cached = _cache_path(path, python, request) if out_dir is None and inputs is None else None
    if cached is not None and cached.exists():  # the same file, FINN and request: FINN's answer does not change
        return FinnReport.from_worker(json.loads(cached.read_text()))
    with tempfile.TemporaryDirectory(prefix="edgecnn-finn-") as scratch:
        work = Path(out_dir) if out_dir is not None else Path(scratch) / "build"
        request.update(model=str(Path(path).resolve()), out_dir=str(work.resolve()))
        req, res = Path(scratch) / "request.json", Path(scratch) / "result.json"
        if inputs is not None:
            import numpy as np

            request["inputs_npy"] = str(Path(scratch) / "inputs.npy")
            request["outputs_npy"] = str(Path(scratch) / "outputs.npy")
            np.save(request["inputs_npy"], np.asarray(inputs, dtype=np.float32))
        req.write_text(json.dumps(request))
        try:
            done = subprocess.run([str(python), "-P", str(WORKER), str(req), str(res)], capture_output=True,
                                  text=True, timeout=timeout_s, env={**os.environ, "PYTHONNOUSERSITE": "1"})
        except subprocess.TimeoutExpired:
            raise EdgeCNNError(f"FINN did not finish within {timeout_s:.0f} s on {path}") from None
        if not res.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EdgeCNNError(f"the FINN environment at {python} failed ({tail[0]}); {INSTALL_HINT}")
        raw = json.loads(res.read_text())
        if cached is not None and raw.get("failed_step") != "setup":
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(raw))
        report = FinnReport.from_worker(raw)
        if inputs is not None and Path(request["outputs_npy"]).exists():
            import numpy as np

            report.logits = np.load(request["outputs_npy"])
        return report


def attach_finn(estimate: Estimate, path: str | Path, target: Target) -> FinnReport:
    """Run FINN on ``path`` at the folding of a dataflow ``estimate`` and put its verdict and own estimates beside
    edgecnn's (``estimate.extra['finn']`` and one note each); a file FINN refuses is marked not deployable."""
    report = run_finn(path, target, layers=compute_layers(path, estimate),
                      target_cycles=int(estimate.extra["max_cycles"]))
    summary = {"compiled": report.compiled, "verdict": report.verdict(), "fps": report.fps,
               "max_cycles": report.max_cycles, "bottleneck": report.bottleneck, "resources": report.resources,
               "unmapped": [asdict(u) for u in report.unmapped], "notes": report.notes,
               "finn_version": report.finn_version}
    estimate.extra["finn"] = summary
    estimate.extra["finn_deployable"] = report.compiled
    estimate.notes.append(report.verdict())
    estimate.notes.extend(report.notes)
    if report.compiled and report.fps:
        from edgecnn.hw.estimators.base import FabricResources

        theirs = FabricResources.from_mapping(report.resources) or FabricResources()
        ours = estimate.resources or FabricResources()
        estimate.notes.append(
            f"FINN's own estimate at this folding: {report.fps:,.0f} FPS, {theirs.lut or 0:,.0f} LUT, "
            f"{theirs.bram36 or 0:g} BRAM36, {theirs.dsp or 0:g} DSP (edgecnn: {estimate.fps:,.0f} FPS, "
            f"{ours.lut or 0:,.0f} LUT, {ours.bram36 or 0:g} BRAM36, {ours.dsp or 0:g} DSP)")
    elif not report.compiled:
        estimate.notes.append("not deployable with FINN as it is: edgecnn's figures above price hardware FINN "
                              "would not build")
        if any("residual adds" in note for note in report.notes):
            estimate.notes.append("for a low-bit CustomNet: quantize with `residual: shared` in its bits spec (both "
                                  "inputs of each residual add on one grid), which FINN builds")
    return report
