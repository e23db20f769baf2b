"""What a user gets from a plain (non-editable) install of the built wheel, and the bundled example configs."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The wheel built from this checkout, installed into an empty folder put first on PYTHONPATH (the test venv
    provides the dependencies); returns the environment to run it with."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("edgecnn-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, cwd=tmp)
    env = {**os.environ, "PYTHONPATH": str(tmp / "site"), "WHEEL": str(wheel), "HOME": str(tmp)}
    return env


def _edgecnn(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_wheel_ships_the_quickstart_config_sample_and_catalog(installed):
    names = zipfile.ZipFile(installed["WHEEL"]).namelist()
    assert "edgecnn/configs/quickstart.yaml" in names
    assert "edgecnn/hw/targets.yaml" in names
    assert sum(n.startswith("edgecnn/data/sample/eurosat/") and n.endswith(".jpg") for n in names) >= 100


def test_installed_wheel_runs_the_readme_command_dry(installed, tmp_path):
    """`edgecnn run` with no argument loads the bundled quickstart from the installed package, not the checkout."""
    where = subprocess.run([sys.executable, "-c", "import edgecnn; print(edgecnn.__file__)"], env=installed,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(installed["PYTHONPATH"]), where
    out = _edgecnn(installed, "run", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "config OK: bundled quickstart" in out.stdout and "precisions: fp32" in out.stdout
    assert _edgecnn(installed, "run", "--help", cwd=tmp_path).returncode == 0


def test_import_without_optional_extras_and_a_missing_extra_is_named(tmp_path):
    """`import edgecnn` needs no extra; using a feature whose extra is missing is one line naming the extra."""
    code = ("import sys\n"
            "for name in ['brevitas', 'qonnx', 'optuna', 'torch_pruning', 'torchao', 'hls4ml', 'openvino', 'quark',\n"
            "             'onnx2tf', 'tensorflow', 'ai_edge_litert']:\n"
            "    sys.modules[name] = None\n"
            "import edgecnn, edgecnn.config, edgecnn.api, edgecnn.pipeline, edgecnn.cli\n"
            "from edgecnn.config import load_config\n"
            "load_config()\n"
            "from edgecnn.variants.lowbit_sweep import check_available\n"
            "check_available()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert "pip install 'edgecnn[lowbit]'" in last


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_validates(path):
    from edgecnn.config import load_config

    cfg = load_config(path)
    assert cfg.name and cfg.precisions[0] == "fp32"


def test_every_public_name_resolves_after_the_subpackages_are_imported():
    """The lazy top-level names stay what they say even once subpackages of the same package are imported
    (a verb named like a subpackage would be shadowed by it)."""
    import edgecnn
    import edgecnn.config  # noqa: F401  (imports edgecnn.train, edgecnn.data, ... as subpackages)

    for name in edgecnn.__all__:
        value = getattr(edgecnn, name)
        assert not isinstance(value, type(edgecnn)), f"edgecnn.{name} is a module, not the public {name}"
    assert edgecnn.train_experiment.__module__ == "edgecnn.pipeline"
