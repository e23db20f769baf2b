"""Which model to build (the ``model:`` section of an experiment, a distillation student)."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from edgecnn.schema import StrictModel


class ModelConfig(StrictModel):
    name: str = Field("customnet", description="A registered model (`edgecnn models` lists them), e.g. customnet, "
                      "resnet18, mobilenet_v2.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the model's constructor, "
                                 "e.g. CustomNet's channels per stage and blocks.")
    weights: str | None = Field(None, description="Initial weights: a local torchvision weights file (safetensors or "
                                "a state dict) or, online, a torchvision weight name such as IMAGENET1K_V1.")
