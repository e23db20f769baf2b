"""Channels follow the data: a grayscale dataset trains, exports and is estimated with one input channel; colour
data forced to one channel is read as PIL's luminance; non-square images are stretched, cropped or padded as
data.resize says; augmentation that changes what an image means is off unless a config turns it on."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image

from edgecnn.config import DataConfig
from edgecnn.data.options import AugmentConfig
from edgecnn.data.prepare import prepare_data
from edgecnn.data.storage import luminance
from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model
from edgecnn.models.registry import adapt_input_channels, check_model_args
from edgecnn.results import CheckpointMeta

ROOT = Path(__file__).resolve().parents[2]


def _gray_folder(root: Path, per_class: int = 8, size: tuple[int, int] = (12, 12), sixteen_bit: bool = False) -> Path:
    """Two classes of grayscale PNGs (8-bit L, or 16-bit I;16) with different brightness."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 128, size[::-1]) + 120 * label
            if sixteen_bit:
                Image.fromarray((pixels * 257).astype(np.uint16)).save(root / name / f"{i}.png")
            else:
                Image.fromarray(pixels.astype(np.uint8), "L").save(root / name / f"{i}.png")
    return root


def test_luminance_is_pils_and_exact_on_gray():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ours = luminance(rgb.transpose(2, 0, 1))[0]
    assert np.array_equal(ours, np.asarray(Image.fromarray(rgb).convert("L")))
    gray = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 16, 16), 3, axis=0)
    assert np.array_equal(luminance(gray)[0], gray[0])


@pytest.mark.parametrize("sixteen_bit", [False, True], ids=["L", "I16"])
def test_a_grayscale_folder_trains_on_one_channel(tmp_path, sixteen_bit):
    root = _gray_folder(tmp_path / "data", sixteen_bit=sixteen_bit)
    data = prepare_data(DataConfig(root=root, image_size=12, cache_dir=tmp_path / "cache"), seed=0)
    assert data.channels == 1 and data.report["channels"] == 1 and data.report["grayscale_images"] == 16
    images = data.splits["train"].images
    assert tuple(images.shape[1:]) == (1, 12, 12) and images[:].dtype == torch.uint8
    first = root / data.files["train"][0]
    with Image.open(first) as im:
        expected = np.asarray(im) // 257 if sixteen_bit else np.asarray(im)
    assert np.abs(images[0][0].numpy().astype(int) - expected.astype(int)).max() <= 1  # 16-bit rounds once
    assert len(data.normalization.mean) == len(data.normalization.std) == 1
    assert data.model_meta("customnet").in_channels == 1


def test_colour_images_keep_three_channels_unless_told(tmp_path):
    root = _gray_folder(tmp_path / "data")
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(root / "dark" / "red.png")
    auto = prepare_data(DataConfig(root=root, image_size=12, cache_dir=tmp_path / "cache"), seed=0)
    assert auto.channels == 3 and auto.report["grayscale_images"] == 16
    forced = prepare_data(DataConfig(root=root, image_size=12, cache_dir=tmp_path / "cache", channels=1), seed=0)
    assert forced.channels == 1
    every = {f: i for name in ("train", "val", "test") for i, f in enumerate(forced.files[name])}
    split = next(name for name in ("train", "val", "test") if "dark/red.png" in forced.files[name])
    red = forced.splits[split].images[every["dark/red.png"]]
    assert red.shape == (1, 12, 12) and int(red[0, 0, 0]) == int(np.asarray(Image.fromarray(rgb).convert("L"))[0, 0])


def _striped(path: Path) -> None:
    """A 40x20 image, white, with a red band over its 4 leftmost columns."""
    pixels = np.full((20, 40, 3), 255, np.uint8)
    pixels[:, :4] = (255, 0, 0)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_non_square_images_are_stretched_cropped_or_padded(tmp_path, resize):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            _striped(tmp_path / "data" / name / f"{i}.png")
    data = prepare_data(DataConfig(root=tmp_path / "data", image_size=20, cache_dir=tmp_path / "cache",
                                   resize=resize, channels=3, split={"val": 0, "test": 0}), seed=0)
    image = data.splits["train"].images[0].numpy()  # (3, 20, 20)
    green_at_left, top_row = image[1, 10, 0], image[:, 0, 10]
    if resize == "stretch":  # the band is squeezed but still there; no border
        assert green_at_left < 50 and (top_row == 255).all()
    elif resize == "crop":  # the centred 20x20 square leaves the band out
        assert green_at_left == 255 and (top_row == 255).all()
    else:  # the whole 40x20 image at 20x10 between black bars
        assert green_at_left < 50 and (top_row == 0).all() and (image[:, 10, 10] == 255).all()
    assert data.model_meta("customnet").resize == resize


