"""Define-by-run sampling of the space: each dimension becomes an Optuna ``trial.suggest_*`` call, so a
dimension may depend on another one's sampled value (widths per stage up to the sampled depth)."""
from __future__ import annotations

import json
from typing import Any

from edgecnn.errors import EdgeCNNError
from edgecnn.study.options import Dimension


def check_dimension(key: str, dim: Dimension) -> None:
    """A one-line error for a dimension that names no values."""
    if dim.each is not None or dim.length is not None:
        if dim.each is None or dim.length is None:
            raise EdgeCNNError(f"search.space.{key}: a list dimension needs both 'length' and 'each'")
        check_dimension(f"{key}[]", dim.each)
        if isinstance(dim.length, Dimension):
            check_dimension(f"{key}.length", dim.length)
        return
    if dim.choices is not None:
        if not dim.choices:
            raise EdgeCNNError(f"search.space.{key}: 'choices' is empty; give at least one value")
        return
    if dim.low is None or dim.high is None:
        raise EdgeCNNError(f"search.space.{key}: give 'choices: [..]' or 'low' and 'high' (with 'log' or 'step')")
    if dim.high < dim.low:
        raise EdgeCNNError(f"search.space.{key}: high ({dim.high:g}) is below low ({dim.low:g})")


def _bounds(key: str, dim: Dimension) -> tuple[float, float]:
    """(low, high) of a range dimension (check_dimension has made sure both are given)."""
    if dim.low is None or dim.high is None:
        raise EdgeCNNError(f"search.space.{key}: give 'choices: [..]' or 'low' and 'high' (with 'log' or 'step')")
    return dim.low, dim.high


def _is_int(dim: Dimension, key: str = "") -> bool:
    low, high = _bounds(key, dim)
    return float(low).is_integer() and float(high).is_integer() and (dim.step is None or
                                                                    float(dim.step).is_integer())


def suggest(trial: Any, key: str, dim: Dimension, sampled: dict[str, Any]) -> Any:
    """The value of one dimension for ``trial`` (``sampled``: the values drawn so far, for ``length: <key>``)."""
    if dim.each is not None:
        if isinstance(dim.length, str):
            if dim.length not in sampled:
                raise EdgeCNNError(f"search.space.{key}: length '{dim.length}' must be a dimension listed before it")
            n = int(sampled[dim.length])
        elif isinstance(dim.length, Dimension):
            n = int(suggest(trial, f"{key}.length", dim.length, sampled))
        elif dim.length is not None:
            n = int(dim.length)
        else:
            raise EdgeCNNError(f"search.space.{key}: a list dimension needs both 'length' and 'each'")
        return [suggest(trial, f"{key}[{i}]", dim.each, sampled) for i in range(n)]
    if dim.choices is not None:
        if all(c is None or isinstance(c, (bool, int, float, str)) for c in dim.choices):
            return trial.suggest_categorical(key, dim.choices)
        # lists or mappings (e.g. lowbit.variants: [[w4a4], [w2a2]]): Optuna stores, compares and ranks plain
        # values only, so it samples their JSON text and the config gets the value back
        texts = [json.dumps(c, sort_keys=True) for c in dim.choices]
        return json.loads(trial.suggest_categorical(key, texts))
    low, high = _bounds(key, dim)
    if _is_int(dim, key):
        return trial.suggest_int(key, int(low), int(high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(key, float(low), float(high), step=dim.step, log=dim.log)


def sample(trial: Any, space: dict[str, Dimension]) -> dict[str, Any]:
    """{dotted key: value} for every dimension, in the order the space lists them."""
    if not space:
        raise EdgeCNNError("search.space is empty: give at least one key to search, e.g. "
                           "search: {space: {train.lr: {low: 1e-4, high: 1e-2, log: true}}}")
    values: dict[str, Any] = {}
    for key, dim in space.items():
        values[key] = suggest(trial, key, dim, values)
    return values


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config['a']['b']['c'] = value`` for key 'a.b.c' (intermediate mappings created as needed)."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise EdgeCNNError(f"search.space: '{key}' goes through '{part}', which is not a section")
        node = nxt
    node[parts[-1]] = value
