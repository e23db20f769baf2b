"""Brevitas quantizer choices of edgecnn's low-bit conversion: which quantizer a weight or activation of a given
bit width gets, for float or power-of-two scales. All are symmetric with zero-point 0, as FINN expects.

Weights: per-output-channel scales from the weights' statistics, recomputed every step: max |w| for 3..8 bits, the
MSE-optimal scale for 2 bits (a max-based ternary grid zeroes almost every weight), mean |w| for 1 bit (XNOR-Net);
1-bit weights export as ``BipolarQuant``, 2..8 bits as narrow-range ``Quant``; biases stay float. Activations:
ReLU/ReLU6 -> unsigned ``QuantReLU`` with a learned per-tensor scale initialised by MSE calibration (a max-based
start leaves a 2-bit activation one or two used levels); other activations stay float, followed by a signed
``QuantIdentity``; 1-bit activations are bipolar signs {-1, +1} that replace the ReLU (FINN BNN style).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError


@lru_cache(maxsize=None)  # one table per scaling: the classes are configurations, shared by every layer
def quantizers(scaling: str = "float") -> dict[str, Any]:
    """Brevitas quantizer classes for ``scaling`` (imported lazily: brevitas is an optional dependency)."""
    if scaling == "power_of_two":
        return _power_of_twoquantizers()
    from brevitas.inject.enum import (
        BitWidthImplType,
        FloatToIntImplType,
        QuantType,
        RestrictValueType,
        ScalingImplType,
        ScalingPerOutputType,
        StatsOp,
    )
    from brevitas.quant.binary import SignedBinaryActPerTensorConst
    from brevitas.quant.scaled_int import (
        Int8ActPerTensorFloatMSE,
        Int8WeightPerChannelFloat,
        Int8WeightPerChannelFloatMSE,
        Uint8ActPerTensorFloatMSE,
    )
    from brevitas.quant.solver import WeightQuantSolver

    class IntWeightPerChannel(Int8WeightPerChannelFloat):
        """Narrow-range signed per-channel weights, scale = max |w| per channel (bit width set per layer)."""

    class LowIntWeightPerChannel(Int8WeightPerChannelFloatMSE):
        """2-bit (ternary) weights: the per-channel scale minimising the quantization MSE (a max |w| grid zeroes
        most weights, mean |w| is optimal only for binary)."""

    class BinaryWeightPerChannel(WeightQuantSolver):
        """sign(w) * mean|w| per output channel (XNOR-Net's optimal scale); exported as BipolarQuant."""
        quant_type = QuantType.BINARY
        bit_width = 1
        bit_width_impl_type = BitWidthImplType.CONST
        scaling_impl_type = ScalingImplType.STATS
        scaling_stats_op = StatsOp.AVE
        scaling_per_output_type = ScalingPerOutputType.CHANNEL
        restrict_scaling_type = RestrictValueType.FP
        float_to_int_impl_type = FloatToIntImplType.ROUND
        scaling_min_val = 1e-10
        narrow_range = True
        signed = True

    class UintAct(Uint8ActPerTensorFloatMSE):
        """Unsigned activations, learned per-tensor scale initialised to the MSE-optimal clip."""
        collect_stats_steps = 100

    class IntAct(Int8ActPerTensorFloatMSE):
        """Signed activations (input, residual branches), learned scale initialised to the MSE-optimal clip."""
        collect_stats_steps = 100

    return {"int_w": IntWeightPerChannel, "low_w": LowIntWeightPerChannel, "bin_w": BinaryWeightPerChannel,
            "uint_a": UintAct, "int_a": IntAct, "bin_a": SignedBinaryActPerTensorConst}


def _power_of_twoquantizers():
    """The same roles with power-of-two scales (Brevitas fixed-point quantizers: scale = 2^ceil(log2(stat)))."""
    from brevitas.core.function_wrapper import CeilSte
    from brevitas.inject.enum import RestrictValueType
    from brevitas.quant.binary import SignedBinaryActPerTensorConst
    from brevitas.quant.fixed_point import (
        Int8ActPerTensorFixedPointMSE,
        Int8WeightPerChannelFixedPoint,
        Int8WeightPerChannelFixedPointMSE,
        Uint8ActPerTensorFixedPointMSE,
    )

    base = quantizers("float")

    class BinaryWeightPerChannelPoT(base["bin_w"]):
        restrict_scaling_type = RestrictValueType.POWER_OF_TWO
        restrict_value_float_to_int_impl = CeilSte

    class UintActPoT(Uint8ActPerTensorFixedPointMSE):
        collect_stats_steps = 100

    class IntActPoT(Int8ActPerTensorFixedPointMSE):
        collect_stats_steps = 100

    return {"int_w": Int8WeightPerChannelFixedPoint, "low_w": Int8WeightPerChannelFixedPointMSE,
            "bin_w": BinaryWeightPerChannelPoT, "uint_a": UintActPoT, "int_a": IntActPoT,
            "bin_a": SignedBinaryActPerTensorConst}


def weight_kwargs(w: int, scaling: str = "float") -> dict[str, Any]:
    q = quantizers(scaling)
    if w == 1:
        return {"weight_quant": q["bin_w"]}
    return {"weight_quant": q["low_w"] if w == 2 else q["int_w"], "weight_bit_width": w}


def signed_act(bits: int, scaling: str = "float") -> nn.Module:
    from brevitas.nn import QuantIdentity

    q = quantizers(scaling)
    if bits == 1:
        return QuantIdentity(act_quant=q["bin_a"], return_quant_tensor=False)
    return QuantIdentity(act_quant=q["int_a"], bit_width=bits, return_quant_tensor=False)


def tied_act(bits: int, source_act_quant: Any, scaling: str = "float") -> nn.Module:
    """A signed ``bits``-bit QuantIdentity whose scale is always that of another activation quantizer (its learned
    value, read at each call; not a copy): values on the source's grid pass it unchanged while in range."""
    from brevitas.nn import QuantIdentity

    class TiedScaling(nn.Module):
        source: Any  # Brevitas' tensor quantizer of the source activation (untyped), a reference

        def __init__(self) -> None:
            super().__init__()
            self.__dict__["source"] = source_act_quant.fused_activation_quant_proxy.tensor_quant  # a reference

        def forward(self, x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
            src = self.source
            return src.scaling_impl(x, src.int_scaling_impl(src.msb_clamp_bit_width_impl()))

    return QuantIdentity(act_quant=quantizers(scaling)["int_a"], bit_width=bits, scaling_impl=TiedScaling(),
                         return_quant_tensor=False)


def quant_activation(act: nn.Module, bits: int, scaling: str = "float") -> nn.Module:
    from brevitas.nn import QuantReLU

    if bits == 1:  # bipolar sign activation replaces the ReLU (a ReLU's 1-bit {0, s} exports as BipolarQuant)
        return signed_act(1, scaling)
    if isinstance(act, (nn.ReLU, nn.ReLU6)):
        return QuantReLU(act_quant=quantizers(scaling)["uint_a"], bit_width=bits, return_quant_tensor=False)
    return nn.Sequential(act, signed_act(bits, scaling))


def quant_compute(mod: nn.Module, w: int, scaling: str = "float") -> nn.Module:
    from brevitas.nn import QuantConv2d, QuantLinear

    kwargs = weight_kwargs(w, scaling)
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            raise EdgeCNNError(f"low-bit conversion supports zero padding only, not padding_mode='{mod.padding_mode}'")
        new = QuantConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                          mod.groups, bias=mod.bias is not None, return_quant_tensor=False, **kwargs)
    else:
        new = QuantLinear(mod.in_features, mod.out_features, bias=mod.bias is not None, return_quant_tensor=False,
                          **kwargs)
    with torch.no_grad():
        new.weight.copy_(mod.weight)
        if mod.bias is not None:
            new.bias.copy_(mod.bias)
    return new.to(mod.weight.device)


def global_pool(act_quant: Any, kernel: tuple[int, int]) -> nn.Module:
    """Global average pooling that FINN builds in hardware: the input is put back on the grid of the activation that
    produced it (``act_quant``, that activation's own quantizer, shared: exact, since pooling's inputs are already on
    it), then Brevitas' TruncAvgPool2d sums and shifts to at most 8 bits (floor), which FINN turns into a
    QuantAvgPool2d. A float average would leave a float 1/N scale between FINN's pooling and the classifier, where
    FINN stops."""
    import math

    from brevitas.nn import TruncAvgPool2d
    from brevitas.quant.scaled_int import TruncTo8bit

    # the sum's own width when it is under 8 bits: FINN's QuantAvgPool2d shifts by ibits + log2(K) - obits and
    # computes another value than Brevitas when that is negative (2-bit activations over a 4x4 map, measured)
    summed = round(float(act_quant.bit_width())) + math.ceil(math.log2(kernel[0] * kernel[1]))
    trunc = TruncTo8bit.let(bit_width=min(8, summed))

    class QuantGlobalAvgPool(nn.Module):
        requant: nn.Module  # the activation's own quantizer, a reference

        def __init__(self) -> None:
            super().__init__()
            self.pool = TruncAvgPool2d(kernel_size=kernel, trunc_quant=trunc, return_quant_tensor=False)
            # a reference, not a submodule: its parameters are saved once, under the activation that owns them
            self.__dict__["requant"] = act_quant

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(self.requant(x))

    return QuantGlobalAvgPool()
