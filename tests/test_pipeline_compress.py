"""The pipeline's train -> distill -> prune chain, transfer learning in the train stage, and the prune/distill CLI."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import require
from typer.testing import CliRunner

from edgecnn.cli import app
from edgecnn.config import parse_config
from edgecnn.pipeline import run
from edgecnn.stages import stage_outputs
from edgecnn.train.checkpoint import load_checkpoint

require("torch_pruning", "prune")

NO_AUG = {"hflip": False, "vflip": False, "rot90": False, "jitter": 0}
TEACHER = {"stem_channels": 8, "channels": [16, 32], "blocks": 1}
STUDENT = {"stem_channels": 4, "channels": [8, 16], "blocks": 1}


def _text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def _config(root, out, **extra):
    return parse_config({
        "name": "chain", "output": str(out),
        "data": {"root": str(root), "image_size": 32, "augment": NO_AUG, "split": {"val": 0.2, "test": 0.2}},
        "model": {"name": "customnet", "args": TEACHER}, "train": {"epochs": 2, "batch_size": 32, "amp": "off"},
        "evaluate": {"latency_batches": [1], "latency_repeats": 5}, **extra})


@pytest.fixture(scope="module")
def chain_run(small_folder, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("chain")
    cfg = _config(small_folder, out, distill={"student": {"name": "customnet", "args": STUDENT}},
                  prune={"target": "macs", "target_ratio": 0.5, "train": {"epochs": 1}, "latency_repeats": 5},
                  precisions=["fp32", "int8-ptq"], quantize={"calib": 32})
    return run(cfg, show_progress=False), cfg


def test_chain_rows_lineage_and_report(chain_run):
    outcome, _ = chain_run
    rows = {r["variant"]: r for r in outcome.results}
    assert list(rows) == ["fp32", "distill-control-fp32", "distill-fp32", "prune-fp32", "prune-int8-ptq"]
    assert rows["distill-fp32"]["recipe"] == "train+distill"
    assert rows["prune-int8-ptq"]["recipe"] == "train+distill+prune+int8-ptq"
    assert rows["distill-fp32"]["params"] == rows["distill-control-fp32"]["params"] < 0.3 * rows["fp32"]["params"]
    assert rows["prune-fp32"]["macs"] <= 0.5 * rows["distill-fp32"]["macs"]
    assert rows["prune-fp32"]["size_bytes"] < rows["distill-fp32"]["size_bytes"]  # the pruned ONNX is smaller
    assert len({r["variant_id"] for r in outcome.results}) == 5
    prune_out = stage_outputs(outcome.run_dir, "prune")
    model, meta = load_checkpoint(prune_out["checkpoint"])  # the plain loader rebuilds the pruned layout
    assert meta.pruned is not None and meta.pruned["method"] == "structured" and meta.arch_args == STUDENT
    html = (outcome.run_dir / "report" / "index.html").read_text()
    assert "Knowledge distillation" in html and "Pruning (structured)" in html
    assert "gain of distillation over the control" in html


def test_chain_rerun_skips_every_stage(chain_run):
    _, cfg = chain_run
    again = run(cfg, show_progress=False)
    assert {"train", "distill", "prune", "prune-int8-ptq"} <= set(again.skipped_stages)


def test_new_distill_options_reuse_the_control(chain_run, small_folder, tmp_path):
    """The control ignores the teacher and the KD options: changing T retrains the student, not the control."""
    outcome, _ = chain_run
    shutil.copytree(outcome.run_dir, tmp_path / "chain")
    control_record = (tmp_path / "chain" / "distill-control" / "stage.json").read_bytes()
    before = stage_outputs(tmp_path / "chain", "distill")
    cfg = _config(small_folder, tmp_path, distill={"student": {"name": "customnet", "args": STUDENT}, "temperature": 5})
    again = run(cfg, show_progress=False)
    after = stage_outputs(again.run_dir, "distill")
    assert "distill" not in again.skipped_stages and after["options"]["temperature"] == 5
    assert (again.run_dir / "distill-control" / "stage.json").read_bytes() == control_record  # not retrained
    assert after["control"] == before["control"] and after["control_checkpoint"] == before["control_checkpoint"]
    assert list((again.run_dir).glob("distill.prev-*"))  # the earlier student is kept aside, not deleted
    paired = after["paired_test"]
    assert (paired["student_only_correct"] - paired["control_only_correct"]) / paired["images"] == pytest.approx(
        after["gain_test_accuracy"], abs=1e-6)
    # distill.seed: a replicate with other initial weights retrains the control too, on the same split
    cfg = _config(small_folder, tmp_path, distill={"student": {"name": "customnet", "args": STUDENT}, "temperature": 5,
                                                   "seed": 7})
    third = run(cfg, show_progress=False)
    inputs = json.loads((third.run_dir / "distill-control" / "inputs.json").read_text())["inputs"]
    assert inputs["seed"] == 7 and list(third.run_dir.glob("distill-control.prev-*"))
    assert (third.run_dir / "split.json").read_bytes() == (outcome.run_dir / "split.json").read_bytes()
    assert {"train", "fp32"} <= set(third.skipped_stages)  # the teacher is not retrained


def test_transfer_learning_in_the_train_stage(chain_run, small_folder, tmp_path):
    outcome, _ = chain_run
    weights = stage_outputs(outcome.run_dir, "train")["best_checkpoint"]
    cfg = _config(small_folder, tmp_path, model={"name": "customnet", "args": TEACHER, "weights": weights},
                  pretrained={"head_epochs": 1, "unfreeze": "all"})
    res = run(cfg, show_progress=False)
    fit_out = stage_outputs(res.run_dir, "train")
    assert [h["phase"] for h in fit_out["history"]] == ["head", "finetune", "finetune"]
    assert fit_out["transfer"]["head"] == "classifier.2"
    assert res.results[0]["accuracy"] > 0


def test_cli_prune_and_distill(chain_run, tmp_path):
    outcome, _ = chain_run
    ckpt = stage_outputs(outcome.run_dir, "train")["best_checkpoint"]
    runner = CliRunner()
    res = runner.invoke(app, ["--quiet", "prune", ckpt, "--method", "unstructured", "--ratio", "0.5", "--epochs", "1",
                              "--out-dir", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "50.0% of the weights zero" in _text(res)
    res = runner.invoke(app, ["--quiet", "prune", ckpt, "--ratios", "features.9=0.5", "--epochs", "1"])
    assert res.exit_code == 2 and "no prunable layer 'features.9'" in _text(res)
    res = runner.invoke(app, ["--quiet", "prune", ckpt, "--ratio", "1.5"])
    assert res.exit_code == 2 and "--ratio" in _text(res)
    res = runner.invoke(app, ["--quiet", "distill", ckpt, "--student", "customnet", "--student-args",
                              json.dumps(STUDENT), "--epochs", "1", "--no-control", "--out-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "of the teacher's params" in _text(res) and (tmp_path / "d" / "student" / "best.safetensors").exists()
    res = runner.invoke(app, ["--quiet", "distill", ckpt, "--student", "customnet", "--student-args", "{bad"])
    assert res.exit_code == 2 and "--student-args is not valid JSON" in _text(res)


def test_lowbit_sweep_in_the_pipeline(chain_run, small_folder, tmp_path):
    require("brevitas", "lowbit")
    require("qonnx", "lowbit")
    exact = {"default": {"w": 8, "a": 8}, "scaling": "power_of_two", "fold_bn": True}
    cfg = _config(small_folder, tmp_path, lowbit={"variants": ["w4a4", "w8a8", "hetero", "exact"], "epochs": 1,
                                                 "specs": {"exact": exact}, "parity_images": 8,
                                                 "targets": ["pynq-z1"]})
    outcome = run(cfg, show_progress=False)
    rows = {r["variant"]: r for r in outcome.results}
    # progressive: high -> low bits (ties keep the listed order)
    assert list(rows) == ["fp32", "lowbit-w8a8", "lowbit-exact", "lowbit-w4a4", "lowbit-hetero"]
    assert rows["lowbit-w4a4"]["warm_start"] == "w8a8" and rows["lowbit-hetero"]["warm_start"] == "w4a4"
    # the BN-folded variant starts from w8a8 but is never a warm start itself (its weights have BN folded in)
    assert rows["lowbit-exact"]["warm_start"] == "w8a8" and rows["lowbit-exact"]["bits"]["fold_bn"] is True
    assert rows["lowbit-exact"]["qonnx_max_abs_diff"] <= 1e-4 and rows["lowbit-exact"]["qonnx_top1_agreement"] == 1.0
    for name in ("lowbit-w8a8", "lowbit-w4a4", "lowbit-hetero"):
        r = rows[name]
        assert r["artefact"].endswith(".qonnx.onnx") and r["qonnx_top1_agreement"] == 1.0
        assert r["fps_pynq-z1"] > 0 and r["lut_pynq-z1"] > 0 and 0 <= r["weight_sparsity_total"] < 1
        # the run's targets (default kv260 + pynq-z1) price every low-bit file: the dataflow board with FPS and
        # energy from the QONNX file, the DPU board with the reason it cannot run it
        assert r["energy_mj_pynq-z1"] > 0 and r["latency_ms_pynq-z1"] > 0
        assert r["fps_kv260"].startswith("n/a (")
    assert rows["fp32"]["fps_pynq-z1"].startswith("n/a (")
    assert rows["lowbit-w4a4"]["packed_weight_bits"] < rows["lowbit-w8a8"]["packed_weight_bits"]
    assert rows["lowbit-hetero"]["packed_weight_bits"] < rows["lowbit-w4a4"]["packed_weight_bits"]
    summary = json.loads((outcome.run_dir / "lowbit" / "summary.json").read_text())
    assert summary["headline"]["reference"] == "w8a8" and "pynq-z1" in summary["headline"]["boards"]
    html = (outcome.run_dir / "report" / "index.html").read_text()
    assert "Low-bit QAT sweep" in html and "Headline" in html


def test_headline_ratio_and_pareto_front_on_hand_made_rows():
    from edgecnn.variants.lowbit_sweep import headline, pareto_front

    rows = [{"precision": "w8a8", "accuracy": 0.960, "packed_weight_bits": 800, "fps_b": 100.0},
            {"precision": "w4a4", "accuracy": 0.955, "packed_weight_bits": 400, "fps_b": 400.0},
            {"precision": "w2a2", "accuracy": 0.951, "packed_weight_bits": 200, "fps_b": 1600.0},
            {"precision": "w1a1", "accuracy": 0.900, "packed_weight_bits": 100, "fps_b": 6200.0}]
    h = headline(rows, ["b"])
    assert h["chosen"] == "w2a2" and h["boards"]["b"]["ratio"] == 16.0  # w1a1 is 6 points below w8a8
    assert pareto_front(rows, "b") == ["w8a8", "w4a4", "w2a2", "w1a1"]
    rows[1]["fps_b"] = 50.0  # now dominated by w8a8 (more accurate and faster)
    assert "w4a4" not in pareto_front(rows, "b")
    assert "note" in headline(rows[1:], ["b"])


def test_headline_flags_boards_the_reference_does_not_fit():
    from edgecnn.variants.lowbit_sweep import headline

    rows = [{"precision": "w8a8", "accuracy": 0.96, "packed_weight_bits": 800, "fps_b": 5.0, "fits_b": False,
             "fps_c": 100.0, "fits_c": True},
            {"precision": "w4a4", "accuracy": 0.955, "packed_weight_bits": 400, "fps_b": 5.0, "fits_b": False,
             "fps_c": 400.0, "fits_c": True}]
    h = headline(rows, ["b", "c"])
    assert h["boards"]["b"]["fits"] == {"reference": False, "chosen": False}
    assert "fits" not in h["boards"]["c"] and h["boards"]["c"]["ratio"] == 4.0
