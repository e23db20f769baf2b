from __future__ import annotations

import csv
import html
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_subset
from typer.testing import CliRunner

from edgecnn.cli import app
from edgecnn.columns import BASE_COLUMNS
from edgecnn.config import load_config
from edgecnn.errors import EdgeCNNError
from edgecnn.pipeline import run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, {"output": str(out), "data.limit_per_class": 20, "train.epochs": 3,
                             "evaluate.latency_repeats": 3, "precisions": ["fp32", "fp16", "int8-ptq"],
                             "quantize.calib": 32})
    return run(cfg, show_progress=False), cfg


def test_quickstart_runs_end_to_end(quick_run):
    outcome, _ = quick_run
    run_dir = outcome.run_dir
    for rel in ("config.yaml", "split.json", "data.json", "train/best.safetensors", "train/curves.png",
                "results.csv", "results.json", "report/index.html", "run.log"):
        assert (run_dir / rel).exists(), rel
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "int8-ptq"]
    assert set(BASE_COLUMNS) <= set(rows[0])
    row = rows[0]
    assert row["variant"] == "fp32" and 0 <= float(row["accuracy"]) <= 1
    assert int(row["params"]) > 0 and int(row["macs"]) > 0 and int(row["size_bytes"]) > 0
    assert float(row["latency_ms_torch_b1"]) > 0
    # eager latency is the faster of the two layouts, and the row says which one and what each measured
    by_layout = json.loads(row["latency_ms_torch_by_layout_b1"])
    assert set(by_layout) == {"contiguous", "channels_last"}
    assert row["torch_layout_b1"] == min(by_layout, key=by_layout.get)
    html = (run_dir / "report" / "index.html").read_text()
    assert "<table>" in html and "fp32" in html and "confusion.png" in html and "https://" not in html
    assert (run_dir / "report" / "confusion.png").exists()
    split = json.loads((run_dir / "split.json").read_text())
    assert len(split["test"]) == 20 and len(split["train"]) == 160


def test_rerun_skips_unchanged_stages(quick_run):
    first, cfg = quick_run
    again = run(cfg, show_progress=False)
    assert again.skipped_stages == ["train", "fp32", "fp16", "int8-ptq"]
    assert again.results[0]["accuracy"] == first.results[0]["accuracy"]


def test_a_copied_run_directory_is_reused_as_is(quick_run, tmp_path):
    """Stage records hold paths relative to the run: a copy elsewhere skips every stage and reads its own files."""
    first, cfg = quick_run
    shutil.copytree(first.run_dir, tmp_path / cfg.name)
    moved = cfg.model_copy(deep=True)
    moved.output = tmp_path
    again = run(moved, show_progress=False)
    assert again.skipped_stages == ["train", "fp32", "fp16", "int8-ptq"]
    assert all(str(tmp_path) in row["artefact"] for row in again.results)
    assert again.results[0]["accuracy"] == first.results[0]["accuracy"]


def test_variants_measured_by_an_earlier_edgecnn_are_measured_again_not_rebuilt(quick_run, tmp_path):
    """A cached variant whose figures came from older measuring code (MEASUREMENT_VERSION) gets its file measured
    again on the next run; the file itself is not rebuilt."""
    from edgecnn.variants.measuring import MEASUREMENT_VERSION

    first, cfg = quick_run
    shutil.copytree(first.run_dir, tmp_path / cfg.name)
    moved = cfg.model_copy(deep=True)
    moved.output = tmp_path
    row = next(r for r in first.results if r["precision"] == "int8-ptq")
    vdir = tmp_path / cfg.name / "variants" / Path(row["artefact"]).parent.name
    record = json.loads((vdir / "stage.json").read_text())
    assert record["outputs"]["measured_with"] == MEASUREMENT_VERSION
    stale = {**record["outputs"], "metrics": {**record["outputs"]["metrics"], "accuracy": -1.0}}
    stale.pop("measured_with")  # as recorded before the version existed (and before records carried a digest)
    older = {k: v for k, v in record.items() if k != "digest"}
    (vdir / "stage.json").write_text(json.dumps({**older, "outputs": stale}))
    artefact = vdir / Path(row["artefact"]).name
    built_at = artefact.stat().st_mtime_ns
    again = run(moved, show_progress=False)
    assert "int8-ptq" in again.skipped_stages and artefact.stat().st_mtime_ns == built_at
    remeasured = next(r for r in again.results if r["precision"] == "int8-ptq")
    assert remeasured["accuracy"] == row["accuracy"]
    assert json.loads((vdir / "stage.json").read_text())["outputs"]["measured_with"] == MEASUREMENT_VERSION


