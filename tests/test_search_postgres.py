"""The search on a real PostgreSQL server: two worker processes on one study, and a worker killed with SIGKILL
mid-trial whose trial is failed and re-queued after the heartbeat grace period. The server comes from
EDGECNN_TEST_POSTGRES_URL (`.ci/run` starts one); without it these tests skip, unless EDGECNN_REQUIRE_POSTGRES
is set (CI), where they fail."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import require

from .test_search import _cfg

optuna = require("optuna", "search")
URL = os.environ.get("EDGECNN_TEST_POSTGRES_URL")


@pytest.fixture(scope="module")
def postgres_url():
    if not URL:
        if os.environ.get("EDGECNN_REQUIRE_POSTGRES"):
            pytest.fail("EDGECNN_REQUIRE_POSTGRES is set but EDGECNN_TEST_POSTGRES_URL is not")
        pytest.skip("no PostgreSQL server: set EDGECNN_TEST_POSTGRES_URL (.ci/run starts one)")
    try:
        import sqlalchemy as sa

        sa.create_engine(URL).connect().close()
    except Exception as exc:  # noqa: BLE001 - any reason the server is not reachable
        if os.environ.get("EDGECNN_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL at {URL} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL at {URL} is not reachable: {exc}")
    return URL


def test_two_workers_share_one_postgres_study(small_folder, tmp_path, postgres_url):
    from edgecnn.search_runner import search

    study = f"two-{uuid.uuid4().hex[:8]}"
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    cfg = _cfg(small_folder, tmp_path, space=space, trials=6, storage=postgres_url, study=study, workers=2)
    out = search(cfg)
    trials = optuna.load_study(study_name=study, storage=postgres_url).trials
    assert len(trials) >= 6 and out.counts["COMPLETE"] + out.counts["PRUNED"] >= 6
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in trials)
    assert len({t.user_attrs.get("pid") for t in trials if t.state.name == "COMPLETE"}) == 2  # both worked
    # each worker samples from its own seed: with one seed they drew the same learning rates in lock step
    lrs = [t.params["train.lr"] for t in trials]
    assert len(set(lrs)) == len(lrs)


WORKER = """
import sys, yaml
from edgecnn.config import parse_config
from edgecnn.search_runner import search
cfg = parse_config(yaml.safe_load(open(sys.argv[1])))
search(cfg)
"""


def test_killed_worker_trial_is_failed_and_requeued(small_folder, tmp_path, postgres_url):
    import yaml

    from edgecnn.search_runner import search

    study = f"kill-{uuid.uuid4().hex[:8]}"
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    cfg = _cfg(small_folder, tmp_path, space=space, trials=1, storage=postgres_url, study=study, heartbeat_s=1,
               epochs=30)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(path)], cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until its trial is training
        try:
            trials = optuna.load_study(study_name=study, storage=postgres_url).trials
        except KeyError:
            trials = []
        if trials and trials[0].state.name == "RUNNING" and trials[0].user_attrs.get("search_overhead_s"):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the worker never started training its trial")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the grace period (2 heartbeats of 1 s)
    # the killed worker's run-directory lock is taken over (its process is dead); its trial is failed and re-queued
    search(cfg.model_copy(update={"search": cfg.search.model_copy(update={"epochs": 1})}))
    trials = optuna.load_study(study_name=study, storage=postgres_url).trials
    states = [t.state.name for t in trials]
    assert states[0] == "FAIL" and "COMPLETE" in states[1:]
    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    except ImportError:  # Optuna < 4.9
        from optuna.storages import RetryFailedTrialCallback as Retry
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        assert any(Retry.retried_trial_number(t) == 0 for t in trials[1:])


@pytest.fixture()
def own_postgres(monkeypatch):
    """A PostgreSQL server of this test alone (it is stopped mid-search), as .ci/postgres.sh starts one (in a
    folder of its own under the temp folder: as root, the server runs as `postgres`, who cannot enter pytest's)."""
    import shutil
    import tempfile
    from pathlib import Path

    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        if os.environ.get("EDGECNN_REQUIRE_POSTGRES"):
            pytest.fail("EDGECNN_REQUIRE_POSTGRES is set but initdb/pg_ctl are not on PATH")
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="edgecnn-pg-"))
    prefix = []
    if os.getuid() == 0:
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = 55000 + os.getpid() % 400
    subprocess.run([*prefix, "initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    monkeypatch.setenv("EDGECNN_TEST_PG_DIR", str(root / "data"))
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*prefix, "pg_ctl", "-D", str(root / "data"), "-m", "immediate", "-w", "stop"],
                   capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(180)
def test_a_server_that_stops_mid_search_is_a_one_line_error(small_folder, tmp_path, own_postgres):
    from search_helpers import stop_postgres_on_the_second_trial

    from edgecnn.errors import EdgeCNNError
    from edgecnn.search_runner import search

    cfg = _cfg(small_folder, tmp_path, trials=3, storage=own_postgres, study="stops")
    with pytest.raises(EdgeCNNError, match="stopped answering during the search") as err:
        search(cfg, space=stop_postgres_on_the_second_trial)
    assert "\n" not in str(err.value) and "rerun the same command to continue" in str(err.value)
