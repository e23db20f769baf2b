"""Low-bit (1-8 bit) quantization-aware training with Brevitas, for QONNX / FINN-style deployment.

Precision names
    ``wXaY`` (X, Y in 1..8): X-bit weights, Y-bit activations. ``binary`` = 1-bit weights with 8-bit
    activations, ``ternary`` = 2-bit weights (narrow range, so the grid is {-s, 0, +s} per output channel) with
    8-bit activations; ``binary-aY`` / ``ternary-aY`` pick the activation bits. ``w2`` and ``ternary`` are the
    same quantizer: Brevitas' signed 2-bit weights are narrow-range.

Per-layer spec (``bits``)
    ``{default: {w: 1, a: 4}, first: {w: 4, a: 4}, last: {w: 4, a: 4}, "features.3": {w: 2}}``. Keys are
    ``default``, ``first`` (the first Conv2d/Linear in forward order), ``last`` (the last one: the classifier)
    and module names of the float model: a Conv2d/Linear, or a container, which applies to every Conv2d/Linear
    inside it. Entries are ``{w, a}`` dicts (missing fields inherit) or precision strings. Precedence:
    default < first/last < container names (outer first) < layer names.
    ``w`` is the layer's weight bits; ``a`` the bits of the activation that follows the layer (the ReLU after its
    BN; for the second conv of a residual block the ReLU after the add). ``a`` on a named layer without such an
    activation is an error; on ``first``/``last`` it is ignored with a note (the classifier has none).
    The network input is quantized to 8 signed bits, whatever the spec says.
    Two more keys apply to the whole model: ``scaling: float | power_of_two`` (default float) and ``fold_bn: true``
    (fold every Conv2d -> BatchNorm2d pair into one biased conv before quantizing). Power-of-two scales make every
    product and sum of quantized values exact in float32 and, with the BatchNorms folded, QONNX execution equals the
    PyTorch model on all but rare inputs (benchmarks/qonnx_parity_scales.py); they are also what hls4ml maps without extra
    scaling layers and what FINN's streamlining turns into shifts.

Quantizers (all symmetric, zero-point 0, as FINN expects)
    * weights: per-output-channel float scales from the weights' statistics, recomputed at every step
      (Brevitas ``STATS`` scaling): max |w| for 3..8 bits, the MSE-optimal scale for 2 bits (a max-based ternary
      grid zeroes almost every weight), mean |w| for 1 bit (XNOR-Net's optimal binary scale).
      1-bit weights are ``sign(w) * s`` (exported as ``BipolarQuant``), 2..8 bits narrow-range integers
      (``Quant`` with ``narrow=1``). Biases stay float (32 bit).
    * activations: ReLU/ReLU6 -> ``QuantReLU`` (unsigned, learned per-tensor scale initialised from a
      calibration pass by minimising the quantization MSE, so ReLU6's clip becomes the learned clip); other
      activations (SiLU, GELU, ...) stay float and are followed by a signed ``QuantIdentity``. 1-bit activations
      are bipolar sign activations {-1, +1} (FINN BNN style) that replace the ReLU. A max/percentile-based
      initial scale leaves a 2-bit activation with one or two used levels; MSE keeps the network alive.
    * BatchNorm running statistics are re-estimated after the conversion (quantized weights change every conv's
      output distribution, most at 1-2 bits, where the float model's statistics no longer fit at all).
    * residual adds (``x + f(x)``, as CustomNet's ResidualBlock): the branch output is quantized by a signed
      ``QuantIdentity`` with the owning conv's ``a`` bits, appended to the branch's ``nn.Sequential``; the skip
      input is already quantized (it comes from a quantized activation), so the Add sees two quantized tensors.
      Adds whose branch does not end in an ``nn.Sequential`` stay float (noted in the plan).
    * BatchNorm stays a float layer (QAT trains it; FINN folds it into thresholds when streamlining).

The quantized model keeps the float model's module names (``features.0.0`` stays ``features.0.0``) plus
``input_quant``; its class is a subclass of the float model's class that quantizes the input in ``forward``.
"""
from __future__ import annotations

