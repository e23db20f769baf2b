"""Options of the ONNX export (the ``export:`` section of an experiment)."""
from __future__ import annotations

from pydantic import Field

from edgecnn.models.views import TTAName
from edgecnn.schema import StrictModel


class ExportConfig(StrictModel):
    opset: int = Field(18, ge=13, le=23)
    # test-time views every deployable file averages (none, hflip, flips, d4): N views cost N passes per image
    tta: TTAName = "none"
