"""Energy per image = power x time per image, with the catalog's power figure and its source.

Time per image is the inverse of the sustained throughput (images/s): in a streaming or multi-threaded
deployment the device draws its power for 1/FPS seconds per image. The power figure is the catalog's
typical/whole-chip value for the target (never a guess made here); its source string travels with it so
that every estimate says which figure was used and where it comes from.
"""
from __future__ import annotations

from edgecnn.hw.targets import Target


def power_of(target: Target) -> tuple[float, str]:
    """(watts, source) of the target's catalog power figure."""
    return float(target.power.watts), f"{target.name}: {target.power.source}"


def energy_mj_per_image(power_w: float, fps: float) -> float:
    """mJ per image at ``power_w`` watts and ``fps`` images/s (power x 1/FPS)."""
    if fps <= 0:
        return float("inf")
    return power_w / fps * 1e3
