"""Reference networks rebuilt at a published input size, as LayerGraphs: what the estimators are validated on.

Weights are random: cycles, traffic and resources depend on shapes and bit widths only. torchvision supplies
most ImageNet networks; MobileNet v1 and the Caffe / TF-slim ResNet v1 stride placements are built here
because torchvision has none of them; the FINN MLPs and CNV are QONNX graphs from hw.reference_nets.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from edgecnn.hw.errors import HardwareModelError
from edgecnn.hw.graph import LayerGraph, load_graph, module_graph

#: torchvision builders by key, with the keyword arguments that make them exportable without downloads.
TORCHVISION = {
    "resnet18": {}, "resnet34": {}, "resnet50": {}, "resnet101": {}, "resnet152": {},
    "vgg16": {}, "vgg19": {}, "squeezenet1_0": {}, "squeezenet1_1": {},
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
    "mobilenet_v2": {}, "mobilenet_v3_small": {}, "mobilenet_v3_large": {},
    "efficientnet_b0": {}, "efficientnet_b1": {}, "shufflenet_v2_x1_0": {}, "mnasnet1_0": {},
}


def _mobilenet_v1(alpha: float) -> Any:
    """MobileNet v1 (Howard et al. 2017, arXiv 1704.04861, Table 1) with width multiplier ``alpha``."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    def c(n: int) -> int:
        return max(8, int(n * alpha))

    layers = [nn.Conv2d(3, c(32), 3, 2, 1, bias=False), nn.BatchNorm2d(c(32)), nn.ReLU6()]
    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    plan += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    for cin, cout, s in plan:
        layers += block(c(cin), c(cout), s)
    # TF-slim ends with a 1x1 convolution to 1001 classes on the pooled features.
    layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c(1024), 1001, 1), nn.Flatten()]
    return nn.Sequential(*layers)


def _resnet_v1(depth: int) -> Any:
    """Caffe ResNet v1 (He et al. 2015; the zoo's cf_resnet50): the stride on the first 1x1 of a stage."""
    import torchvision

    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
    return model


def _resnet_slim(depth: int) -> Any:
    """TF-slim resnet_v1_N (the Vitis AI zoo's tf_resnetv1_*): each stage but the last downsamples in its *last*
    unit (3x3 stride 2, shortcut subsampled by a 1x1 max-pool), instead of in the next stage's first unit."""
    import torchvision
    from torch import nn

    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    for stage in stages[1:]:
        stage[0].conv2.stride = (1, 1)
        stage[0].downsample[0].stride = (1, 1)
    for stage in stages[:3]:
        last = stage[-1]
        last.conv2.stride = (2, 2)
        last.downsample = nn.MaxPool2d(1, 2)
    return model


def _torchvision(key: str) -> Callable[[], Any]:
    def build() -> Any:
        import torchvision

        if key == "mobilenet_v2_1.4":
            return torchvision.models.MobileNetV2(width_mult=1.4)
        return getattr(torchvision.models, key)(weights=None, **TORCHVISION[key])
    return build


def torch_builders() -> dict[str, Callable[[], Any]]:
    """Every torch network key this module can rebuild."""
    out: dict[str, Callable[[], Any]] = {k: _torchvision(k) for k in TORCHVISION}
    out["mobilenet_v2_1.4"] = _torchvision("mobilenet_v2_1.4")
    for alpha in ("0.25", "0.5", "0.75", "1.0"):
        out[f"mobilenet_v1_{alpha}"] = functools.partial(_mobilenet_v1, float(alpha))
    for depth in (50, 101, 152):
        out[f"resnet{depth}_v1"] = functools.partial(_resnet_v1, depth)
        out[f"resnet{depth}_slim"] = functools.partial(_resnet_slim, depth)
    return out


def qonnx_builders() -> dict[str, Callable[..., Any]]:
    """FINN designs as QONNX graphs: builder(w_bits, a_bits, in_bits) -> ModelProto."""
    from edgecnn.hw.validation.reference_nets import cnv_qonnx, mlp_qonnx

    return {"cnv": lambda w, a, i=None, **kw: cnv_qonnx(w, a, in_bits=i or 8, **kw),
            "tfc": lambda w, a, i=None, **kw: mlp_qonnx([64, 64, 64], w, a, in_bits=i, **kw),
            "sfc": lambda w, a, i=None, **kw: mlp_qonnx([256, 256, 256], w, a, in_bits=i, **kw),
            "lfc": lambda w, a, i=None, **kw: mlp_qonnx([1024, 1024, 1024], w, a, in_bits=i, **kw)}


def rebuildable(key: str) -> bool:
    """Whether ``key`` names a network this module can build."""
    return key in torch_builders() or key in qonnx_builders()


def network_graph(key: str, input_hw: tuple[int, int] | list[int] | None = None, *, w_bits: int | None = None,
                  a_bits: int | None = None, in_bits: int | None = None, **build_args: Any) -> LayerGraph:
    """The LayerGraph of network ``key`` at ``input_hw`` (torch nets) or ``w_bits``/``a_bits``/``in_bits`` (QONNX
    nets: weight, activation and streamed-input widths; ``build_args`` such as padded ``classes``)."""
    torch_nets, qonnx_nets = torch_builders(), qonnx_builders()
    if key in qonnx_nets:
        if w_bits is None or a_bits is None:
            raise HardwareModelError(f"network '{key}' is a quantized FINN design: give w_bits and a_bits")
        graph = load_graph(qonnx_nets[key](w_bits, a_bits, in_bits, **build_args))
        graph.name = f"{key}-w{w_bits}a{a_bits}"
        return graph
    if key not in torch_nets:
        raise HardwareModelError(f"no builder for network '{key}'; known: {', '.join(sorted(torch_nets))}")
    if input_hw is None:
        raise HardwareModelError(f"network '{key}' needs an input size (input_hw)")
    return module_graph(torch_nets[key](), input_hw, f"{key}@{input_hw[0]}x{input_hw[1]}")
