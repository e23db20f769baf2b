"""Every benchmark script records the machine it measured on (CPU model and flags, cores, threads, versions) and the
command that ran it in the JSON it writes, so figures from two machines are never compared as if they were one and
every figure can be rerun; every result JSON carries both; every script parses its arguments; every script lives in
exactly one kind folder (benchmarks/README.md)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
KINDS = ("claims", "perf", "studies")
SCRIPTS = sorted(p for kind in KINDS for p in (BENCHMARKS / kind).glob("*.py") if not p.name.startswith("_"))
RESULTS = sorted((BENCHMARKS / "results").glob("*.json"))


def script_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("script", SCRIPTS, ids=script_id)
def test_script_records_the_machine_and_the_command(script):
    text = script.read_text()
    imported = text.split("from _common import", 1)[1].splitlines()[0] if "from _common import" in text else ""
    assert "machine" in imported and "command" in imported, f"{script.name} does not import machine and command"
    assert '"machine": machine()' in text, f"{script.name} writes no machine record"
    assert '"command": command()' in text, f"{script.name} writes no command"
    assert "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))" in text, \
        f"{script.name} cannot import benchmarks/_common.py from its folder"


@pytest.mark.parametrize("script", SCRIPTS, ids=script_id)
def test_script_parses_its_arguments(script):
    """`--help` works from the repository root and answers fast: heavy imports come after argument parsing."""
    done = subprocess.run([sys.executable, str(script.relative_to(ROOT)), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:200]


def test_scripts_are_sorted_by_kind():
    """Each script is in exactly one kind folder, none is left at the top, and benchmarks/README.md names each."""
    assert SCRIPTS, "no benchmark scripts found"
    top = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "_common.py")
    assert not top, f"scripts outside a kind folder: {top}"
    names = [p.name for p in SCRIPTS]
    assert len(names) == len(set(names)), f"a script name in two kind folders: {names}"
    folders = {p.name for p in BENCHMARKS.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert folders <= set(KINDS), f"scripts in folders that are not kinds: {sorted(folders - set(KINDS))}"
    readme = (BENCHMARKS / "README.md").read_text()
    named = set(re.findall(r"`((?:claims|perf|studies)/\w+\.py)`", readme))
    present = {script_id(p) for p in SCRIPTS}
    assert named == present, f"benchmarks/README.md and the kind folders disagree: missing {sorted(present - named)}" \
        f", stale {sorted(named - present)}"


@pytest.mark.parametrize("result", RESULTS, ids=lambda p: p.name)
def test_result_records_machine_and_command(result):
    """A machine record (or the honest `recorded: false` form of a result written before records were kept) and the
    command of a script that exists."""
    data = json.loads(result.read_text())
    machine = data.get("machine")
    assert isinstance(machine, dict), f"{result.name} has no machine record"
    if machine.get("recorded") is False:
        assert machine.get("why") and "same_class_as" in machine, f"{result.name}: recorded=false without why"
    else:
        assert {"cpu_count", "python"} <= set(machine), f"{result.name}: not a machine record: {sorted(machine)}"
    command = data.get("command")
    assert isinstance(command, str) and command.startswith("python benchmarks/"), f"{result.name}: no command"
    script = command.split()[1]
    assert (ROOT / script).is_file(), f"{result.name}: its command names {script}, which does not exist"
