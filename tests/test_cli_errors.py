"""The CLI's error boundary: every failure a user can cause or meet is one line (no traceback) with an exit code
that says what happened: 2 for bad input, a full disk or an unwritable place, 1 for a bug (its traceback saved to a
file), 130 for an interrupt."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_subset
from typer.testing import CliRunner

from edgecnn.cli import app
from edgecnn.data.datasets import SAMPLE_ROOT
from edgecnn.errors import EdgeCNNError
from edgecnn.export.options import ExportConfig
from edgecnn.results import CheckpointMeta, read_results

CLASSES = sorted(p.name for p in SAMPLE_ROOT.iterdir() if p.is_dir())


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny untrained CustomNet checkpoint on the sample's classes, its ONNX export with metadata listing only 4
    classes (the model outputs 10 logits), and an ImageFolder of 2 of those classes."""
    from edgecnn.export.onnx import export_onnx
    from edgecnn.models import create_model
    from edgecnn.train.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("tiny")
    args = {"stem_channels": 8, "channels": [8, 16], "blocks": 1}
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=len(CLASSES), input_size=32, **args).eval()
    meta = CheckpointMeta(arch="customnet", arch_args=args, classes=CLASSES, input_size=32,
                          normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    ckpt = save_checkpoint(model, tmp / "tiny.safetensors", meta.to_dict())
    wrong = export_onnx(model, tmp / "wrong-classes.onnx", 32, {**meta.model_only(precision="fp32"),
                                                                 "classes": CLASSES[:4]})
    folder = make_subset(tmp / "images", 2, CLASSES[:2])
    return {"ckpt": ckpt, "wrong_onnx": wrong, "folder": folder}


# 1. anything unexpected: one line naming the exception and the saved traceback, exit 1; --debug prints it
@pytest.mark.parametrize("command", ["eval", "bench", "estimate", "run"])
def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_a_temp_file(command, tiny, tmp_path, monkeypatch):
    import edgecnn.api
    import edgecnn.hw
    import edgecnn.pipeline

    def boom(*args, **kwargs):
        raise ValueError("boom\nsecond line")

    module, name, args = {
        "eval": (edgecnn.api, "evaluate_file", ["eval", tiny["ckpt"], "--data", tiny["folder"]]),
        "bench": (edgecnn.api, "bench", ["bench", tiny["ckpt"], "--backend", "torch", "--batch", "1"]),
        "estimate": (edgecnn.hw, "estimate", ["estimate", tiny["wrong_onnx"], "--target", "kv260"]),
        "run": (edgecnn.pipeline, "run", ["run", "--output", tmp_path / "runs", "--name", "x"]),
    }[command]
    monkeypatch.setattr(module, name, boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code, output = invoke(*args)
    line = one_line(output)
    assert code == 1
    assert line.startswith("error: internal error (ValueError: boom second line); the full traceback is in ")
    assert f"rerun with --debug (edgecnn --debug {command} ...) to print it" in line
    saved = next(tmp_path.glob("edgecnn-traceback-*.txt"))
    assert str(saved) in line
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "ValueError: boom" in text


def test_the_traceback_of_a_command_with_a_run_directory_is_saved_inside_it(tmp_path, monkeypatch):
    import edgecnn.report.html

    def boom(run_dir):
        raise RuntimeError("template broke")

    monkeypatch.setattr(edgecnn.report.html, "write_report", boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "elsewhere"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code, output = invoke("report", run_dir)
    assert code == 1
    saved = next(run_dir.glob("edgecnn-traceback-*.txt"))
    assert str(saved) in one_line(output) and "RuntimeError: template broke" in saved.read_text()


def test_debug_prints_the_traceback_instead(tiny, monkeypatch):
    import edgecnn.api

    def boom(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(edgecnn.api, "evaluate_file", boom)
    code, output = invoke("--debug", "eval", tiny["ckpt"], "--data", tiny["folder"])
    assert code == 1
    assert "Traceback (most recent call last)" in output and "ValueError: boom" in output
    assert "internal error" not in output


# 2. Ctrl-C
def test_an_interrupt_is_one_line_and_exit_code_130(tiny, monkeypatch):
    import edgecnn.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(edgecnn.api, "bench", interrupted)
    code, output = invoke("bench", tiny["ckpt"], "--backend", "torch", "--batch", "1")
    assert code == 130
    assert one_line(output) == "interrupted; rerun the same command to resume"


# 3. a full disk, a read-only file system, no permission
@pytest.mark.parametrize("err, expected", [
    (errno.ENOSPC, "no space left on the device writing {file}; free some space, then rerun the same command"),
    (errno.EROFS, "read-only file system writing {file}; choose a writable place (--out-dir)"),
    (errno.EACCES, "permission denied writing {file}; choose a writable place (--out-dir)"),
], ids=["ENOSPC", "EROFS", "EACCES"])
def test_a_full_disk_or_an_unwritable_place_names_the_file(err, expected, tiny, tmp_path, monkeypatch):
    import edgecnn.api

    target = tmp_path / "out" / "results.json"

    def write_fails(*args, **kwargs):
        target.parent.mkdir(exist_ok=True)
        if err == errno.ENOSPC:  # a failed write() names no file: the CLI finds the file open for writing
            with open(target, "w") as f:
                f.write("{")
                raise OSError(err, "No space left on device")
        raise OSError(err, "cannot write", str(target))

    monkeypatch.setattr(edgecnn.api, "quantize", write_fails)
    code, output = invoke("quantize", tiny["ckpt"], "--precision", "fp16", "--out-dir", tmp_path / "out")
    assert code == 2
    line = one_line(output)
    assert line.startswith("error: " + expected.format(file=target)), line
    assert "resume" in line


# 4. eval
def test_eval_metadata_with_the_wrong_number_of_classes(tiny):
    code, output = invoke("eval", tiny["wrong_onnx"], "--data", tiny["folder"])
    assert code == 2
    line = one_line(output)
    assert "metadata lists 4 classes but the model outputs 10 logits" in line and "edgecnn export" in line


@pytest.mark.parametrize("size", [0, -3])
def test_eval_batch_size_must_be_positive(size, tiny):
    code, output = invoke("eval", tiny["ckpt"], "--data", tiny["folder"], "--batch-size", size)
    assert code == 2 and f"--batch-size {size}: give 1 or more" in one_line(output)


# 5. bench
@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch 0: every batch size must be 1 or more"),
    (["--batch", "-4"], "--batch -4: every batch size must be 1 or more"),
    (["--batch", "1,0,8"], "--batch 1,0,8: every batch size must be 1 or more"),
    (["--batch", ","], "--batch: give at least one batch size"),
    (["--repeats", "0"], "--repeats 0: give 1 or more timed runs"),
    (["--warmup", "-1"], "--warmup -1: give 0 or more untimed runs"),
])
def test_bench_counts_are_checked(args, message, tiny):
    code, output = invoke("bench", tiny["ckpt"], "--backend", "torch", *args)
    assert code == 2 and message in one_line(output)


# 6. export
def _opset_bounds() -> tuple[int, int]:
    meta = ExportConfig.model_fields["opset"].metadata
    return (next(m.ge for m in meta if hasattr(m, "ge")), next(m.le for m in meta if hasattr(m, "le")))


@pytest.mark.parametrize("side", ["below", "above"])
def test_export_opset_outside_the_exporter_range(side, tiny, tmp_path):
    low, high = _opset_bounds()
    code, output = invoke("export", tiny["ckpt"], "--opset", low - 1 if side == "below" else high + 1,
                          "--out", tmp_path / "m.onnx")
    assert code == 2 and f"writes opsets {low} to {high}" in one_line(output)
    assert not (tmp_path / "m.onnx").exists()


def test_export_never_overwrites_the_input_or_an_existing_file_without_force(tiny, tmp_path):
    ckpt: Path = tiny["ckpt"]
    before = ckpt.read_bytes()
    code, output = invoke("export", ckpt, "--out", ckpt)
    assert code == 2 and "would overwrite the input" in one_line(output)
    assert ckpt.read_bytes() == before

    folder = tmp_path / "folder"
    folder.mkdir()
    code, output = invoke("export", ckpt, "--out", folder)
    assert code == 2 and f"--out {folder} is a folder" in one_line(output)

    existing = tmp_path / "m.onnx"
    existing.write_text("earlier work")
    code, output = invoke("export", ckpt, "--out", existing)
    assert code == 2 and f"{existing} already exists; pass --force" in one_line(output)
    assert existing.read_text() == "earlier work"
    code, output = invoke("export", ckpt, "--out", existing, "--force")
    assert code == 0, output
    assert existing.stat().st_size > 1000 and not list(tmp_path.glob("*.probe"))


def test_export_to_an_unwritable_place(tiny, tmp_path):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "m.onnx"  # its "folder" is a file
    code, output = invoke("export", tiny["ckpt"], "--out", out)
    assert code == 2 and f"cannot write {out}" in one_line(output)


# 7. quantize --bits
def test_quantize_bits_yaml_syntax_error_names_file_and_line(tiny, tmp_path):
    bits = tmp_path / "bits.yaml"
    bits.write_text("default: {w: 1, a: 4}\nfirst: {w: 4, a: 4\nlast: {w: 4}\n")
    code, output = invoke("quantize", tiny["ckpt"], "--precision", "w4a4", "--bits", bits)
    assert code == 2
    line = one_line(output)
    assert f"--bits: {bits} is not valid YAML (line 3" in line


# 8. report
def test_report_of_a_truncated_results_file(tmp_path):
    (tmp_path / "results.json").write_text('{"columns": ["variant"], "rows": [{"variant": "fp3')
    code, output = invoke("report", tmp_path)
    assert code == 2
    assert f"{tmp_path / 'results.json'} is not a readable results file (line 1" in one_line(output)


def test_read_results_missing_is_empty_and_unreadable_is_an_error(tmp_path):
    assert read_results(tmp_path) == []
    (tmp_path / "results.json").write_text(json.dumps({"columns": []}))
    with pytest.raises(EdgeCNNError, match="no 'rows' list"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(EdgeCNNError, match="not UTF-8 text"):
        read_results(tmp_path)


def test_the_module_entry_point_has_the_same_boundary(tmp_path):
    """`python -m edgecnn.cli` (and the `edgecnn` script, the same app) goes through the same error boundary."""
    out = subprocess.run([sys.executable, "-m", "edgecnn.cli", "bench", str(tmp_path / "m.onnx"), "--batch", "0"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert one_line(out.stderr) == "error: --batch 0: every batch size must be 1 or more, e.g. --batch 1,8,64"