import copy
import logging
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.compress.lowbit_quantizers import quant_activation, quant_compute, signed_act
from edgecnn.errors import EdgeCNNError, did_you_mean

log = logging.getLogger(__name__)

MIN_BITS, MAX_BITS = 1, 8
INPUT_BITS = 8
BIAS_BITS = 32
ROLE_KEYS = ("default", "first", "last")
MODEL_KEYS = ("scaling", "fold_bn")  # spec keys that apply to the whole model
SCALINGS = ("float", "power_of_two")
_SCALING_ALIASES = {"float": "float", "fp": "float", "power_of_two": "power_of_two", "po2": "power_of_two",
                    "pot": "power_of_two"}
_PRECISION_RE = re.compile(r"^w(\d+)a(\d+)$")
_NAMED_RE = re.compile(r"^(binary|ternary)(?:[-_]?a(\d+))?$")
_WEIGHT_WORDS = {"binary": 1, "bipolar": 1, "ternary": 2}
#: Modules a layer's output may pass through before its activation (they do not change what is quantized).
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Identity, nn.MaxPool2d)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh,
                nn.Hardtanh, nn.Mish, nn.PReLU)
_COMPUTE = (nn.Conv2d, nn.Linear)


# ------------------------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class BitSpec:
    """Weight and activation bit widths of one precision name (``w4a4``, ``binary``, ``ternary-a4``)."""

    w: int = 8
    a: int = 8

    def __post_init__(self) -> None:
        _check_bits(self.w, "precision", "w")
        _check_bits(self.a, "precision", "a")

    @property
    def name(self) -> str:
        return f"w{self.w}a{self.a}"


def _check_bits(value: Any, where: str, key: str) -> int:
    what = "weight" if key == "w" else "activation"
    if isinstance(value, bool) or not isinstance(value, int):
        raise EdgeCNNError(f"{where}: {key}={value!r} is not a bit width; give an integer {MIN_BITS}..{MAX_BITS}"
                           + (" or binary/ternary" if key == "w" else ""))
    if not MIN_BITS <= value <= MAX_BITS:
        raise EdgeCNNError(f"{where}: {key}={value} is out of range; {what} bits must be {MIN_BITS}..{MAX_BITS}")
    return value


def parse_precision(text: str | BitSpec) -> BitSpec:
    """``'w4a4'`` -> BitSpec(4, 4); ``'binary'`` -> (1, 8); ``'ternary'`` -> (2, 8); ``'binary-a4'`` -> (1, 4)."""
    if isinstance(text, BitSpec):
        return text
    raw = str(text).strip().lower()
    hint = "use wXaY with X and Y in 1..8 (e.g. w4a4), binary, ternary, binary-aY or ternary-aY"
    m = _PRECISION_RE.match(raw)
    if m:
        w, a = int(m.group(1)), int(m.group(2))
        if not (MIN_BITS <= w <= MAX_BITS and MIN_BITS <= a <= MAX_BITS):
            raise EdgeCNNError(f"precision '{text}' is out of range: bit widths must be {MIN_BITS}..{MAX_BITS}; {hint}")
        return BitSpec(w, a)
    m = _NAMED_RE.match(raw)
    if m:
        a = int(m.group(2)) if m.group(2) else INPUT_BITS
        if not MIN_BITS <= a <= MAX_BITS:
            raise EdgeCNNError(f"precision '{text}' is out of range: activation bits must be {MIN_BITS}..{MAX_BITS}")
        return BitSpec(_WEIGHT_WORDS[m.group(1)], a)
    raise EdgeCNNError(f"precision '{text}' is not a low-bit precision; {hint}")


def is_lowbit_precision(text: str) -> bool:
    """True for names ``parse_precision`` accepts (lets callers route ``--precision`` values)."""
    try:
        parse_precision(text)
        return True
    except EdgeCNNError:
        return False


