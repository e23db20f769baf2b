"""Low-bit precision names and the per-layer ``bits`` spec (parsing, and resolution against a float model into a
LowBitPlan); torch only, so specs can be checked without Brevitas.

Precision names: ``wXaY`` (X, Y in 1..8) = X-bit weights, Y-bit activations; ``binary`` = w1a8; ``ternary`` = w2a8
(narrow range: {-s, 0, +s} per output channel, the same quantizer as w2); ``binary-aY`` / ``ternary-aY`` set the
activation bits. Spec: ``{default: {w: 1, a: 4}, first: {w: 4}, last: {w: 4}, "features.3": {w: 2}}``; keys are
``default``, ``first`` / ``last`` (the first / last Conv2d or Linear in forward order) and module names (a layer, or a
container: every Conv2d/Linear inside it); entries are ``{w, a}`` (missing fields inherit) or precision names.
Precedence: default < first/last < container names (outer first) < layer names. ``a`` = bits of the activation after
the layer (the ReLU after its BN; for a residual block's second conv the ReLU after the add): an error on a named layer
without one, ignored with a note on first/last. The network input is always 8-bit signed. Model-wide keys:
``scaling: float | power_of_two`` (power-of-two scales make quantized arithmetic exact in float32, so with
``fold_bn`` QONNX matches PyTorch; hls4ml and FINN map them to shifts) and ``fold_bn: true`` (fold every
Conv2d -> BatchNorm2d pair into one biased conv before quantizing).
"""
from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.models.profile import example_input

MIN_BITS, MAX_BITS = 1, 8
INPUT_BITS = 8
ROLE_KEYS = ("default", "first", "last")
MODEL_KEYS = ("scaling", "fold_bn", "residual")  # spec keys that apply to the whole model
RESIDUALS = ("separate", "shared")  # residual adds: each input on its own grid, or both on one (FINN builds these)
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
    residual: str = "separate"  # 'separate' | 'shared' (RESIDUALS)

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
                   _parse_fold_bn(spec.get("fold_bn", False)), _parse_residual(spec.get("residual", "separate")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"default": {"w": self.default.w, "a": self.default.a}}
        for key, entry in (("first", self.first), ("last", self.last), *self.layers.items()):
            if entry is not None:
                out[key] = {k: v for k, v in (("w", entry.w), ("a", entry.a)) if v is not None}
        if self.scaling != "float":  # defaults are left out: specs (and stage hashes) of earlier runs stay the same
            out["scaling"] = self.scaling
        if self.fold_bn:
            out["fold_bn"] = True
        if self.residual != "separate":
            out["residual"] = self.residual
        return out


def _parse_scaling(value: Any) -> str:
    scaling = _SCALING_ALIASES.get(str(value).strip().lower())
    if scaling is None:
        raise EdgeCNNError(f"bits: scaling={value!r} is not a scaling; use {' or '.join(SCALINGS)}")
    return scaling


def _parse_residual(value: Any) -> str:
    if value not in RESIDUALS:
        raise EdgeCNNError(f"bits: residual={value!r} is not a residual mode; use separate (each input of a residual "
                           "add on its own grid) or shared (both on one grid, as FINN needs to build the add)")
    return value


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
    skip_source: str | None = None  # activation whose grid the add's other input is on (residual blocks)

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
    skip_source: str | None = None  # the activation whose output is the add's other input (through max-pools)


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
                flow.skip_source = _activation_before(nxt, cur, modules)
                cur = nxt
                continue
            break
        if flow.activation is None:
            flow.branch_end = None
        flows[node.target] = flow
    return order, flows, acts


def activation_feeding(node, modules: dict[str, nn.Module]) -> str | None:
    """The activation module whose output reaches the FX ``node`` (a tensor of the traced graph) through max-pools,
    dropouts and identities, which keep a quantizer's grid; None when something else produces it."""
    src = node
    while src is not None and src.op == "call_module" and isinstance(modules.get(src.target),
                                                                     (nn.MaxPool2d, nn.Dropout, nn.Identity)):
        src = src.args[0]
    if src is not None and src.op == "call_module" and isinstance(modules.get(src.target), _ACTIVATIONS):
        return src.target
    return None


def _activation_before(add, branch, modules: dict[str, nn.Module]) -> str | None:
    """The activation whose output reaches ``add`` by its other input than ``branch`` (activation_feeding)."""
    other = [a for a in add.args if a is not branch and hasattr(a, "op")]
    return activation_feeding(other[0], modules) if len(other) == 1 else None


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
        order, flows, acts = _analyse_hooks(model, example_input(model, input_size))
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
        if flow.activation is not None and a is not None:
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
        layers.append(LayerPlan(name, kind, int(bits.w), a, flow.activation, role, branch,
                                flow.skip_source if branch else None))
    return LowBitPlan(layers, act_bits, INPUT_BITS, notes)
