"""Which model to build (the ``model:`` section of an experiment, a distillation student)."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from edgecnn.schema import StrictModel


class ModelConfig(StrictModel):
    name: str = "customnet"
    args: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # local file, or a torchvision weight name when online
