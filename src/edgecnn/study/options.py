"""The ``search:`` section of an experiment: the space, the objectives and constraints, the budget, the study."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecnn.schema import StrictModel


class Dimension(StrictModel):
    """One dimension of the space. A plain list in YAML means ``choices``.

    ``low``/``high`` (with ``log``, ``step``) give an int (both bounds ints) or float range; ``choices`` a
    categorical; ``length`` + ``each`` a list whose length is itself searched (or taken from another key's
    sampled value, e.g. ``length: model.args.stages``): widths per stage up to the sampled depth.
    """

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    length: "int | str | Dimension | None" = None
    each: "Dimension | None" = None

    @model_validator(mode="before")
    @classmethod
    def _list_is_choices(cls, value: Any) -> Any:
        return {"choices": value} if isinstance(value, list) else value


class SearchConfig(StrictModel):
    space: dict[str, Dimension] = Field(default_factory=dict)  # dotted config key -> dimension
    objectives: list[str] = Field(default_factory=lambda: ["accuracy"])  # accuracy, fps@T, latency_ms@T, ...
    constraints: list[str] = Field(default_factory=list)  # "fps@zcu104-finn >= 20000", "size_kb <= 500", "fits@T"
    trials: int = Field(20, ge=1)
    timeout: str | None = None  # e.g. 2h, 30m, 45s
    storage: str | None = None  # Optuna storage URL; default: a SQLite file in the run directory
    study: str | None = None  # default: the experiment's name
    workers: int = Field(1, ge=1)
    epochs: int = Field(3, ge=1)  # training budget of one trial
    sampler: Literal["auto", "tpe", "nsga2", "random"] = "auto"  # auto: TPE for one objective, NSGA-II for more
    pruner: Literal["median", "hyperband", "none"] = "median"
    heartbeat_s: int = Field(20, ge=1)  # a worker that stops beating for 2x this has its trial failed + re-queued
    retries: int = Field(2, ge=0)  # how often a failed (killed) trial is re-queued
    threads: int = Field(1, ge=1)  # torch threads per worker
    seed: int = 0
    retrain_best: int = Field(0, ge=0)  # retrain the K best trials (Pareto front) with the full budget, whole pipeline

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_choices(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"choices": v} if isinstance(v, list) else v for k, v in value.items()}
        return value
