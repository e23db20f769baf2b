"""The ``search:`` section of an experiment: the space, the objectives and constraints, the budget, the study."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecnn.names import PlainName
from edgecnn.schema import StrictModel


class Dimension(StrictModel):
    """One dimension of the space. A plain list in YAML means ``choices``.

    ``low``/``high`` (with ``log``, ``step``) give an int (both bounds ints) or float range; ``choices`` a
    categorical; ``length`` + ``each`` a list whose length is itself searched (or taken from another key's
    sampled value, e.g. ``length: model.args.stages``): widths per stage up to the sampled depth.
    """

    choices: list[Any] | None = Field(None, description="The values to choose from (a categorical).")
    low: float | None = Field(None, description="Lower bound of a range (an int range when both bounds are ints).")
    high: float | None = Field(None, description="Upper bound of a range.")
    log: bool = Field(False, description="Sample the range on a log scale.")
    step: float | None = Field(None, description="Step of the range.")
    length: "int | str | Dimension | None" = Field(None, description="A list value: its length, fixed (int), "
                                                   "searched (a dimension) or another key's sampled value (e.g. "
                                                   "model.args.stages).")
    each: "Dimension | None" = Field(None, description="A list value: the dimension of each element.")

    @model_validator(mode="before")
    @classmethod
    def _list_is_choices(cls, value: Any) -> Any:
        return {"choices": value} if isinstance(value, list) else value


class SearchConfig(StrictModel):
    space: dict[str, Dimension] = Field(default_factory=dict, description="Dotted config key -> dimension, e.g. "
                                        "train.lr: {low: 0.001, high: 0.01, log: true}; a plain list means choices.")
    objectives: list[str] = Field(default_factory=lambda: ["accuracy"], description="accuracy, fps@TARGET, "
                                  "latency_ms@TARGET, energy_mj@TARGET, params, macs, size_kb or cpu_ms.")
    constraints: list[str] = Field(default_factory=list, description="Checked before a candidate is trained, e.g. "
                                   "'fps@zcu104-finn >= 20000', 'size_kb <= 500', fits@TARGET, finn@TARGET.")
    trials: int = Field(20, ge=1, description="Trials in the study in all, counting those other workers run.")
    timeout: str | None = Field(None, description="Stop starting trials after this long, e.g. 2h, 30m, 45s.")
    storage: str | None = Field(None, description="Optuna storage URL (postgresql://... for workers on many "
                                "machines); null: a SQLite file in the run directory.")
    study: PlainName | None = Field(None, description="Study name; null: the experiment's name.")
    workers: int = Field(1, ge=1, description="Local worker processes on the storage.")
    epochs: int = Field(3, ge=1, description="Training epochs of one trial.")
    sampler: Literal["auto", "tpe", "nsga2", "random"] = Field("auto", description="Optuna sampler; auto: TPE for "
                                                               "one objective, NSGA-II for more.")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="Optuna pruner stopping "
                                                          "unpromising trials on their validation curve.")
    heartbeat_s: int = Field(20, ge=1, description="Worker heartbeat in seconds: a worker silent for twice this has "
                             "its trial failed and re-queued.")
    retries: int = Field(2, ge=0, description="How often a failed (killed) trial is re-queued.")
    threads: int = Field(1, ge=1, description="PyTorch threads per worker.")
    seed: int = Field(0, description="Sampler seed (a lone worker on SQLite keeps it; several workers each derive "
                      "their own).")
    retrain_best: int = Field(0, ge=0, description="Retrain the K best trials (the Pareto front) with the full "
                              "budget through the whole pipeline.")

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_choices(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"choices": v} if isinstance(v, list) else v for k, v in value.items()}
        return value
