"""Hostile experiment files and settings end in a one-line error (exit 2) before any work: a YAML alias bomb that
would expand to gigabytes when config.yaml is written, an alias that contains itself, a command-line override into
a key that is not a section, and an output that is a file."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgecnn.cli import app
from edgecnn.config import load_config
from edgecnn.errors import EdgeCNNError
from edgecnn.schema import check_yaml_size


def _bomb(levels: int) -> str:
    lines = ["name: bomb", 'l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(30)
def test_an_alias_bomb_is_refused_in_linear_time(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9))  # 10**9 values when written out
    with pytest.raises(EdgeCNNError, match="expands to more than 200,000 values"):
        load_config(path)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2 and "expands to more than" in result.output


def test_shared_aliases_within_the_limit_are_fine_and_counted_as_copies():
    shared = ["x"] * 10
    assert check_yaml_size({"a": shared, "b": [shared] * 10}, "t", limit=200) is not None
    with pytest.raises(EdgeCNNError, match="more than 100 values"):
        check_yaml_size({"a": shared, "b": [shared] * 10}, "t", limit=100)


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\nl: &l [*l]\n")
    with pytest.raises(EdgeCNNError, match="contains it"):
        load_config(path)


def test_an_override_into_a_key_that_is_not_a_section_is_one_line(tmp_path):
    path = tmp_path / "scalar.yaml"
    path.write_text("name: s\ndata: 5\n")
    result = CliRunner().invoke(app, ["run", str(path), "--data", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and "'data' is not a section of keys" in result.output
    assert "Traceback" not in result.output


def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "o.yaml"
    path.write_text(f"name: o\noutput: {tmp_path / 'afile'}\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_a_progressive_start_larger_than_the_images_is_refused():
    from edgecnn.config import parse_config

    with pytest.raises(EdgeCNNError, match=r"train.progressive.start 48 is larger than data.image_size 32"):
        parse_config({"data": {"image_size": 32}, "train": {"progressive": {"start": 48}}})
    with pytest.raises(EdgeCNNError, match=r"models\[0\].train.progressive.start 48"):
        parse_config({"data": {"image_size": 32},
                      "models": [{"name": "lenet5", "train": {"progressive": {"start": 48}}}]})
    parse_config({"data": {"image_size": 64}, "train": {"progressive": {"start": 48}}})


@pytest.mark.parametrize("changes, message", [
    ({"data": {"split": {"val": 0.25, "test": 0.95}}}, "leave no training images"),
    ({"seed": -1}, "seed"),
    ({"evaluate": {"latency_batches": [0]}}, "latency_batches"),
    ({"train": {"epochs": 10**23}}, "train.epochs"),
])
def test_values_that_would_fail_mid_run_are_refused_when_read(changes, message):
    from edgecnn.config import parse_config

    with pytest.raises(EdgeCNNError, match=message):
        parse_config(changes)
