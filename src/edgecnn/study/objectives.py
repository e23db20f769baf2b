"""Objectives and constraints of a search, parsed from short strings.

Objectives: ``accuracy`` (validation, after the trial's training; maximised), ``fps@TARGET`` (maximised),
``latency_ms@TARGET``, ``energy_mj@TARGET`` (minimised), ``params``, ``macs``, ``size_kb`` (INT8 weight bytes /
1024), ``cpu_ms`` (measured batch-1 latency of the candidate on this CPU) (minimised). Constraints:
``<metric> <op> <number>`` with op one of >=, <=, >, <, or ``fits@TARGET`` (the dataflow design fits the
board's LUT/BRAM/DSP budget), or ``finn@TARGET`` (FINN's own compiler front end builds every layer of the candidate's
low-bit file as a hardware layer; needs FINN's environment). Every metric but accuracy is known before training, so
a candidate that breaks a constraint is pruned without training.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from edgecnn.errors import EdgeCNNError, did_you_mean

HW_METRICS = ("fps", "latency_ms", "energy_mj", "fits", "finn")
YES_NO = ("fits", "finn")  # constraints that hold or not, never objectives
PLAIN_METRICS = ("accuracy", "params", "macs", "size_kb", "cpu_ms")
MAXIMISED = ("accuracy", "fps", "fits", "finn")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Metric:
    """A metric name, with its hardware target for fps/latency_ms/energy_mj/fits."""

    name: str
    target: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.target}" if self.target else self.name

    @property
    def direction(self) -> str:
        return "maximize" if self.name in MAXIMISED else "minimize"

    @property
    def before_training(self) -> bool:
        return self.name != "accuracy"


@dataclass(frozen=True)
class Constraint:
    metric: Metric
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return bool(OPS[self.op](value, self.bound))

    def __str__(self) -> str:
        return f"{self.metric.key} {self.op} {self.bound:g}" if self.metric.name not in YES_NO else self.metric.key


def parse_metric(text: str, where: str) -> Metric:
    name, _, target = text.strip().partition("@")
    known = (*PLAIN_METRICS, *HW_METRICS)
    if name not in known:
        raise EdgeCNNError(f"{where}: unknown metric '{name}'{did_you_mean(name, known)}; use one of "
                           "accuracy, params, macs, size_kb, cpu_ms, fps@TARGET, latency_ms@TARGET, "
                           "energy_mj@TARGET, fits@TARGET, finn@TARGET")
    if name in HW_METRICS and not target:
        raise EdgeCNNError(f"{where}: '{name}' needs a hardware target, e.g. {name}@kv260")
    if name in PLAIN_METRICS and target:
        raise EdgeCNNError(f"{where}: '{name}' takes no target (drop '@{target}')")
    if target:
        from edgecnn.hw import get_target

        try:
            get_target(target)
        except EdgeCNNError as exc:
            raise EdgeCNNError(f"{where}: {exc}") from None
    return Metric(name, target or None)


def parse_objectives(items: list[str]) -> list[Metric]:
    if not items:
        raise EdgeCNNError("search.objectives is empty: give at least one, e.g. [accuracy, fps@kv260]")
    metrics = [parse_metric(t, f"search.objectives '{t}'") for t in items]
    for m in metrics:
        if m.name in YES_NO:
            raise EdgeCNNError(f"search.objectives: '{m.name}@T' is a constraint, not an objective; move it to "
                               "constraints")
    return metrics


def parse_constraint(text: str) -> Constraint:
    where = f"search.constraints '{text}'"
    if text.strip().startswith(tuple(f"{name}@" for name in YES_NO)):
        return Constraint(parse_metric(text, where), ">=", 1.0)
    match = re.fullmatch(r"\s*(\S+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*", text)
    if not match:
        raise EdgeCNNError(f"{where}: write '<metric> <op> <number>' (op: >=, <=, >, <), e.g. 'size_kb <= 500', "
                           "or 'fits@TARGET' / 'finn@TARGET'")
    metric = parse_metric(match.group(1), where)
    if metric.name == "accuracy":
        raise EdgeCNNError(f"{where}: accuracy is known only after training; make it an objective instead")
    return Constraint(metric, match.group(2), float(match.group(3)))


def parse_timeout(text: str | None) -> float | None:
    """Seconds of '2h', '30m', '45s' or a plain number of seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9.]+)\s*([hms]?)\s*", str(text))
    if not match:
        raise EdgeCNNError(f"search.timeout '{text}': write e.g. 2h, 30m, 45s")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]