def test_an_rgb_model_adapted_to_one_channel_computes_the_same_on_gray_images():
    torch.manual_seed(0)
    rgb = create_model("resnet18", num_classes=4, input_size=32).eval()
    gray = adapt_input_channels(copy.deepcopy(rgb), 1).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5)
    assert gray.conv1.in_channels == 1
    assert create_model("lenet5", num_classes=3, input_size=32, in_channels=1).features[0].in_channels == 1


def test_channels_are_the_datas_not_a_model_argument():
    with pytest.raises(EdgeCNNError, match="data.channels"):
        check_model_args("customnet", {"in_channels": 1})


def test_files_written_before_channels_existed_read_as_rgb_stretched():
    meta = CheckpointMeta.from_dict({"arch": "customnet", "classes": ["a", "b"], "input_size": 32,
                                     "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}})
    assert meta.in_channels == 3 and meta.resize == "stretch" and "in_channels" not in meta.extra


def test_estimates_follow_the_input_channels(tmp_path):
    """The first layer costs what the data needs: a third of the MACs everywhere, fewer dataflow resources; the
    DPU computes input channels in groups of its channel parallelism, so there only its DDR traffic drops."""
    from edgecnn.export.onnx import export_onnx
    from edgecnn.hw import estimate

    estimates = {}
    for channels in (3, 1):
        torch.manual_seed(0)
        model = create_model("customnet", num_classes=10, input_size=32, in_channels=channels, stem_channels=16,
                             channels=[32, 64], blocks=0)
        path = export_onnx(model, tmp_path / f"c{channels}.onnx", 32, {})
        assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[1].dim_value == channels
        estimates[channels] = {t: estimate(path, t) for t in ("kv260", "zcu104-finn", "edgetpu-like")}
    rgb, gray = estimates[3], estimates[1]
    assert gray["kv260"].layers[0].macs * 3 == rgb["kv260"].layers[0].macs
    assert gray["kv260"].layers[0].resources["ddr_bytes"] < rgb["kv260"].layers[0].resources["ddr_bytes"]
    assert gray["kv260"].fps >= rgb["kv260"].fps
    assert gray["zcu104-finn"].resources_used["lut"] < rgb["zcu104-finn"].resources_used["lut"]
    assert gray["zcu104-finn"].resources_used["dsp"] < rgb["zcu104-finn"].resources_used["dsp"]
    assert gray["edgetpu-like"].layers[0].utilization < rgb["edgetpu-like"].layers[0].utilization


def test_a_grayscale_run_writes_one_channel_files_end_to_end(tmp_path):
    pytest.importorskip("brevitas")
    from edgecnn.config import parse_config
    from edgecnn.pipeline import run

    root = _gray_folder(tmp_path / "data", per_class=12, size=(16, 16))
    cfg = parse_config({
        "name": "gray", "output": str(tmp_path / "runs"), "seed": 0,
        "data": {"root": str(root), "image_size": 16, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "customnet", "args": {"stem_channels": 8, "channels": [8, 16], "blocks": 0}},
        "train": {"epochs": 1, "batch_size": 8}, "precisions": ["fp32", "int8-ptq"],
        "quantize": {"calib": 8}, "evaluate": {"latency_batches": [1], "latency_repeats": 3},
        "lowbit": {"variants": ["w4a4"], "epochs": 1, "batch_size": 8, "targets": ["zcu104-finn"],
                   "parity_images": 4},
    })
    outcome = run(cfg, show_progress=False)
    assert outcome.data_report["channels"] == 1
    files = sorted(outcome.run_dir.rglob("*.onnx"))
    assert {f.name for f in files} >= {"model.onnx", "model-int8-ptq.onnx", "model.qonnx.onnx"}, files
    for f in files:
        dims = onnx.load(str(f), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        assert dims[1].dim_value == 1, f
    lowbit = next(r for r in outcome.results if r["precision"] == "w4a4")
    fp32 = next(r for r in outcome.results if r["precision"] == "fp32")
    assert lowbit["params"] == fp32["params"] > 0 and lowbit["macs"] == fp32["macs"] > 0
    assert lowbit["fps_zcu104-finn"] > 0


def test_augmentation_that_changes_meaning_is_off_by_default_and_on_in_the_eurosat_recipes():
    default = AugmentConfig()
    assert not (default.hflip or default.vflip or default.rot90)
    recipes = [p for p in sorted((ROOT / "examples").glob("*.yaml"))
               if "eurosat" in str((yaml.safe_load(p.read_text()).get("data") or {}).get("root"))]
    recipes.append(ROOT / "src" / "edgecnn" / "configs" / "quickstart.yaml")  # the bundled EuroSAT sample
    assert len(recipes) >= 6
    for path in recipes:
        augment = (yaml.safe_load(path.read_text()).get("data") or {}).get("augment") or {}
        assert augment.get("hflip") and augment.get("vflip") and augment.get("rot90"), path
