"""Test-time views (export.tta): the average over flipped/transposed copies, built into the deployable files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecnn.config import load_config
from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model, profile_model
from edgecnn.models.views import TestTimeViews, view


def test_views_average_the_logits_of_each_symmetry_of_the_square():
    torch.manual_seed(0)
    net = create_model("customnet", num_classes=10, input_size=16, channels=[8], stem_channels=4).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        views = [x, x.flip(3), x.flip(2), x.flip(2).flip(3), x.transpose(2, 3), x.transpose(2, 3).flip(3),
                 x.transpose(2, 3).flip(2), x.transpose(2, 3).flip(2).flip(3)]
        expected = torch.stack([net(v) for v in views]).mean(0)
        assert torch.allclose(TestTimeViews(net, "d4")(x), expected, atol=1e-6)
        assert torch.allclose(TestTimeViews(net, "hflip")(x), (net(x) + net(x.flip(3))) / 2, atol=1e-6)
    # the eight views are distinct images (a symmetric test image would hide a wrong view)
    flat = torch.stack([view(x, n).flatten() for n in TestTimeViews(net, "d4").views])
    assert len({tuple(r[:20].tolist()) for r in flat}) == 8
    # each view is one more pass of the network per image
    assert profile_model(TestTimeViews(net, "flips"), 16).macs == 4 * profile_model(net, 16).macs


def _cfg(tmp_path, **extra):
    base = {"output": str(tmp_path), "data.limit_per_class": 12, "train.epochs": 1, "evaluate.latency_repeats": 3,
            "evaluate.latency_batches": [1], "evaluate.backends": ["onnxruntime"], "targets": [],
            "precisions": ["fp32", "int8-ptq"], "quantize.calib": 16}
    return load_config(None, {**base, **extra})


@pytest.mark.parametrize(("extra", "needle"), [
    ({"precisions": ["fp32", "fp16"]}, "remove fp16 from precisions"),
    ({"targets": ["kv260"]}, "targets: []"),
])
def test_views_refuse_what_they_cannot_be_built_into(tmp_path, extra, needle):
    with pytest.raises(EdgeCNNError, match="export.tta") as err:
        _cfg(tmp_path, **{"export.tta": "d4", **extra})
    assert needle in str(err.value)


def test_the_files_compute_the_views_and_eval_scores_them(tmp_path):
    import onnxruntime as ort

    from edgecnn.api import evaluate_file
    from edgecnn.export.onnx import read_metadata
    from edgecnn.pipeline import run

    plain = run(_cfg(tmp_path / "a"), show_progress=False)
    viewed = run(_cfg(tmp_path / "a", **{"export.tta": "flips", "precisions": ["fp32", "int8-ptq", "int8-pow2"],
                                         "quantize.pow2_refine": "none"}), show_progress=False)
    assert viewed.skipped_stages == ["train"]  # the same trained network, new files
    one, four = ({r["precision"]: r for r in o.results} for o in (plain, viewed))
    assert four["fp32"]["macs"] == 4 * one["fp32"]["macs"]
    assert 0 <= four["fp32"]["val_accuracy"] <= 1 and 0 <= four["fp32"]["val_accuracy_one_view"] <= 1
    # the viewed fp32 file is the average of the single-view file over the four flips, in ONNX Runtime
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    single = ort.InferenceSession(one["fp32"]["artefact"])
    both = ort.InferenceSession(four["fp32"]["artefact"])
    flips = [x, x[..., ::-1], x[:, :, ::-1], x[:, :, ::-1, ::-1]]
    expected = np.mean([single.run(None, {"input": np.ascontiguousarray(v)})[0] for v in flips], axis=0)
    np.testing.assert_allclose(both.run(None, {"input": x})[0], expected, atol=1e-4)
    # `edgecnn eval` on a folder of the run's test images gives each file's recorded accuracy
    split = json.loads((viewed.run_dir / "split.json").read_text())
    folder = tmp_path / "test-images"
    for rel in split["test"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(Path(split["root"]) / rel)
    for precision in ("fp32", "int8-ptq", "int8-pow2"):
        row = four[precision]
        assert read_metadata(row["artefact"])["tta"] == "flips"
        scored = evaluate_file(row["artefact"], folder)
        assert scored["accuracy"] == pytest.approx(row["accuracy"]) and scored["tta"] == "flips"
    assert four["fp32"]["accuracy_onnxruntime"] == pytest.approx(four["fp32"]["accuracy"])
    page = (viewed.run_dir / "report" / "index.html").read_text()
    assert "test-time views" in page and f"{100 * four['fp32']['val_accuracy']:.2f}% with the views" in page


def test_runs_without_views_keep_their_variant_records(tmp_path):
    """Variant stages hash the export options: without views they are those of runs made before export.tta, so a
    finished run is not rebuilt after the upgrade; with views the record changes."""
    from edgecnn.pipeline import _export_inputs

    assert _export_inputs(_cfg(tmp_path)) == {"opset": 18}
    assert _export_inputs(_cfg(tmp_path, **{"export.tta": "d4"})) == {"opset": 18, "tta": "d4"}
