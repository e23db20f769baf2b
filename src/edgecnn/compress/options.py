"""Options of compression: INT8 quantization, pruning and the low-bit QAT sweep (sections of an experiment)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecnn.errors import did_you_mean
from edgecnn.schema import StrictModel
from edgecnn.train.options import TrainOverrides


class QuantizeConfig(StrictModel):
    calib: int = Field(512, ge=1)  # calibration images drawn from the train split
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    symmetric: bool = False  # symmetric (int8) activations instead of asymmetric uint8
    exclude: list[str] = Field(default_factory=list)  # 'first', 'last' or layer/node names kept in float
    qat_epochs: float = Field(2.0, gt=0)
    qat_lr: float = Field(1e-4, gt=0)
    qat_batch_size: int = Field(64, ge=2)
    # int8-pow2: Quark fast fine-tuning; auto = AdaRound only when plain calibration loses more than
    # pow2_auto_drop points of validation accuracy against the float model
    pow2_refine: Literal["auto", "none", "adaround", "adaquant"] = "auto"
    pow2_auto_drop: float = Field(0.3, ge=0)
    pow2_iterations: int = Field(500, ge=1)  # int8-pow2: fine-tuning iterations per layer
    # int8-pow2 fine-tuning: < 1 is QDrop (see compress.pow2); 0.5 as in the QDrop paper (Wei et al., ICLR 2022),
    # chosen on MobileNetV2's validation drop against plain AdaRound (1.0) and 0.75 (benchmarks/pow2_refine.py)
    pow2_drop_ratio: float = Field(0.5, gt=0, le=1)
    pow2_cle: bool = False  # int8-pow2: cross-layer equalization before calibration (ReLU6 -> ReLU between convs)
    # tflite-int8: AdaRound (Quark) on TensorFlow's own INT8 grid before its converter; auto = only when the plain
    # file loses more than tflite_auto_drop validation points (see compress.tflite_refine). Only tflite-int8 reads
    # these, so they are only part of its cache key (ONLY_FOR).
    tflite_refine: Literal["auto", "none", "adaround"] = Field("auto", json_schema_extra={"only_for": "tflite-int8"})
    tflite_auto_drop: float = Field(0.3, ge=0, json_schema_extra={"only_for": "tflite-int8"})
    tflite_iterations: int = Field(500, ge=1, json_schema_extra={"only_for": "tflite-int8"})
    tflite_drop_ratio: float = Field(0.5, gt=0, le=1, json_schema_extra={"only_for": "tflite-int8"})


class PruneConfig(StrictModel):
    """Structured (channel) pruning with torch-pruning's dependency graph, or unstructured magnitude pruning."""

    method: Literal["structured", "unstructured"] = "structured"
    importance: Literal["l1", "l2", "bn", "taylor"] = "l2"
    scope: Literal["global", "uniform"] = "global"  # global ranking, or the same ratio in every layer
    ratio: float | None = Field(None, gt=0, lt=1)  # channels removed (structured) / target sparsity (unstructured)
    ratios: dict[str, float] | Literal["auto"] | None = None  # per-layer channel ratios, or auto (sensitivity)
    target: Literal["params", "macs", "latency"] | None = None
    target_ratio: float | None = Field(None, gt=0, lt=1)  # pruned / original of `target` (0.5: half the MACs)
    steps: int = Field(1, ge=1)  # structured: prune rounds interleaved with fine-tuning
    step_epochs: int = Field(1, ge=0)  # fine-tuning epochs between two rounds
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)  # no layer loses more of its channels
    round_to: int | None = Field(None, ge=1)  # keep channel counts multiples of this (SIMD-friendly)
    exclude: list[str] = Field(default_factory=list)  # layers left unpruned (the classifier always is)
    sensitivity_ratios: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    sensitivity_images: int = Field(512, ge=1)  # validation images scored per sensitivity point
    sparsity_steps: int = Field(16, ge=1)  # unstructured: mask updates from 0 to the target sparsity
    ramp: float = Field(0.75, gt=0, le=1)  # unstructured: fraction of fine-tuning over which sparsity ramps up
    latency_threads: int | None = Field(None, ge=1)
    latency_repeats: int = Field(30, ge=3)
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # the train section's keys to change for fine-tuning

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

    variants: list[str] = Field(default_factory=lambda: ["w8a8", "w4a4", "w2a2", "hetero"])
    specs: dict[str, dict[str, Any]] = Field(default_factory=dict)  # named per-layer specs (hetero is built in)
    epochs: int = Field(3, ge=1)  # QAT epochs per variant
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(64, ge=2)
    schedule: Literal["progressive", "direct"] = "progressive"  # warm start from the previous (higher) variant
    targets: list[str] = Field(default_factory=lambda: ["zybo-z7-10", "pynq-z1", "ultra96"])  # dataflow parts
    parity_images: int = Field(512, ge=0)  # test images run through qonnx and compared with PyTorch

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
