"""edgecnn: CNN image classifiers from data to edge/FPGA-ready artefacts, with measured and estimated costs.

The public API is imported lazily so that `import edgecnn` stays fast and light.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "edgecnn.config",
    "ExperimentConfig": "edgecnn.config",
    "run": "edgecnn.pipeline",
    "train_experiment": "edgecnn.pipeline",
    "evaluate_file": "edgecnn.api",
    "export_model": "edgecnn.api",
    "quantize": "edgecnn.api",
    "bench": "edgecnn.api",
    "create_model": "edgecnn.models.registry",
    "list_models": "edgecnn.models.registry",
    "register_model": "edgecnn.models.registry",
    "profile_model": "edgecnn.models.profile",
    "load_checkpoint": "edgecnn.train.checkpoint",
    "fit": "edgecnn.train.trainer",
    "prepare_data": "edgecnn.data.prepare",
    "write_report": "edgecnn.report.html",
    "EdgeCNNError": "edgecnn.errors",
    "prune": "edgecnn.api",
    "distill": "edgecnn.api",
    "transfer": "edgecnn.train.transfer",
    "estimate": "edgecnn.api",
    "search": "edgecnn.search_runner",
    "list_precisions": "edgecnn.variants.precisions",
    "register_precision": "edgecnn.variants.precisions",
    "CheckpointMeta": "edgecnn.results",
}
# `edgecnn.train` and `edgecnn.export` are subpackages, so those two verbs are exported under other names
_RENAMED = {"train_experiment": "train", "export_model": "export"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgecnn' has no attribute '{name}'")
    value = getattr(import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
