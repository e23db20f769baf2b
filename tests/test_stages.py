"""Run-directory bookkeeping: records survive kills and moves, and one run at a time works in a directory."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from edgecnn.errors import EdgeCNNError
from edgecnn.stages import RunLock, Stage


def _finished(run_dir, name="train", inputs=None):
    stage = Stage(run_dir, name, inputs or {"epochs": 3})
    stage.begin(keep_partial=False)
    ckpt = stage.dir / "best.safetensors"
    ckpt.write_bytes(b"weights")
    stage.finish({"best_checkpoint": str(ckpt), "history": [{"epoch": 1}], "name": "fp32",
                  "nested": {"files": [str(ckpt)]}})
    return stage


def test_a_moved_run_is_reused_with_its_own_files(tmp_path):
    _finished(tmp_path / "runs" / "a")
    record = json.loads((tmp_path / "runs" / "a" / "train" / "stage.json").read_text())
    assert record["outputs"]["best_checkpoint"] == "train/best.safetensors"  # relative to the run directory
    shutil.move(str(tmp_path / "runs" / "a"), str(tmp_path / "moved"))
    done = Stage(tmp_path / "moved", "train", {"epochs": 3}).cached()
    assert done["best_checkpoint"] == str(tmp_path / "moved" / "train" / "best.safetensors")
    assert done["nested"]["files"] == [done["best_checkpoint"]]
    assert done["name"] == "fp32" and done["history"] == [{"epoch": 1}]  # other strings untouched


def test_an_interrupted_stage_starts_again_in_place_without_a_prev_folder(tmp_path):
    first = Stage(tmp_path, "variant", {"precision": "fp16"})
    first.begin(keep_partial=False)
    (first.dir / "partial.onnx").write_bytes(b"half")  # killed before finish()
    again = Stage(tmp_path, "variant", {"precision": "fp16"})
    assert again.interrupted()
    again.begin(keep_partial=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["variant"]
    assert not (again.dir / "partial.onnx").exists()
    changed = Stage(tmp_path, "variant", {"precision": "bf16"})  # other inputs: the old folder is kept aside
    changed.begin(keep_partial=False)
    assert any(p.name.startswith("variant.prev-") for p in tmp_path.iterdir())


@pytest.mark.parametrize("record", ["inputs.json", "stage.json"])
def test_a_truncated_record_is_no_error_and_only_the_stage_record_says_done(tmp_path, record):
    stage = _finished(tmp_path)
    path = stage.dir / record
    path.write_text(path.read_text()[:17])  # a kill in the middle of a write
    again = Stage(tmp_path, "train", {"epochs": 3})
    if record == "stage.json":  # the finished record is gone: not done
        assert again.cached() is None
    else:  # inputs.json only marks a start; the finished record still says done
        assert again.cached() is not None and not again.interrupted()
    again.begin(keep_partial=False)  # no JSONDecodeError
    assert again.finish({"x": 1}) == {"x": 1} and again.cached() == {"x": 1}


def test_one_run_at_a_time_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        (tmp_path / ".lock").write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "since": "now"}))
        with pytest.raises(EdgeCNNError, match=rf"in use by process {live.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    with RunLock(tmp_path) as lock:  # the holder is gone: its lock is taken over
        assert json.loads(lock.path.read_text())["pid"] != live.pid
        with pytest.raises(EdgeCNNError, match="already in use by this process"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    assert "no longer running" in caplog.text


HOLD_FLOCK = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(30)\n")


def test_a_lock_held_by_a_live_process_is_refused_even_before_it_names_its_holder(tmp_path):
    """The window between creating .lock and writing the holder into it: the flock already says a process owns
    it, so an empty or unreadable lock file is not taken over while that process lives."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FLOCK, str(tmp_path / ".lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EdgeCNNError, match="in use by another process; wait for it to finish") as err:
            RunLock(tmp_path).acquire()
        assert "--name" not in str(err.value)  # `edgecnn search` has no --name: the hint names the config key
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # its process is gone: the kernel dropped the flock
        pass


def test_a_garbage_lock_file_nobody_holds_is_taken_over_with_a_message(tmp_path, caplog):
    (tmp_path / ".lock").write_bytes(b"\x00garbage{")
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "unreadable lock file" in caplog.text
