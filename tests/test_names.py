"""Every name from a configuration that becomes a file or folder name is validated by one rule (edgecnn.names):
none can point outside the run directory, hide itself or exceed the file system's limits."""
from __future__ import annotations

import pytest

from edgecnn.config import parse_config
from edgecnn.errors import EdgeCNNError
from edgecnn.names import MAX_NAME_LENGTH, check_name, name_problem

BAD = ["../../../x", "/abs/path", "a/b", "a\\b", "..", ".", ".hidden", "", "x" * (MAX_NAME_LENGTH + 1), "tab\there",
       "nul\x00"]
GOOD = ["quickstart", "w4a4-shared", "run_2.1", "x" * MAX_NAME_LENGTH, "résumé"]

#: Where a configuration's names become paths: (a config with the name in place, the key the error names).
PLACES = {
    "run name": (lambda n: {"name": n}, "name"),
    "model label": (lambda n: {"models": [{"name": "lenet5", "label": n}]}, "models.0.label"),
    "low-bit variant": (lambda n: {"lowbit": {"variants": [n], "specs": {n: {"default": "w4a4"}}}}, "lowbit"),
    "low-bit spec": (lambda n: {"lowbit": {"variants": ["w4a4"], "specs": {n: {"default": "w4a4"}}}}, "lowbit.specs"),
    "study": (lambda n: {"search": {"study": n, "space": {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}}},
              "search.study"),
}


@pytest.mark.parametrize("name", BAD, ids=repr)
def test_the_rule_refuses_names_that_are_not_one_plain_component(name):
    assert name_problem(name) is not None
    with pytest.raises(EdgeCNNError, match="cannot be a file or folder name") as err:
        check_name(name, "run name")
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("name", GOOD)
def test_the_rule_accepts_plain_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", ["../../../x", "/tmp/elsewhere", "y" * 300])
def test_every_config_name_that_becomes_a_path_is_checked_when_the_file_is_read(place, name):
    make, key = PLACES[place]
    with pytest.raises(EdgeCNNError, match="cannot be a file or folder name") as err:
        parse_config(make(name))
    message = str(err.value)
    assert key in message and "\n" not in message and len(message) < 600  # one or two problems, each short


@pytest.mark.parametrize("place", PLACES)
def test_a_plain_name_passes_everywhere(place):
    make, _ = PLACES[place]
    parse_config(make("plain-name_1"))