@dataclass(frozen=True)
class LayerBits:
    """One entry of the per-layer spec; ``None`` fields inherit from the less specific entries."""

    w: int | None = None
    a: int | None = None

    @classmethod
    def parse(cls, value: Any, where: str) -> LayerBits:
        if isinstance(value, LayerBits):
            return value
        if isinstance(value, BitSpec):
            return cls(value.w, value.a)
        if isinstance(value, str):
            spec = parse_precision(value)
            return cls(spec.w, spec.a)
        if not isinstance(value, Mapping):
            raise EdgeCNNError(f"bits: '{where}' must be a mapping like {{w: 4, a: 4}} or a precision such as w4a4, "
                               f"got {value!r}")
        unknown = [k for k in value if k not in ("w", "a")]
        if unknown:
            raise EdgeCNNError(f"bits: '{where}' has unknown key '{unknown[0]}'; use w (weight bits) and a "
                               "(activation bits)")
        w, a = value.get("w"), value.get("a")
        if isinstance(w, str):
            word = w.strip().lower()
            if word not in _WEIGHT_WORDS and not word.isdigit():
                raise EdgeCNNError(f"bits: '{where}' w={w!r} is not a bit width; give 1..8, binary or ternary")
            w = _WEIGHT_WORDS.get(word, int(word) if word.isdigit() else None)
        if isinstance(a, str) and a.strip().isdigit():
            a = int(a)
        return cls(None if w is None else _check_bits(w, f"bits: '{where}'", "w"),
                   None if a is None else _check_bits(a, f"bits: '{where}'", "a"))

    def over(self, base: LayerBits) -> LayerBits:
        return LayerBits(self.w if self.w is not None else base.w, self.a if self.a is not None else base.a)


@dataclass(frozen=True)
class LowBitSpec:
    """The whole per-layer spec: ``default``, ``first``, ``last`` and named entries."""

    default: LayerBits = LayerBits(8, 8)
    first: LayerBits | None = None
    last: LayerBits | None = None
    layers: dict[str, LayerBits] = field(default_factory=dict)
    scaling: str = "float"  # 'float' | 'power_of_two'
    fold_bn: bool = False

    @classmethod
    def parse(cls, spec: Any, precision: str | BitSpec | None = None) -> LowBitSpec:
        """From a precision name, a BitSpec, a ``bits`` mapping, or both (the mapping refines the precision)."""
        if isinstance(spec, LowBitSpec):
            return spec
        base = parse_precision(precision) if precision is not None else BitSpec(8, 8)
        if spec is None:
            return cls(default=LayerBits(base.w, base.a))
        if isinstance(spec, (str, BitSpec)):
            p = parse_precision(spec)
            return cls(default=LayerBits(p.w, p.a))
        if not isinstance(spec, Mapping):
            raise EdgeCNNError(f"bits must be a mapping (default/first/last/layer name -> {{w, a}}), got {spec!r}")
        default = LayerBits.parse(spec["default"], "default").over(LayerBits(base.w, base.a)) \
            if "default" in spec else LayerBits(base.w, base.a)
        first = LayerBits.parse(spec["first"], "first") if "first" in spec else None
        last = LayerBits.parse(spec["last"], "last") if "last" in spec else None
        layers = {str(k): LayerBits.parse(v, str(k)) for k, v in spec.items()
                  if k not in ROLE_KEYS and k not in MODEL_KEYS}
        return cls(default, first, last, layers, _parse_scaling(spec.get("scaling", "float")),
                   _parse_fold_bn(spec.get("fold_bn", False)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"default": {"w": self.default.w, "a": self.default.a}}
        for key, entry in (("first", self.first), ("last", self.last), *self.layers.items()):
            if entry is not None:
                out[key] = {k: v for k, v in (("w", entry.w), ("a", entry.a)) if v is not None}
        if self.scaling != "float":  # defaults are left out: specs (and stage hashes) of earlier runs stay the same
            out["scaling"] = self.scaling
        if self.fold_bn:
            out["fold_bn"] = True
        return out


def _parse_scaling(value: Any) -> str:
    scaling = _SCALING_ALIASES.get(str(value).strip().lower())
    if scaling is None:
        raise EdgeCNNError(f"bits: scaling={value!r} is not a scaling; use {' or '.join(SCALINGS)}")
    return scaling


def _parse_fold_bn(value: Any) -> bool:
    if not isinstance(value, bool):
        raise EdgeCNNError(f"bits: fold_bn={value!r} must be true or false")
    return value


# ------------------------------------------------------------------------------------------------ model analysis


@dataclass
class LayerPlan:
    """The resolved bits of one Conv2d/Linear layer (module names are the float model's)."""

    name: str
    kind: str  # 'conv' | 'linear'
    w: int
    a: int | None  # bits of the activation after it (None: the layer has no activation)
    activation: str | None  # module name of that activation
    role: str = ""  # 'first', 'last', 'first+last' or ''
    residual_quant: str | None = None  # Sequential that gets the branch quantizer before a residual add

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "w": self.w, "a": self.a, "activation": self.activation,
                "role": self.role}


