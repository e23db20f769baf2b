"""conftest.require, the importorskip without silent skips in CI: a module of an extra that .ci/run installs fails
its tests under EDGECNN_REQUIRE_EXTRAS=1 (at module level: the module's collection), and skips otherwise."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REQUIRE_EXTRAS, ci_extras

TESTS = Path(__file__).resolve().parent
MISSING = "edgecnn_test_no_such_module"

IN_TEST = f'''
from conftest import require


def test_needs_a_ci_extra():
    require("{MISSING}", "lowbit")


def test_needs_an_extra_ci_leaves_out():
    require("{MISSING}", "no-such-extra")


def test_needs_nothing_missing():
    assert require("json", "lowbit").dumps(1) == "1"
'''
MODULE_LEVEL = f'''
from conftest import require

require("{MISSING}", "lowbit")


def test_never_collected():
    pass
'''


def _pytest(folder: Path, require_extras: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_EXTRAS}
    if require_extras:
        env[REQUIRE_EXTRAS] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "--rootdir",
                          str(folder), "--continue-on-collection-errors", str(folder)], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=300)
    return out.stdout + out.stderr


def test_require_fails_under_the_variable_and_skips_without(tmp_path):
    assert "lowbit" in ci_extras() and "no-such-extra" not in ci_extras()
    (tmp_path / "test_in_test.py").write_text(IN_TEST)
    (tmp_path / "test_module_level.py").write_text(MODULE_LEVEL)

    strict = _pytest(tmp_path, require_extras=True)
    expected = f"extra 'lowbit' is installed by .ci/run but '{MISSING}' cannot be imported: ModuleNotFoundError"
    assert "FAILED test_in_test.py::test_needs_a_ci_extra - Failed: extra 'lowbit'" in strict, strict
    assert "ERROR test_module_level.py - Failed: extra 'lowbit'" in strict, strict  # the whole module fails
    # the message, in full, of each (CI=true makes pytest repeat it untruncated in the short summary: 2 or 4 times)
    assert strict.count(expected) >= 2, strict
    assert "SKIPPED [1] " in strict and "edgecnn[all] leaves 'no-such-extra' out" in strict, strict
    assert "1 failed, 1 passed, 1 skipped, 1 error" in strict, strict

    lenient = _pytest(tmp_path, require_extras=False)
    assert "pip install 'edgecnn[lowbit]'" in lenient and "Failed" not in lenient, lenient
    assert "1 passed, 3 skipped" in lenient, lenient  # two tests and the module-level one
