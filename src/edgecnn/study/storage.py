"""Optuna studies in any storage URL: a SQLite file by default, PostgreSQL for many workers on many machines.

Workers beat a heartbeat; a trial whose worker stopped beating (killed) is marked FAIL by Optuna and re-queued
by Optuna's retry callback, so no trial stays RUNNING forever.
"""
from __future__ import annotations

from typing import Any

from edgecnn.errors import EdgeCNNError

EXTRA = "pip install 'edgecnn[search]'"


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise EdgeCNNError(f"the search needs Optuna: {EXTRA}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_storage(url: str, heartbeat_s: int, retries: int) -> Any:
    """An Optuna RDB storage with heartbeats and re-queueing of failed trials; one-line errors for bad URLs."""
    optuna = optuna_module()
    try:  # Optuna >= 4.9 names it after heartbeats; older releases call it RetryFailedTrialCallback
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
        callback_kw = "heartbeat_stale_trial_callback"
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback as Retry
        callback_kw = "failed_trial_callback"

    if "://" not in url:
        raise EdgeCNNError(f"search storage '{url}' is not a URL; use sqlite:///path/study.db or "
                           "postgresql://user@host/db")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise EdgeCNNError(f"search storage '{url}': unsupported scheme '{scheme}'; use sqlite:///… or "
                           "postgresql://…")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are stable enough
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                engine_kwargs={"pool_pre_ping": True} if scheme != "sqlite" else None,
                **{callback_kw: Retry(max_retry=retries)})
    except ModuleNotFoundError as exc:
        raise EdgeCNNError(f"search storage '{url}' needs the database driver {exc.name}: "
                           "pip install 'edgecnn[postgres]'") from None
    except Exception as exc:  # SQLAlchemy's OperationalError etc.: say what and where, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeCNNError(f"cannot open search storage '{url}': {first[:200]}") from None
