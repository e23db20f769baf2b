"""The estimator registry (one estimator per target kind) and the host cost every estimator shares."""
from __future__ import annotations

import pytest

from edgecnn.errors import EdgeCNNError
from edgecnn.hw import HardwareModelError, list_estimators
from edgecnn.hw.estimators.base import (
    ESTIMATORS,
    HOST_NS_PER_ELEMENT,
    Estimator,
    estimator_for,
    host_cost,
    register_estimator,
)
from edgecnn.hw.graph import Layer
from edgecnn.hw.targets import KINDS


def test_list_estimators_names_every_target_kind():
    assert list_estimators() == sorted(KINDS) == ["cpu", "dataflow", "dpu", "systolic"]
    assert list_estimators("d*") == ["dataflow", "dpu"]
    assert list_estimators("nothing*") == []


def test_estimator_for_a_kind_and_did_you_mean_for_an_unknown_one():
    assert estimator_for("systolic").kind == "systolic"
    with pytest.raises(HardwareModelError) as err:
        estimator_for("systolc")
    assert str(err.value) == "no estimator for target kind 'systolc' — did you mean: systolic?"
    assert isinstance(err.value, EdgeCNNError)
    with pytest.raises(HardwareModelError, match=r"^no estimator for target kind 'zzz'$"):
        estimator_for("zzz")


def test_a_kind_is_registered_once():
    before = ESTIMATORS.names()
    with pytest.raises(ValueError, match="'dpu' is registered twice"):
        register_estimator("dpu")(type("Again", (Estimator,), {"estimate": lambda self, *a, **k: None}))
    assert ESTIMATORS.names() == before and estimator_for("dpu").kind == "dpu"


def test_host_cost_is_elements_times_the_assumed_rate():
    layer = Layer("soft", "softmax", "Softmax", in_shape=(1, 1000), out_shape=(1, 1000))
    u = host_cost(layer, "the Arm CPU")
    assert (u.name, u.op, u.why) == ("soft", "softmax", "")
    assert u.cost_ms == pytest.approx(1000 * HOST_NS_PER_ELEMENT * 1e-6)
    assert u.cost.startswith("runs on the Arm CPU: 1000 elements")
    unknown = Layer("x", "unknown", "MyOp", in_shape=(1, 8), out_shape=(1, 16), known=False)
    assert host_cost(unknown).op == "MyOp" and "the host CPU: 16 elements" in host_cost(unknown).cost
