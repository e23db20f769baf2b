"""Search space functions for tests that need them in spawned workers: a worker imports a space function by its
module, so it cannot live in a test module (pytest imports those under names workers cannot import)."""
from __future__ import annotations

import os
import signal


def die(trial):
    """Kills the worker that samples it, as an out-of-memory kill or kill -9 would."""
    os.kill(os.getpid(), signal.SIGKILL)


def stop_postgres_on_the_second_trial(trial):
    """Samples a learning rate; on the second trial first stops the PostgreSQL server the study lives in (its data
    folder in EDGECNN_TEST_PG_DIR), as a server crash or restart would."""
    import subprocess

    if trial.number >= 1:
        data = os.environ["EDGECNN_TEST_PG_DIR"]
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*prefix, "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True,
                       check=True)
    return {"train.lr": trial.suggest_float("train.lr", 1e-3, 1e-2, log=True)}
