"""Options of the data stage (the ``data:`` section of an experiment)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgecnn.schema import StrictModel


class SplitConfig(StrictModel):
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)


class AugmentConfig(StrictModel):
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    jitter: float = Field(0.1, ge=0, le=0.5)
    crop_pad: int = Field(0, ge=0, le=16)


class DataConfig(StrictModel):
    root: Path | None = None  # None: the sample bundled with edgecnn
    download: bool = False  # fetch EuroSAT with torchvision into `root` (online users only)
    image_size: int = Field(64, ge=8, le=1024)
    split: SplitConfig = SplitConfig()
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    augment: AugmentConfig = AugmentConfig()
    limit_per_class: int | None = Field(None, ge=1)
    cache_dir: Path | None = None
    # mmap: read the decoded cache memory-mapped (processes share one copy; datasets larger than RAM train);
    # memory: load it into this process
    storage: Literal["mmap", "memory"] = "mmap"

    def key(self) -> dict:
        """What changes the data a model sees (not where it is cached or how it is read)."""
        return self.model_dump(exclude={"cache_dir", "storage"}, mode="json")
