"""Data-parallel training (2 gloo ranks, 1 thread each, started by `edgecnn train --nproc 2`) on the bundled sample:
same split as one process, one set of checkpoints, close accuracy, and a rank killed mid-run resumes on rerun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgecnn.train.checkpoint import read_checkpoint

CONFIG = {
    "seed": 0,
    "data": {"limit_per_class": 40},
    "model": {"name": "customnet", "args": {"stem_channels": 8, "channels": [16, 32], "blocks": 1}},
    "train": {"epochs": 4, "batch_size": 32, "amp": "off", "channels_last": False, "threads": 1},
}


def _config(tmp_path: Path, **train) -> Path:
    cfg = {**CONFIG, "name": "ddp", "output": str(tmp_path / "runs"), "train": {**CONFIG["train"], **train}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _edgecnn(*args: str, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgecnn", "--quiet", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _history(run: Path) -> list[dict]:
    return json.loads((run / "train" / "history.json").read_text())


def test_two_ranks_train_like_one_process_and_write_one_set_of_checkpoints(tmp_path):
    config = _config(tmp_path)
    two = _edgecnn("train", str(config), "--name", "two", "--nproc", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    one = _edgecnn("train", str(config), "--name", "one")
    assert one.returncode == 0, one.stderr[-2000:]
    runs = tmp_path / "runs"
    split_two, split_one = (json.loads((runs / n / "split.json").read_text()) for n in ("two", "one"))
    assert all(split_two[k] == split_one[k] for k in ("train", "val", "test"))
    files = sorted(p.name for p in (runs / "two" / "train").iterdir())
    assert files == sorted(p.name for p in (runs / "one" / "train").iterdir())  # no per-rank copies
    _, _, meta = read_checkpoint(runs / "two" / "train" / "last.safetensors")
    assert meta["ranks"] == 2 and meta["epoch"] == 3
    h2, h1 = _history(runs / "two"), _history(runs / "one")
    assert len(h2) == len(h1) == 4
    # the same global batches and augmentations; only BatchNorm sees half a batch per rank
    assert abs(h2[0]["train_loss"] - h1[0]["train_loss"]) < 0.15
    assert abs(h2[-1]["val_acc"] - h1[-1]["val_acc"]) <= 0.1
    assert "rank 1" not in two.stdout  # rank 0 speaks for the group
    assert two.stdout.count("best val accuracy") == 1


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _children(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


def test_a_rank_killed_mid_run_resumes_from_the_last_finished_epoch(tmp_path):
    config = _config(tmp_path, epochs=6)
    data_cfg = yaml.safe_load(config.read_text())
    data_cfg["data"]["limit_per_class"] = 100
    config.write_text(yaml.safe_dump(data_cfg))
    launcher = _edgecnn("train", str(config), "--nproc", "2", wait=False)
    last = tmp_path / "runs" / "ddp" / "train" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if last.exists() and json.loads(last.read_text()).get("epoch", -1) >= 1 and launcher.poll() is None:
            break
        assert launcher.poll() is None, launcher.communicate()[1][-2000:]
        time.sleep(0.05)
    pid = _rank_pid(launcher.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "rerun the same command to resume" in err.strip().splitlines()[-1], err[-3000:]
    assert "training rank 1 of 2 stopped (killed by SIGKILL)" in err, err[-3000:]  # the rank killed, not rank 0
    assert "Traceback" not in err, err[-3000:]
    killed_at = json.loads(last.read_text())["epoch"]
    assert killed_at < 5, "the run finished before the kill; make it longer"
    again = _edgecnn("train", str(config), "--nproc", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    record = json.loads((tmp_path / "runs" / "ddp" / "train" / "stage.json").read_text())["outputs"]
    assert record["resumed_from_epoch"] == killed_at + 1
    assert [r["epoch"] for r in _history(tmp_path / "runs" / "ddp")] == [1, 2, 3, 4, 5, 6]


def test_run_refuses_to_start_under_torchrun(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    result = subprocess.run([sys.executable, "-m", "edgecnn", "run", str(_config(tmp_path))], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "edgecnn train CONFIG --nproc K" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--nproc", "0"]])
def test_bad_nproc_is_a_usage_error(tmp_path, args):
    result = _edgecnn("train", str(_config(tmp_path)), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.timeout(300)
def test_a_batch_smaller_than_the_ranks_is_a_one_line_error(tmp_path):
    """batch_size 1 over 2 ranks gave each rank 0 images per step (a division by zero)."""
    result = _edgecnn("train", str(_config(tmp_path, batch_size=1, epochs=1)), "--nproc", "2")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "train.batch_size 1 is smaller than the 2 data-parallel processes" in result.stderr
    assert "Traceback" not in result.stderr and "ZeroDivisionError" not in result.stderr


@pytest.mark.timeout(300)
def test_ctrl_c_to_the_launcher_exits_130_with_one_line(tmp_path):
    config = _config(tmp_path, epochs=30)
    launcher = _edgecnn("train", str(config), "--nproc", "2", wait=False)
    last = tmp_path / "runs" / "ddp" / "train" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline and not last.exists():
        assert launcher.poll() is None, launcher.communicate()[1][-2000:]
        time.sleep(0.05)
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err[-3000:]
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err, err[-3000:]
