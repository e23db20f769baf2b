"""`quantize --bits`: a per-layer low-bit spec refining a low-bit precision, handled by ``edgecnn.quantize(bits=...)``
(the CLI passes its file through). A valid spec makes the ``<precision>-custom`` variant end to end; a spec naming a
layer the model does not have is a one-line error naming it, before any data is read."""
from __future__ import annotations

import pytest
import torch
from conftest import make_subset, require
from typer.testing import CliRunner

import edgecnn
from edgecnn.cli import app
from edgecnn.compress.lowbit_spec import LowBitSpec
from edgecnn.data.datasets import SAMPLE_ROOT
from edgecnn.errors import EdgeCNNError
from edgecnn.results import CheckpointMeta

require("brevitas", "lowbit")

CLASSES = sorted(p.name for p in SAMPLE_ROOT.iterdir() if p.is_dir())
ARGS = {"stem_channels": 8, "channels": [8, 16], "blocks": 1}
VALID = "default: {w: 4, a: 4}\nfirst: {w: 8, a: 8}\nfeatures.2: {w: 2}\n"
UNKNOWN = "default: {w: 4, a: 4}\nfeatures.9.conv: {w: 2, a: 2}\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny untrained CustomNet checkpoint on the sample's classes and an ImageFolder of 4 images per class."""
    from edgecnn.models import create_model
    from edgecnn.train.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("bits")
    torch.manual_seed(0)
    model = create_model("customnet", num_classes=len(CLASSES), input_size=32, **ARGS).eval()
    meta = CheckpointMeta(arch="customnet", arch_args=ARGS, classes=CLASSES, input_size=32,
                          normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    return {"ckpt": save_checkpoint(model, tmp / "tiny.safetensors", meta.to_dict()),
            "folder": make_subset(tmp / "images", 4)}


def _file(tmp_path, text: str):
    path = tmp_path / "bits.yaml"
    path.write_text(text)
    return path


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_quantize_with_a_valid_bits_file_makes_the_custom_variant(tiny, tmp_path):
    code, output = invoke("quantize", tiny["ckpt"], "--precision", "w4a4", "--bits", _file(tmp_path, VALID),
                          "--epochs", 1, "--data", tiny["folder"], "--out-dir", tmp_path / "out")
    assert code == 0, output
    assert output.startswith("w4a4-custom: accuracy") and (tmp_path / "out" / "model.qonnx.onnx").exists()


def test_cli_quantize_with_an_unknown_layer_in_bits_names_it_in_one_line(tiny, tmp_path):
    code, output = invoke("quantize", tiny["ckpt"], "--precision", "w4a4", "--bits", _file(tmp_path, UNKNOWN),
                          "--data", tiny["folder"], "--out-dir", tmp_path / "out")
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in output, output
    assert "bits: unknown layer 'features.9.conv'" in lines[0]
    assert not (tmp_path / "out").exists()  # refused before any data was read or trained on


def test_api_quantize_with_bits_makes_the_custom_variant(tiny, tmp_path):
    from edgecnn.compress.options import LowbitConfig

    result = edgecnn.quantize(tiny["ckpt"], "w4a4", bits=_file(tmp_path, VALID), data=tiny["folder"],
                              out_dir=tmp_path / "out", lowbit=LowbitConfig(epochs=1))
    assert result["precision"] == "w4a4-custom"
    assert result["metrics"]["bits"] == {"default": {"w": 4, "a": 4}, "first": {"w": 8, "a": 8},
                                         "features.2": {"w": 2}}


@pytest.mark.parametrize("kind", ["path", "mapping", "spec"])
def test_api_quantize_bits_with_an_unknown_layer_names_it(kind, tiny, tmp_path):
    import yaml

    bits = {"path": _file(tmp_path, UNKNOWN), "mapping": yaml.safe_load(UNKNOWN),
            "spec": LowBitSpec.parse(yaml.safe_load(UNKNOWN), "w4a4")}[kind]
    with pytest.raises(EdgeCNNError, match="bits: unknown layer 'features.9.conv'"):
        edgecnn.quantize(tiny["ckpt"], "w4a4", bits=bits, data=tiny["folder"], out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_api_quantize_bits_on_a_precision_that_is_not_low_bit(tiny, tmp_path):
    with pytest.raises(EdgeCNNError, match="precision 'fp16' is not a low-bit precision"):
        edgecnn.quantize(tiny["ckpt"], "fp16", bits={"default": {"w": 4, "a": 4}}, data=tiny["folder"])