@dataclass
class LowBitPlan:
    layers: list[LayerPlan]
    activations: dict[str, int]  # every activation module -> bits
    input_bits: int = INPUT_BITS
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"input_bits": self.input_bits, "layers": [layer.to_dict() for layer in self.layers],
                "activations": dict(self.activations), "notes": list(self.notes)}


@dataclass
class _Flow:
    """What follows one compute layer: its activation and, for residual branches, where to quantize the branch."""

    activation: str | None = None
    branch_end: str | None = None  # module whose output enters a residual add (None: not a residual branch)


def _example_input(model: nn.Module, input_size: int | tuple[int, ...], batch: int = 1) -> torch.Tensor:
    if isinstance(input_size, int):
        first = next((m for m in model.modules() if isinstance(m, _COMPUTE)), None)
        if isinstance(first, nn.Linear) and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            return torch.randn(batch, first.in_features)
        channels = first.in_channels if isinstance(first, nn.Conv2d) else 3
        return torch.randn(batch, channels, input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if len(shape) == 2:  # (H, W)
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        shape = (first.in_channels if first is not None else 3, *shape)
    return torch.randn(batch, *shape)


def _is_add(node) -> bool:
    return (node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd)) or \
        (node.op == "call_method" and node.target in ("add", "add_"))


def _analyse_fx(model: nn.Module) -> tuple[list[str], dict[str, _Flow], list[str]]:
    """(compute layers in forward order, their flows, activation modules in forward order) from an FX trace."""
    import torch.fx

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    order: list[str] = []
    acts: list[str] = []
    flows: dict[str, _Flow] = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        mod = modules.get(node.target)
        if isinstance(mod, _ACTIVATIONS) and node.target not in acts:
            acts.append(node.target)
        if not isinstance(mod, _COMPUTE) or node.target in flows:
            continue
        order.append(node.target)
        flow, cur, last_mod = _Flow(), node, node.target
        while True:
            users = list(cur.users)
            if len(users) != 1:
                break
            nxt = users[0]
            if nxt.op == "call_module":
                m = modules.get(nxt.target)
                if isinstance(m, _ACTIVATIONS):
                    flow.activation = nxt.target
                    break
                if isinstance(m, _PASS_THROUGH) and flow.branch_end is None:
                    last_mod, cur = nxt.target, nxt
                    continue
                break
            if _is_add(nxt) and flow.branch_end is None:
                flow.branch_end = last_mod
                cur = nxt
                continue
            break
        if flow.activation is None:
            flow.branch_end = None
        flows[node.target] = flow
    return order, flows, acts