def test_a_second_run_on_a_live_run_directory_is_refused(quick_run, tmp_path):
    import socket
    import subprocess
    import sys

    _, cfg = quick_run
    cfg = cfg.model_copy(deep=True)
    cfg.output = tmp_path
    (tmp_path / cfg.name).mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / cfg.name / ".lock").write_text(
            json.dumps({"pid": live.pid, "host": socket.gethostname(), "since": "earlier"}))
        with pytest.raises(EdgeCNNError, match=f"in use by process {live.pid}"):
            run(cfg, show_progress=False)
        assert sorted(p.name for p in (tmp_path / cfg.name).iterdir()) == [".lock"]  # nothing touched
    finally:
        live.kill()
        live.wait()


def test_changed_inputs_keep_previous_outputs(quick_run, tmp_path):
    _, cfg = quick_run
    cfg = cfg.model_copy(deep=True)
    cfg.output = tmp_path
    run(cfg, show_progress=False)
    cfg.train.epochs = 1
    again = run(cfg, show_progress=False)
    assert "train" not in again.skipped_stages
    prev = list((tmp_path / cfg.name).glob("train.prev-*"))
    assert len(prev) == 1 and (prev[0] / "best.safetensors").exists()


def test_cli_eval_matches_classes_by_name(quick_run, tmp_path):
    outcome, _ = quick_run
    ckpt = outcome.run_dir / "train" / "best.safetensors"
    folder = make_subset(tmp_path / "subset", 5, ["River", "Forest"])
    result = CliRunner().invoke(app, ["eval", str(ckpt), "--data", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 10
    classes = report["classes"]
    support = dict(zip(classes, report["support"]))
    assert support["River"] == 5 and support["Forest"] == 5 and support["AnnualCrop"] == 0
    (folder / "Clouds").mkdir()
    shutil.copy(next((folder / "River").iterdir()), folder / "Clouds" / "c.jpg")
    bad = CliRunner().invoke(app, ["eval", str(ckpt), "--data", str(folder)])
    assert bad.exit_code == 2 and "Clouds" in bad.output and "Traceback" not in bad.output


def test_cli_errors_are_one_line(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: x\nmodel:\n  name: resnet181\n")
    result = CliRunner().invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2
    assert "did you mean: resnet18" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["run", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path)])
    assert missing.exit_code == 2 and "data folder not found" in missing.output


def test_cli_models_lists_params_and_macs():
    result = CliRunner().invoke(app, ["models", "lenet*", "--input-size", "32"])
    assert result.exit_code == 0 and "lenet5" in result.output and "M" in result.output


def test_every_deployable_file_evaluates_to_the_table_accuracy(quick_run, tmp_path):
    """`edgecnn eval MODEL.onnx` on the test split's images gives the accuracy of the results table, using only
    the pre-processing stored in the file."""
    outcome, _ = quick_run
    split = json.loads((outcome.run_dir / "split.json").read_text())
    folder = tmp_path / "test-split"
    for rel in split["test"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(split["root"]) / rel, folder / rel)
    assert sorted(row["precision"] for row in outcome.results) == ["fp16", "fp32", "int8-ptq"]
    for row in outcome.results:
        assert row["artefact"].endswith(".onnx"), row["precision"]
        result = CliRunner().invoke(app, ["eval", row["artefact"], "--data", str(folder), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["n"] == len(split["test"])
        # fp16 accuracy is measured as a PyTorch cast (the choice), so one image may round differently.
        tolerance = 1.01 / report["n"] if row["precision"] == "fp16" else 1e-9
        assert report["accuracy"] == pytest.approx(row["accuracy"], abs=tolerance), row["precision"]
    int8 = next(r for r in outcome.results if r["precision"] == "int8-ptq")
    assert int8["size_bytes"] < 0.5 * outcome.results[0]["size_bytes"]
    assert 0 <= int8["agreement_with_fp32"] <= 1 and int8["latency_ms_onnxruntime_b1"] > 0


def test_multi_model_experiment_writes_one_table_and_the_seed_figures(tmp_path):
    from edgecnn.config import parse_config

    cfg = parse_config({
        "name": "table", "output": str(tmp_path), "data": {"limit_per_class": 10, "image_size": 32},
        "train": {"epochs": 1, "batch_size": 32}, "precisions": ["fp32", "int8-ptq"],
        "quantize": {"calib": 16}, "evaluate": {"latency_batches": [1], "latency_repeats": 3},
        "models": [{"name": "lenet5", "train": {"epochs": 2}},
                   {"name": "customnet", "label": "tiny", "args": {"stem_channels": 8, "channels": [8, 16]}}],
    })
    outcome = run(cfg, show_progress=False)
    assert outcome.run_dir == tmp_path / "table"
    assert [(r["model"], r["precision"]) for r in outcome.results] == [
        ("lenet5", "fp32"), ("lenet5", "int8-ptq"), ("tiny", "fp32"), ("tiny", "int8-ptq")]
    with open(outcome.run_dir / "results.csv") as f:
        header = next(csv.reader(f))
    assert header[0] == "model"
    assert json.loads((outcome.run_dir / "lenet5" / "train" / "stage.json").read_text())["outputs"]["epochs_run"] == 2
    report = outcome.run_dir / "report"
    assert (report / "accuracy-per-precision.png").exists() and (report / "size-per-precision.png").exists()
    html = (report / "index.html").read_text()
    assert "../lenet5/report/index.html" in html and "int8-ptq" in html
    # the seed's table: model x precision with estimated FPS and energy per image on every target of the run
    assert "kv260 FPS (est.)" in html and "kv260 mJ/image (est.)" in html and "pynq-z1 FPS (est.)" in html
    int8 = [r for r in outcome.results if r["precision"] == "int8-ptq"]
    assert all(r["fps_kv260"] > 0 and r["energy_mj_kv260"] > 0 for r in int8)


def test_cli_export_quantize_and_bench_a_checkpoint(quick_run, tmp_path):
    outcome, _ = quick_run
    ckpt = str(outcome.run_dir / "train" / "best.safetensors")
    runner = CliRunner()
    exported = runner.invoke(app, ["export", ckpt, "--precision", "fp16", "--out", str(tmp_path / "m16.onnx")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "m16.onnx").exists()
    quantized = runner.invoke(app, ["quantize", ckpt, "--precision", "int8-ptq", "--calib", "16", "--exclude", "first",
                                    "--out-dir", str(tmp_path / "q")])
    assert quantized.exit_code == 0, quantized.output
    assert "int8-ptq: accuracy" in quantized.output and (tmp_path / "q" / "model-int8-ptq.onnx").exists()
    too_many = runner.invoke(app, ["quantize", ckpt, "--precision", "int8-ptq", "--calib", "100000"])
    assert too_many.exit_code == 2 and "lower quantize.calib" in too_many.output
    unknown = runner.invoke(app, ["quantize", ckpt, "--precision", "int9"])
    assert unknown.exit_code == 2 and "unknown precision 'int9'" in unknown.output
    benched = runner.invoke(app, ["bench", ckpt, "--backend", "torch", "--batch", "1,2", "--repeats", "3",
                                  "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")])
    assert benched.exit_code == 0, benched.output
    assert [r["batch"] for r in json.loads((tmp_path / "b.json").read_text())["results"]] == [1, 2]
    assert (tmp_path / "b.png").exists()


def test_cli_estimate_and_targets(quick_run, tmp_path):
    outcome, _ = quick_run
    onnx_file = next(r["artefact"] for r in outcome.results if r["precision"] == "int8-ptq")
    runner = CliRunner()
    listed = runner.invoke(app, ["targets", "kv*"])
    assert listed.exit_code == 0 and "kv260" in listed.output
    est = runner.invoke(app, ["estimate", onnx_file, "--target", "kv260", "--json", str(tmp_path / "e.json"),
                              "--plot", str(tmp_path / "cycles.png")])
    assert est.exit_code == 0, est.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["fps"] > 0 and (tmp_path / "cycles.png").exists()
    bad = runner.invoke(app, ["estimate", onnx_file, "--target", "kv26"])
    assert bad.exit_code == 2 and "did you mean: kv260" in bad.output


def test_the_report_leads_with_the_answer_in_a_real_browser(quick_run, tmp_path):
    """The report of the bundled-sample run, rendered by headless Chromium at 1280 px: no horizontal overflow, and the
    summary at the top names the variant to deploy (one of the run's variants)."""
    import shutil as sh
    import subprocess

    browser = sh.which("chromium") or sh.which("chromium-browser")
    if browser is None:
        if os.environ.get("EDGECNN_REQUIRE_EXTRAS", "") not in ("", "0"):  # .ci/run installs Chromium: never skip there
            pytest.fail("Chromium is not installed but .ci/run installs it (apt-get install chromium)", pytrace=False)
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    outcome, _ = quick_run
    report = outcome.run_dir / "report"
    sh.copytree(report, tmp_path / "report")
    probe = tmp_path / "report" / "probe.html"
    measure = ("<script>document.title = JSON.stringify({scroll: document.documentElement.scrollWidth, "
               "inner: window.innerWidth, summary: (document.getElementById('summary') || {}).innerText || ''});"
               "</script></body>")
    probe.write_text((report / "index.html").read_text().replace("</body>", measure))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000",
             "--virtual-time-budget=3000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    found = json.loads(html.unescape(dom.split("<title>", 1)[1].split("</title>", 1)[0]))
    assert found["inner"] == 1280 and found["scroll"] <= 1280, found
    variants = [r["variant"] for r in outcome.results]
    assert found["summary"].startswith("Deploy ") and found["summary"].split()[1] in variants, found["summary"]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", (report / "index.html").as_uri()], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 20_000  # a rendered page with its charts, not a blank one


def test_the_results_table_is_readable_in_a_log_file(quick_run, tmp_path):
    """Printed to a pipe (not a terminal), the table keeps whole headings and values instead of 'vari…'."""
    import yaml

    outcome, cfg = quick_run
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["--quiet", "run", str(config)])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    for heading in ("variant", "accuracy %", "ORT b1 ms", "int8-ptq"):
        assert heading in result.output


def test_every_variant_is_priced_on_the_run_targets(quick_run):
    """The default targets (a DPU board and a dataflow board): the INT8 file gets estimated FPS, latency and energy
    on the DPU; a target that cannot run a variant says so with the reason, never a blank."""
    outcome, cfg = quick_run
    assert cfg.targets == ["kv260", "pynq-z1"]
    rows = {r["variant"]: r for r in outcome.results}
    int8 = rows["int8-ptq"]
    assert int8["fps_kv260"] > 0 and int8["latency_ms_kv260"] > 0 and int8["energy_mj_kv260"] > 0
    assert rows["fp32"]["fps_kv260"] == "n/a (dpu targets run INT8 files)"
    assert all(r["fps_pynq-z1"] == "n/a (dataflow targets run low-bit QONNX files)" for r in rows.values())
    with open(outcome.run_dir / "results.csv") as f:
        header = next(csv.reader(f))
    assert {"fps_kv260", "fps_pynq-z1", "latency_ms_kv260"} <= set(header)
    page = (outcome.run_dir / "report" / "index.html").read_text()
    assert "<h2>Hardware estimates</h2>" in page and "<td>int8-ptq</td><td>kv260</td>" in page
    assert "kv260 FPS (est.)" in page and "n/a: dpu targets run INT8 files" in page


def test_unknown_targets_are_config_errors():
    from edgecnn.config import parse_config

    with pytest.raises(EdgeCNNError, match=r"targets: unknown target 'kv26' — did you mean: kv260"):
        parse_config({"targets": ["kv26"]})
    assert parse_config({"targets": []}).targets == []
