"""Options of the data stage (the ``data:`` section of an experiment)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgecnn.schema import StrictModel


class SplitConfig(StrictModel):
    val: float = Field(0.1, ge=0, lt=1, description="Fraction of each class held out for validation (the best "
                       "checkpoint, early stopping and automatic choices are decided on it).")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction of each class held out for the test split, on which "
                        "every results row is scored.")

    @model_validator(mode="after")
    def _leaves_training_images(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val {self.val:g} + test {self.test:g} leave no training images; keep their sum below "
                             "1 (e.g. val 0.1, test 0.1)")
        return self


class AugmentConfig(StrictModel):
    """Off by default: a flip or rotation can change what an image means (a 6 turned is a 9, a mirrored letter is
    another letter). Turn them on for data that looks the same flipped or turned: aerial and satellite patches,
    microscopy, textures (the EuroSAT examples do)."""

    hflip: bool = Field(False, description="Random horizontal flips (on for data that looks the same mirrored: "
                        "aerial and satellite patches, microscopy, most natural photos).")
    vflip: bool = Field(False, description="Random vertical flips (on for data without an up: aerial and satellite "
                        "patches, microscopy, textures).")
    rot90: bool = Field(False, description="Random rotations by a multiple of 90 degrees (square images only; on for "
                        "data without an up, as vflip).")
    jitter: float = Field(0.1, ge=0, le=0.5, description="Largest relative change of brightness and of contrast "
                          "(0 = off).")
    crop_pad: int = Field(0, ge=0, le=16, description="Pixels of reflect padding before a random crop back to the "
                          "image size: shifts of up to this many pixels (0 = off).")


class DataConfig(StrictModel):
    root: Path | None = Field(None, description="Your image folder: one sub-folder of images per class "
                              "(ImageFolder); null: the EuroSAT sample bundled with edgecnn.")
    download: bool = Field(False, description="Download EuroSAT with torchvision into root first (needs a network).")
    image_size: int = Field(64, ge=8, le=1024, description="Side in pixels every image is resized to (square).")
    resize: Literal["stretch", "crop", "pad"] = Field("stretch", description="How an image that is not square "
                                                      "becomes image_size x image_size: stretch (the whole image, "
                                                      "aspect ratio changed), crop (the centred square of the short "
                                                      "side) or pad (the whole image, black borders).")
    channels: Literal["auto", 1, 3] = Field("auto", description="Input channels of the model and of every exported "
                                            "file: 1 (grayscale; colour images are converted to luminance), 3 "
                                            "(RGB; grayscale images are repeated) or auto (1 when every image is "
                                            "grayscale, else 3).")
    split: SplitConfig = Field(SplitConfig(), description="Fractions of each class held out; the split is stratified, "
                               "seeded, written to split.json and reused by reruns.")
    normalize: Literal["dataset", "imagenet", "none"] = Field("dataset", description="Input normalization: the "
                                                              "mean and std of your training images (dataset), "
                                                              "ImageNet's (imagenet) or none (pixels in [0, 1]).")
    augment: AugmentConfig = Field(AugmentConfig(), description="Training augmentation, drawn per image from a "
                                   "seeded generator; validation and test images are never augmented.")
    limit_per_class: int | None = Field(None, ge=1, description="Use at most this many images of each class (a "
                                        "seeded subset, for quick runs); null: all.")
    cache_dir: Path | None = Field(None, description="Folder of the decoded image cache; null: $EDGECNN_CACHE, else "
                                   "~/.cache/edgecnn.")
    # mmap: read the decoded cache memory-mapped (processes share one copy; datasets larger than RAM train);
    # memory: load it into this process
    check: bool = Field(True, description="Check the data at the start of a run, as `edgecnn data` does: class "
                        "balance, image sizes, channels, corrupt files and duplicates across the splits, with what the "
                        "run does about each (data_check.json, the log and the report; about 3 s on 24,000 images).")
    storage: Literal["mmap", "memory"] = Field("mmap", description="How the decoded cache is read: mmap "
                                               "(memory-mapped, one copy shared by every process; data larger than "
                                               "memory trains) or memory (loaded into the process).")

    def key(self) -> dict:
        """What changes the data a model sees (not where it is cached or how it is read)."""
        return self.model_dump(exclude={"cache_dir", "storage", "check"}, mode="json")