def _analyse_hooks(model: nn.Module, example: torch.Tensor) -> tuple[list[str], dict[str, _Flow], list[str]]:
    """Fallback for models FX cannot trace: leaf modules in call order (residual adds are not seen)."""
    calls: list[str] = []
    hooks = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            hooks.append(mod.register_forward_hook(lambda m, i, o, name=name: calls.append(name)))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    order, acts, flows = [], [], {}
    for i, name in enumerate(calls):
        mod = modules[name]
        if isinstance(mod, _ACTIVATIONS) and name not in acts:
            acts.append(name)
        if not isinstance(mod, _COMPUTE) or name in flows:
            continue
        order.append(name)
        flow = _Flow()
        for nxt in calls[i + 1:]:
            m = modules[nxt]
            if isinstance(m, _ACTIVATIONS):
                flow.activation = nxt
            if not isinstance(m, _PASS_THROUGH):
                break
        flows[name] = flow
    return order, flows, acts


def _analyse(model: nn.Module, input_size) -> tuple[list[str], dict[str, _Flow], list[str], list[str]]:
    notes: list[str] = []
    was_training = model.training
    try:
        order, flows, acts = _analyse_fx(model)
    except Exception as exc:  # models with data-dependent control flow
        notes.append(f"torch.fx could not trace the model ({type(exc).__name__}); layer order taken from a forward "
                     "pass, residual adds are not quantized")
        order, flows, acts = _analyse_hooks(model, _example_input(model, input_size))
    model.train(was_training)
    if not order:
        raise EdgeCNNError("the model has no Conv2d or Linear layer to quantize")
    return order, flows, acts, notes


def resolve_spec(model: nn.Module, spec: Any, input_size: int | tuple[int, ...] = 64) -> LowBitPlan:
    """Resolve a spec (precision name, BitSpec, ``bits`` mapping or LowBitSpec) against a float model."""
    spec = LowBitSpec.parse(spec)
    order, flows, acts, notes = _analyse(model, input_size)
    modules = dict(model.named_modules())
    resolved = {name: spec.default for name in order}
    explicit_a: dict[str, bool] = {name: False for name in order}
    first, last = order[0], order[-1]
    for role, entry, name in (("first", spec.first, first), ("last", spec.last, last)):
        if entry is None:
            continue
        resolved[name] = entry.over(resolved[name])
        if entry.a is not None and flows[name].activation is None:
            notes.append(f"bits.{role}.a ignored: {role} layer '{name}' has no activation after it")
    containers: dict[str, list[str]] = {}
    for key in spec.layers:
        if key in flows:
            continue
        inside = [n for n in order if n.startswith(key + ".")] if key in modules else []
        if not inside:
            known = list(order) + [n for n in modules if n and any(o.startswith(n + ".") for o in order)]
            raise EdgeCNNError(f"bits: unknown layer '{key}'{did_you_mean(key, known)}; use default, first, last or "
                               f"the name of a Conv2d/Linear layer or of a block that contains some "
                               f"(layers: {', '.join(order[:6])}{', ...' if len(order) > 6 else ''})")
        containers[key] = inside
    for key in sorted(containers, key=lambda k: k.count(".")):  # outer containers first, inner ones win
        entry = spec.layers[key]
        with_act = [n for n in containers[key] if flows[n].activation is not None]
        if entry.a is not None and not with_act:
            raise EdgeCNNError(f"bits: '{key}' sets a={entry.a} but none of its layers has an activation after it; "
                               "remove 'a' there (activation bits belong to a layer followed by ReLU or similar)")
        for n in containers[key]:
            resolved[n] = entry.over(resolved[n])
            explicit_a[n] = explicit_a[n] or entry.a is not None
    for key, entry in spec.layers.items():
        if key not in flows:
            continue
        if entry.a is not None and flows[key].activation is None:
            raise EdgeCNNError(f"bits: '{key}' sets a={entry.a} but '{key}' has no activation after it; remove 'a' "
                               "there (activation bits belong to a layer followed by ReLU or similar)")
        resolved[key] = entry.over(resolved[key])

    act_bits = {name: int(spec.default.a) for name in acts}
    layers = []
    for name in order:
        bits, flow = resolved[name], flows[name]
        role = "+".join(r for r, n in (("first", first), ("last", last)) if n == name)
        a = int(bits.a) if flow.activation is not None else None
        if flow.activation is not None:
            act_bits[flow.activation] = a
        branch = None
        if flow.branch_end is not None:
            parent_name, _, child = flow.branch_end.rpartition(".")
            parent = modules.get(parent_name)
            if isinstance(parent, nn.Sequential) and list(parent._modules)[-1] == child:
                branch = parent_name
            else:
                notes.append(f"residual add after '{name}' stays float: its branch does not end an nn.Sequential")
        kind = "conv" if isinstance(modules[name], nn.Conv2d) else "linear"
        layers.append(LayerPlan(name, kind, int(bits.w), a, flow.activation, role, branch))
    return LowBitPlan(layers, act_bits, INPUT_BITS, notes)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


