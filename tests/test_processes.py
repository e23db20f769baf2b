"""edgecnn's child processes die with their parent (no orphans training into a run nobody watches), and process
counts beyond the machine are refused (ranks) or clamped with a warning (search workers)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecnn import processes
from edgecnn.cli import app
from edgecnn.errors import EdgeCNNError

CHILD = ("import os, time\nfrom edgecnn.processes import die_with_parent\n"
         "assert die_with_parent(os.getppid())\nprint('armed', flush=True)\ntime.sleep(120)\n")
PARENT = ("import subprocess, sys, time\n"
          f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}])\n"
          "print(child.pid, flush=True)\ntime.sleep(120)\n")


def _alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.timeout(60)
def test_a_child_dies_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    deadline = time.time() + 20
    while time.time() < deadline and not Path(f"/proc/{child}").exists():
        time.sleep(0.05)
    time.sleep(2)  # the child imports edgecnn and arms itself
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the child outlived its killed parent"


def test_more_ranks_than_the_machine_has_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(processes, "usable_cores", lambda: 2)
    with pytest.raises(EdgeCNNError, match="--nproc 99: this machine has 2 CPU core"):
        processes.check_ranks(99, gpus=0)
    with pytest.raises(EdgeCNNError, match="has 1 GPU"):
        processes.check_ranks(2, gpus=1)
    processes.check_ranks(2, gpus=0)
    result = CliRunner().invoke(app, ["train", "--nproc", str(processes.usable_cores() + 97)])
    assert result.exit_code == 2 and "this machine has" in result.output and "Traceback" not in result.output


def test_more_search_workers_than_cores_are_clamped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(processes, "usable_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="edgecnn"):
        assert processes.clamp_workers(24) == 2
    assert any("running 2 workers" in r.getMessage() for r in caplog.records)
    assert processes.clamp_workers(2) == 2
