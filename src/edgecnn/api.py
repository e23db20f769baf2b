"""Public verb for the train stage alone (same code path as `edgecnn run`)."""
from __future__ import annotations

from typing import Any

from edgecnn.config import ExperimentConfig


def train(cfg: ExperimentConfig, *, resume: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Run the data and train stages of ``cfg`` (the same code path as `edgecnn run`); returns the fit record."""
    from edgecnn.data.prepare import prepare_data
    from edgecnn.pipeline import prepare_run_dir, train_stage

    run_dir = prepare_run_dir(cfg)
    data = prepare_data(cfg.data, cfg.seed, run_dir / "split.json")
    fit, _ = train_stage(cfg, data, run_dir, resume=resume, show_progress=show_progress)
    return fit