_LOWBIT_CLASSES: dict[type, type] = {}


def _lowbit_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward quantizes the input first (names of the float model are kept)."""
    if getattr(cls, "_edgecnn_lowbit", False):
        return cls
    if cls not in _LOWBIT_CLASSES:
        if issubclass(cls, nn.Sequential):  # Sequential.forward would run every child, input_quant included
            def forward(self, x):
                x = self.input_quant(x)
                for name, module in self._modules.items():
                    if name != "input_quant":
                        x = module(x)
                return x
        else:
            def forward(self, x, *args, **kwargs):
                return cls.forward(self, self.input_quant(x), *args, **kwargs)

        _LOWBIT_CLASSES[cls] = type(f"LowBit{cls.__name__}", (cls,), {
            "forward": forward, "_edgecnn_lowbit": True, "__module__": __name__,
            "__doc__": f"{cls.__name__} with Brevitas low-bit layers and an {INPUT_BITS}-bit input quantizer."})
    return _LOWBIT_CLASSES[cls]


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor) -> nn.Module:
    """Initialise the activation scales from a few batches (Brevitas calibration mode); returns the model."""
    from brevitas.graph.calibrate import calibration_mode

    if isinstance(batches, torch.Tensor):
        batches = [batches]
    was_training = model.training
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for x in batches:
            model(x)
    model.train(was_training)
    return model


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance on ``batches`` with the model's quantizers active
    (a cumulative average over the batches; nothing else changes). Quantized weights shift each conv's output
    statistics, most at 1-2 bits, so the float model's running statistics are stale after ``to_lowbit``."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
        m.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv2d whose output goes only to a BatchNorm2d into one biased Conv2d (torch's
    ``fuse_conv_bn_eval``, running statistics), the BatchNorm becoming ``nn.Identity``; in place, returns ``model``.
    Module names are kept, so a folded model still matches its spec and checkpoint names."""
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    was_training = model.training
    model.eval()
    modules = dict(model.named_modules())
    try:
        nodes = list(torch.fx.symbolic_trace(model).graph.nodes)
        pairs = [(n.target, next(iter(n.users)).target) for n in nodes
                 if n.op == "call_module" and isinstance(modules.get(n.target), nn.Conv2d) and len(n.users) == 1
                 and next(iter(n.users)).op == "call_module"
                 and isinstance(modules.get(next(iter(n.users)).target), nn.BatchNorm2d)]
    except Exception as exc:  # noqa: BLE001 - untraceable models: fold Sequential neighbours only
        log.debug("fold_batchnorm: torch.fx failed (%s); folding adjacent Sequential children", exc)
        pairs = []
        for name, mod in modules.items():
            if isinstance(mod, nn.Sequential):
                kids = list(mod._modules.items())
                pairs += [(f"{name}.{a}" if name else a, f"{name}.{b}" if name else b)
                          for (a, c), (b, n) in zip(kids, kids[1:])
                          if isinstance(c, nn.Conv2d) and isinstance(n, nn.BatchNorm2d)]
    for conv_name, bn_name in pairs:
        _set_module(model, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _set_module(model, bn_name, nn.Identity())
    model.train(was_training)
    return model


def to_lowbit(model: nn.Module, spec: Any, input_size: int | tuple[int, ...] = 64,
              calib: Iterable[torch.Tensor] | torch.Tensor | None = None) -> nn.Module:
    """A Brevitas-quantized copy of a float ``model`` (the float model is not changed).

    ``spec``: precision name (``w4a4``), BitSpec, ``bits`` mapping or LowBitSpec. ``calib``: normalized input
    batches that initialise the activation scales; without them 16 standard-normal images are used (inputs are
    normalized to zero mean and unit variance), which a QAT run then refines. With real batches the BatchNorm
    statistics are then re-estimated on them (``recalibrate_bn``; not on the random stand-in, which would overwrite
    trained statistics with noise statistics). The resolved plan is stored as
    ``lowbit_plan`` (and the parsed spec as ``lowbit_spec``) on the returned model.
    """
    spec = LowBitSpec.parse(spec)
    qmodel = copy.deepcopy(model).eval()
    if spec.fold_bn:
        fold_batchnorm(qmodel)
    plan = resolve_spec(qmodel, spec, input_size)
    scaling = spec.scaling
    modules = dict(qmodel.named_modules())
    for layer in plan.layers:
        _set_module(qmodel, layer.name, quant_compute(modules[layer.name], layer.w, scaling))
    for name, bits in plan.activations.items():
        _set_module(qmodel, name, quant_activation(modules[name], bits, scaling))
    for layer in plan.layers:
        if layer.residual_quant is not None:
            branch = qmodel.get_submodule(layer.residual_quant)
            branch.append(signed_act(layer.a, scaling))
    qmodel.input_quant = signed_act(INPUT_BITS, scaling) if INPUT_BITS > 1 else None
    qmodel.__class__ = _lowbit_class(type(qmodel))
    qmodel.lowbit_plan = plan
    qmodel.lowbit_spec = spec
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    qmodel.to(device)
    if calib is None:
        gen = torch.Generator().manual_seed(0)
        example = _example_input(model, input_size, batch=16)
        calibrate(qmodel, torch.randn(example.shape, generator=gen))
    else:
        calib = [calib] if isinstance(calib, torch.Tensor) else list(calib)
        calibrate(qmodel, calib)
        recalibrate_bn(qmodel, calib)
    return qmodel.eval()


# ------------------------------------------------------------------------------------------------ statistics


def tensor_sparsity(t: torch.Tensor) -> float:
    """Fraction of exactly-zero elements of ``t`` (0.0 for an empty tensor)."""
    return float((t == 0).sum()) / t.numel() if t.numel() else 0.0


def _quant_layers(model: nn.Module):
    from brevitas.nn import QuantConv2d, QuantLinear

    for name, mod in model.named_modules():
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            yield name, mod


def layer_weight_bits(mod: nn.Module) -> int:
    """The weight bit width of a Brevitas layer (32 when its weight quantizer is disabled)."""
    if not mod.weight_quant.is_quant_enabled:
        return 32
    return round(float(mod.weight_quant.bit_width()))


@torch.no_grad()
def quant_weight_int(mod: nn.Module) -> torch.Tensor:
    """The layer's quantized weights as integers (±1 for binary layers)."""
    qw = mod.quant_weight()
    return torch.round(qw.value / qw.scale).to(torch.int32)


@torch.no_grad()
def weight_sparsity(model: nn.Module) -> list[dict[str, Any]]:
    """Per quantized layer: name, bits, weights, zeros and sparsity (fraction of zero integer weights)."""
    rows = []
    for name, mod in _quant_layers(model):
        q = quant_weight_int(mod)
        zeros = int((q == 0).sum())
        rows.append({"layer": name, "w_bits": layer_weight_bits(mod), "weights": q.numel(), "zeros": zeros,
                     "sparsity": zeros / q.numel() if q.numel() else 0.0})
    return rows


def packed_weight_bits(model: nn.Module) -> int:
    """Storage of the weights packed at their bit widths: sum of weights x bits, biases at 32 bits.

    Brevitas layers count at their weight bit width; any remaining float Conv2d/Linear at 32 bits. BatchNorm
    parameters are not counted (they fold into the conv or into FINN's thresholds).
    """
    total = 0
    quant = dict(_quant_layers(model))
    for name, mod in model.named_modules():
        if name in quant:
            total += mod.weight.numel() * layer_weight_bits(mod)
        elif isinstance(mod, _COMPUTE):
            total += mod.weight.numel() * 32
        else:
            continue
        if mod.bias is not None:
            total += mod.bias.numel() * BIAS_BITS
    return int(total)


def layer_bits(model: nn.Module) -> dict[str, int]:
    """{layer name: weight bits} of the quantized layers."""
    return {name: layer_weight_bits(mod) for name, mod in _quant_layers(model)}


# ------------------------------------------------------------------------------------------------ training


def qat_lowbit(model: nn.Module, data, train_cfg, out_dir: str | Path, *, spec: Any = None, seed: int = 0,
               meta: dict[str, Any] | None = None, calib_batches: int = 8, show_progress: bool = False):
    """Low-bit QAT starting from the float ``model`` (a trained checkpoint): convert, calibrate, fine-tune.

    ``model`` is a float model (converted with ``spec``) or already the output of ``to_lowbit``. Training is
    edgecnn's ``fit`` with ``amp='off'`` (Brevitas' fake quantization runs in fp32) and ``channels_last`` off.
    Returns ``(quantized model with the best validation weights, FitResult)``. Checkpoints hold the Brevitas
    state dict (weights, BN, learned activation scales) under the float model's names; rebuild with
    ``to_lowbit(float_model, spec, ...)`` then ``load_state_dict``.
    """
    from edgecnn.data.batches import iterate_batches
    from edgecnn.train.checkpoint import read_checkpoint
    from edgecnn.train.trainer import fit

    if not getattr(type(model), "_edgecnn_lowbit", False):
        calib = []
        for x, _ in iterate_batches(data.splits["train"], min(64, train_cfg.batch_size), data.normalization,
                                    shuffle=True, seed=seed, channels_last=False):
            calib.append(x)
            if len(calib) >= calib_batches:
                break
        model = to_lowbit(model, spec, data.image_size, calib=calib or None)
    cfg = train_cfg.model_copy(update={"amp": "off", "channels_last": False}) \
        if hasattr(train_cfg, "model_copy") else replace(train_cfg, amp="off", channels_last=False)
    plan, used = getattr(model, "lowbit_plan", None), getattr(model, "lowbit_spec", None)
    meta = {**(meta or {}), "lowbit": plan.to_dict() if plan is not None else None,
            "lowbit_spec": used.to_dict() if used is not None else None}
    result = fit(model, data, cfg, out_dir, seed=seed, meta=meta, show_progress=show_progress)
    state, _, _ = read_checkpoint(result.best_checkpoint)
    model.load_state_dict(state)
    return model.eval(), result


def load_lowbit_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a QAT checkpoint written by ``qat_lowbit``: float model from the meta, ``to_lowbit`` with the
    stored spec, then the Brevitas state dict (strict). Returns (model in eval mode, meta).

    edgecnn's ``load_checkpoint`` cannot read these files: their state dict has the quantizers' keys.
    """
    from edgecnn.train.checkpoint import load_state_strict, model_from_meta, read_checkpoint

    state, _, meta = read_checkpoint(path)
    if not meta.get("lowbit_spec"):
        raise EdgeCNNError(f"{path} is not a low-bit checkpoint (no lowbit_spec in its metadata); use load_checkpoint")
    model = to_lowbit(model_from_meta(meta), meta["lowbit_spec"], meta["input_size"])
    return load_state_strict(model, state, path), meta
