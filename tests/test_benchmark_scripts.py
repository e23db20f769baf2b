"""Every benchmark script records the machine it measured on (CPU model and flags, cores, threads, versions) in
the JSON it writes, so figures from two machines are never compared as if they were one."""
from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")),
                         ids=lambda p: p.name)
def test_script_records_the_machine(script):
    text = script.read_text()
    assert "from _common import" in text and "machine" in text.split("from _common import", 1)[1].splitlines()[0]
    assert '"machine": machine()' in text, f"{script.name} writes no machine record"
