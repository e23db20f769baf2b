"""Options of compression: INT8 quantization, pruning and the low-bit QAT sweep (sections of an experiment)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecnn.errors import did_you_mean
from edgecnn.names import PlainName
from edgecnn.schema import StrictModel
from edgecnn.train.options import TrainOverrides


class QuantizeConfig(StrictModel):
    calib: int = Field(512, ge=1, description="Calibration images drawn from the train split.")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="How activation ranges are "
                                                              "calibrated (int8-ptq).")
    per_channel: bool = Field(True, description="Per-channel weight scales (else one per tensor).")
    symmetric: bool = Field(False, description="Symmetric int8 activations instead of asymmetric uint8.")
    exclude: list[str] = Field(default_factory=list, description="Layers kept in float: first, last or layer/node "
                               "names.")
    qat_epochs: float = Field(2.0, gt=0, description="Epochs of INT8 quantization-aware training (int8-qat).")
    qat_lr: float = Field(1e-4, gt=0, description="Learning rate of INT8 quantization-aware training.")
    qat_batch_size: int = Field(64, ge=2, description="Batch size of INT8 quantization-aware training.")
    # int8-pow2: Quark fast fine-tuning; auto = AdaRound only when plain calibration loses more than
    # pow2_auto_drop points of validation accuracy against the float model
    pow2_refine: Literal["auto", "none", "adaround", "adaquant"] = Field("auto", description="int8-pow2: AMD "
                                                                         "Quark's fast fine-tuning after "
                                                                         "calibration; auto: AdaRound only when "
                                                                         "plain calibration loses more than "
                                                                         "pow2_auto_drop validation points.")
    pow2_auto_drop: float = Field(0.3, ge=0, description="int8-pow2, pow2_refine auto: the validation accuracy drop "
                                  "(points) above which AdaRound is run.")
    pow2_iterations: int = Field(500, ge=1, description="int8-pow2: fine-tuning iterations per layer.")
    # int8-pow2 fine-tuning: < 1 is QDrop (see compress.pow2); 0.5 as in the QDrop paper (Wei et al., ICLR 2022),
    # chosen on MobileNetV2's validation drop against plain AdaRound (1.0) and 0.75 (benchmarks/studies/pow2_refine.py)
    pow2_drop_ratio: float = Field(0.5, gt=0, le=1, description="int8-pow2 fine-tuning: below 1 it is QDrop, each "
                                   "layer's input taken from the quantized model for this share of values and from "
                                   "the float model for the rest; 1 is plain AdaRound.")
    pow2_cle: bool = Field(False, description="int8-pow2: cross-layer equalization before calibration (ReLU6 "
                           "becomes ReLU between convs).")
    # tflite-int8: AdaRound (Quark) on TensorFlow's own INT8 grid before its converter; auto = only when the plain
    # file loses more than tflite_auto_drop validation points (see compress.tflite_refine). Only tflite-int8 reads
    # these, so they are only part of its cache key (ONLY_FOR).
    tflite_refine: Literal["auto", "none", "adaround"] = Field(
        "auto", json_schema_extra={"only_for": "tflite-int8"},
        description="tflite-int8: AdaRound with AMD Quark on TensorFlow's own INT8 grid before its LiteRT converter; "
                    "auto: only when the plain LiteRT file loses more than tflite_auto_drop validation points, and "
                    "only with the pow2 extra installed.")
    tflite_auto_drop: float = Field(0.3, ge=0, json_schema_extra={"only_for": "tflite-int8"},
                                    description="tflite-int8, tflite_refine auto: the validation accuracy drop "
                                                "(points) above which AdaRound is run.")
    tflite_iterations: int = Field(500, ge=1, json_schema_extra={"only_for": "tflite-int8"},
                                   description="tflite-int8: AdaRound iterations per layer.")
    tflite_drop_ratio: float = Field(0.5, gt=0, le=1, json_schema_extra={"only_for": "tflite-int8"},
                                     description="tflite-int8: the QDrop share, as pow2_drop_ratio.")


class PruneConfig(StrictModel):
    """Structured (channel) pruning with torch-pruning's dependency graph, or unstructured magnitude pruning."""

    method: Literal["structured", "unstructured"] = Field("structured", description="structured: channels removed "
                                                          "(a smaller dense model); unstructured: weights zeroed by "
                                                          "magnitude (sparse).")
    importance: Literal["l1", "l2", "bn", "taylor"] = Field("l2", description="How channels are ranked: weight L1 or "
                                                            "L2 norm, BatchNorm scale or Taylor (gradient x weight).")
    scope: Literal["global", "uniform"] = Field("global", description="One ranking over all layers, or the same "
                                                "ratio in every layer.")
    ratio: float | None = Field(None, gt=0, lt=1, description="Structured: fraction of channels removed; "
                                "unstructured: the target sparsity.")
    ratios: dict[str, float] | Literal["auto"] | None = Field(None, description="Per-layer channel ratios, or auto "
                                                              "(from the sensitivity analysis, with a target).")
    target: Literal["params", "macs", "latency"] | None = Field(None, description="What target_ratio reduces.")
    target_ratio: float | None = Field(None, gt=0, lt=1, description="Pruned / original of target (0.5: half the "
                                       "MACs).")
    steps: int = Field(1, ge=1, description="Structured: prune rounds interleaved with fine-tuning.")
    step_epochs: int = Field(1, ge=0, description="Fine-tuning epochs between two rounds.")
    max_layer_ratio: float = Field(0.9, gt=0, lt=1, description="No layer loses a larger fraction of its channels.")
    round_to: int | None = Field(None, ge=1, description="Keep channel counts multiples of this (16 matches ONNX "
                                 "Runtime's AVX-512 blocks; odd counts can be slower).")
    exclude: list[str] = Field(default_factory=list, description="Layers left unpruned (the classifier always is).")
    sensitivity_ratios: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8], description="Ratios each "
                                            "layer is pruned to, alone, in the sensitivity analysis.")
    sensitivity_images: int = Field(512, ge=1, description="Validation images scored per sensitivity point.")
    sparsity_steps: int = Field(16, ge=1, description="Unstructured: mask updates from 0 to the target sparsity.")
    ramp: float = Field(0.75, gt=0, le=1, description="Unstructured: fraction of the fine-tuning over which sparsity "
                        "ramps up.")
    latency_threads: int | None = Field(None, ge=1, description="Threads of the before/after ONNX Runtime latency; "
                                        "null: PyTorch's thread count.")
    latency_repeats: int = Field(30, ge=3, description="Timed repetitions of the before/after latency.")
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="Keys of the train section to change "
                                  "for the fine-tuning.")

    @field_validator("ratios")
    @classmethod
    def _ratios_in_range(cls, v):
        if isinstance(v, dict):
            bad = {k: r for k, r in v.items() if not 0 < r < 1}
            if bad:
                raise ValueError(f"per-layer ratios must lie strictly between 0 and 1, got {bad}")
        return v

    @field_validator("sensitivity_ratios")
    @classmethod
    def _grid_in_range(cls, v):
        if not v or any(not 0 < r < 1 for r in v):
            raise ValueError("sensitivity_ratios must be a non-empty list of values strictly between 0 and 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        if (self.target is None) != (self.target_ratio is None):
            raise ValueError("target and target_ratio go together (e.g. target: macs, target_ratio: 0.5)")
        if self.method == "unstructured":
            if self.ratio is None:
                raise ValueError("unstructured pruning needs ratio: the target sparsity, e.g. 0.5")
            if self.target is not None or self.ratios is not None:
                raise ValueError("unstructured pruning takes ratio (the sparsity), not target or ratios")
            return self
        if self.ratios == "auto" and self.target is None:
            raise ValueError("ratios: auto needs a target (e.g. target: macs, target_ratio: 0.5)")
        if self.target is not None and (self.ratio is not None or isinstance(self.ratios, dict)):
            raise ValueError("give either a target or ratio/ratios, not both")
        if self.target is None and self.ratio is None and self.ratios is None:
            raise ValueError("structured pruning needs a target (target + target_ratio), a ratio or per-layer ratios")
        return self


#: The built-in heterogeneous net: 4-bit first and last layers, binary weights in between, 4-bit activations.
HETERO_SPEC: dict[str, Any] = {"default": {"w": 1, "a": 4}, "first": {"w": 4, "a": 4}, "last": {"w": 4, "a": 4}}


class LowbitConfig(StrictModel):
    """Low-bit QAT sweep with Brevitas (``lowbit: [w8a8, w4a4, w2a2, w1a1, hetero]`` or this mapping)."""

    variants: list[PlainName] = Field(default_factory=lambda: ["w8a8", "w4a4", "w2a2", "hetero"], description="Bit "
                                "widths: wXaY (X-bit weights, Y-bit activations), binary, ternary, hetero or a name "
                                "of specs.")
    specs: dict[PlainName, dict[str, Any]] = Field(default_factory=dict, description="Named per-layer bit specs, e.g. "
                                             "{default: {w: 1, a: 4}, first: {w: 4, a: 4}} (hetero is built in).")
    epochs: int = Field(3, ge=1, description="QAT epochs per variant.")
    lr: float = Field(5e-4, gt=0, description="QAT learning rate.")
    batch_size: int = Field(64, ge=2, description="QAT batch size.")
    schedule: Literal["progressive", "direct"] = Field("progressive", description="progressive: variants trained "
                                                       "from the widest to the narrowest, each starting from the "
                                                       "previous one; direct: each from the float checkpoint.")
    targets: list[str] = Field(default_factory=lambda: ["zybo-z7-10", "pynq-z1", "ultra96"], description="Dataflow "
                               "boards each variant is estimated on.")
    parity_images: int = Field(512, ge=0, description="Test images run through qonnx's executor and compared with "
                               "PyTorch.")

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"variants": value} if isinstance(value, list) else value

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("lowbit needs at least one variant, e.g. [w8a8, w4a4]")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _resolvable(self) -> LowbitConfig:
        from edgecnn.compress.lowbit import is_lowbit_precision

        names = {"hetero", *self.specs}
        for v in self.variants:
            if v not in names and not is_lowbit_precision(v):
                raise ValueError(f"unknown low-bit variant '{v}'{did_you_mean(v, sorted(names))}; use wXaY "
                                 "(X, Y in 1..8), binary, ternary, hetero or a name defined under lowbit.specs")
        return self

    def spec(self, variant: str) -> Any:
        """The per-layer spec (or precision name) of a variant."""
        if variant in self.specs:
            return self.specs[variant]
        if variant == "hetero":
            return HETERO_SPEC
        return variant
