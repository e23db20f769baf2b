"""The precision registry: every precision is a handler; adding one is one registered function."""
from __future__ import annotations

import pytest
import torch

from edgecnn.config import DataConfig, QuantizeConfig, parse_config
from edgecnn.data.prepare import prepare_data
from edgecnn.errors import EdgeCNNError
from edgecnn.measure.options import EvaluateConfig
from edgecnn.models import create_model
from edgecnn.variants.measuring import make_variant
from edgecnn.variants.precisions import (
    PRECISIONS,
    BuildJob,
    Built,
    PrecisionOptions,
    check_precision,
    get_precision,
    list_precisions,
    register_precision,
)


def test_the_built_in_precisions_and_their_declarations():
    assert set(list_precisions()) >= {"fp64", "fp32", "fp16", "bf16", "int8-ptq", "int8-qat", "wXaY"}
    from typing import get_args

    from edgecnn.hw import list_estimators
    from edgecnn.measure.runtimes import list_backends
    from edgecnn.variants.precisions import Runtime

    for name in list_precisions():  # every registered precision declares what the pipeline asks of it
        entry = get_precision(name)
        assert entry is PRECISIONS.get(name) and entry.name == name and entry.description, name
        assert entry.runtime in get_args(Runtime), name
        assert set(entry.latency_backends) <= {"torch", *list_backends()}, name
        assert set(entry.hw_kinds) <= set(list_estimators()), name
        assert entry.options_key in (None, *PrecisionOptions.__dataclass_fields__), name
    assert get_precision("int8-ptq").needs_fp32_onnx and get_precision("int8-ptq").runtime == "onnxruntime"
    assert not get_precision("int8-qat").needs_fp32_onnx and get_precision("int8-qat").options_key == "quantize"
    assert get_precision("bf16").dtype == torch.bfloat16 and get_precision("bf16").latency_backends == ("torch",)
    assert get_precision("w4a4") is get_precision("ternary") is PRECISIONS.get("wXaY")  # the low-bit family


def test_unknown_and_malformed_precisions_are_one_line_errors():
    with pytest.raises(EdgeCNNError, match="unknown precision 'int8-ptx' — did you mean: int8-ptq"):
        check_precision("int8-ptx")
    with pytest.raises(EdgeCNNError, match="out of range"):
        check_precision("w9a4")
    with pytest.raises(EdgeCNNError, match=r"precisions: unknown precision 'fp8'"):
        parse_config({"precisions": ["fp8"]}, "exp.yaml")


def test_the_recipe_key_holds_only_the_section_a_precision_reads():
    opts = PrecisionOptions(quantize=QuantizeConfig(calib=64))
    tflite_only = {k for k in opts.quantize.model_dump() if k.startswith("tflite_")}  # marked only_for tflite-int8
    assert tflite_only
    assert get_precision("int8-ptq").recipe(opts) == {"recipe": 1,
                                                      "options": opts.quantize.model_dump(exclude=tflite_only)}
    assert get_precision("tflite-int8").recipe(opts)["options"] == opts.quantize.model_dump()
    assert get_precision("fp16").recipe(opts) == {"recipe": 1, "options": None}  # calib cannot rebuild fp16


def test_a_new_precision_is_one_registered_function(small_folder, tmp_path):
    """Register a precision (here an fp32 safetensors copy run by PyTorch): the config accepts it, and the shared
    build-and-measure path builds its file and measures it in its runtime, with nothing else to touch."""

    @register_precision("fp32-safetensors", runtime="torch", dtype=torch.float32, latency_backends=("torch",))
    def fp32_safetensors(job: BuildJob) -> Built:
        """fp32 weights as safetensors, run by PyTorch."""
        from edgecnn.train.checkpoint import save_checkpoint

        return Built(save_checkpoint(job.model, job.out_dir / "model.safetensors", job.meta.model_only()))

    try:
        assert parse_config({"precisions": ["fp32-safetensors"]}).precisions == ["fp32", "fp32-safetensors"]
        data = prepare_data(DataConfig(root=small_folder, image_size=32, limit_per_class=6), seed=0)
        torch.manual_seed(0)
        model = create_model("customnet", num_classes=10, input_size=32, stem_channels=8, channels=[8, 16], blocks=1)
        job = BuildJob("fp32-safetensors", model.eval(), data.model_meta("customnet", {}), data, tmp_path / "v")
        artefact, metrics, preds = make_variant(job, EvaluateConfig(latency_batches=[1], latency_repeats=3))
        assert artefact.suffix == ".safetensors" and artefact.exists()
        assert metrics["latency_ms_torch_b1"] > 0 and "latency_ms_onnxruntime_b1" not in metrics
        assert len(preds) == len(data.splits["test"]) and 0 <= metrics["accuracy"] <= 1
        assert (tmp_path / "v" / "metrics.json").exists()
    finally:
        PRECISIONS.unregister("fp32-safetensors")
    with pytest.raises(EdgeCNNError):
        check_precision("fp32-safetensors")


def test_a_spec_named_in_lowbit_specs_is_built_by_the_lowbit_handler():
    """`edgecnn quantize --precision w4a4 --bits spec.yaml` names its variant w4a4-custom: the handler lookup of the
    variant (api.quantize and variant_metrics.make_variant alike) finds the low-bit family for it."""
    from edgecnn.compress.options import LowbitConfig
    from edgecnn.errors import EdgeCNNError
    from edgecnn.variants.precisions import get_precision, precision_for

    lowbit = LowbitConfig(variants=["w4a4-custom"], specs={"w4a4-custom": {"default": "w4a4", "residual": "shared"}})
    assert precision_for("w4a4-custom", lowbit) is get_precision("w4a4")
    assert precision_for("fp16", lowbit) is get_precision("fp16")
    with pytest.raises(EdgeCNNError, match="unknown precision 'w4a4-custom'"):
        precision_for("w4a4-custom")
