"""Base of every options model (unknown keys are errors) and one-line messages for validation errors."""
from __future__ import annotations

from typing import Annotated, Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from edgecnn.errors import EdgeCNNError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """An options section: unknown keys are rejected (with did-you-mean), never silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _fields_at(loc: tuple, model: type[BaseModel]) -> list[str]:
    """Field names valid at the parent of ``loc`` (to suggest close matches for an unknown key)."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        for arg in get_args(current):  # Optional sections: look inside `X | None`
            if hasattr(arg, "model_fields"):
                current = arg
    return list(getattr(current, "model_fields", {}))


def format_validation_error(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per problem, each naming the key path, the source and (for unknown keys) the close matches."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # a mapping's key appears in the path, and pydantic adds "[key]" when the key itself is wrong: keep the
        # line short whatever the user wrote there
        key = ".".join(_short(p) for p in loc if p != "[key]")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'{did_you_mean(str(loc[-1]), _fields_at(loc, root))}")
        else:
            lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return "; ".join(lines)


def _short(part: object, limit: int = 40) -> str:
    text = str(part)
    return text if len(text) <= limit else f"{text[:limit - 10]}...({len(text)} chars)"


#: More values than any experiment needs: a YAML file past it is an alias bomb (a few lines that expand to
#: gigabytes when the resolved configuration is written out).
MAX_YAML_VALUES = 200_000


def check_yaml_size(data: Any, source: str, limit: int = MAX_YAML_VALUES) -> Any:
    """``data`` (as read by yaml.safe_load) when it expands to at most ``limit`` values counting every alias
    reference as a copy, as writing it out would; else a one-line EdgeCNNError. Linear time: each shared node is
    counted once and multiplied, never walked again; a node that contains itself is refused too."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise EdgeCNNError(f"{source}: a YAML alias refers to a node that contains it; write the values out")
        active.add(key)
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for item in items:
            total += size(item)
            if total > limit:
                raise EdgeCNNError(f"{source}: the YAML expands to more than {limit:,} values (aliases repeated "
                                   "inside aliases); write the configuration out without nested aliases")
        active.discard(key)
        sizes[key] = total
        return total

    size(data)
    return data


def validate(model: type[M], data: Any, source: str) -> M:
    """``model.model_validate(data)`` with a one-line EdgeCNNError naming ``source`` instead of a traceback."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EdgeCNNError(format_validation_error(exc, source, model)) from None


def overrides_model(base: type[BaseModel], name: str) -> type[StrictModel]:
    """A model with every field of ``base`` optional (default unset), with the same constraints: typed overrides
    of a section, so a misspelt key fails when the config is read, not after hours of training."""
    fields: dict[str, Any] = {}
    for field_name, info in base.model_fields.items():
        annotation: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[field_name] = (annotation | None, None)
    return create_model(name, __base__=StrictModel, __doc__=f"Overrides of {base.__name__} (unset keys inherit).",
                        **fields)


def apply_overrides(base: M, overrides: BaseModel | None, source: str = "overrides") -> M:
    """``base`` with the keys set in ``overrides`` replaced, validated again as a whole."""
    if overrides is None:
        return base
    return validate(type(base), {**base.model_dump(), **overrides.model_dump(exclude_unset=True)}, source)
