"""The one error type of the hardware models: a user-facing, one-line message naming the problem and the fix."""
from __future__ import annotations

from edgecnn.errors import EdgeCNNError, did_you_mean


class HardwareModelError(EdgeCNNError, ValueError):
    """A bad model file, target name, budget string or catalog entry (shown without a traceback)."""


__all__ = ["HardwareModelError", "did_you_mean"]
