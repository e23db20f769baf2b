"""Options of the ONNX export (the ``export:`` section of an experiment)."""
from __future__ import annotations

from pydantic import Field

from edgecnn.models.views import TTAName
from edgecnn.schema import StrictModel


class ExportConfig(StrictModel):
    opset: int = Field(18, ge=13, le=23, description="ONNX opset version of the exported files.")
    # test-time views every deployable file averages (none, hflip, flips, d4): N views cost N passes per image
    tta: TTAName = Field("none", description="Test-time views built into the fp32 ONNX and INT8 files: each file "
                         "averages the logits of 2 (hflip), 4 (flips) or 8 (d4) flipped/transposed copies of the "
                         "image, at that many passes per image; none: one view.")
