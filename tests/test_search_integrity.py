"""A search study means what it says: its values are those of the objectives it was made for, it holds the trials
asked for (not one more on a rerun, not one per worker), workers on one study draw different candidates, and a
worker that dies is reported, not passed over with exit 0."""
from __future__ import annotations

import pytest
from conftest import require

from edgecnn.config import parse_config
from edgecnn.errors import EdgeCNNError
from edgecnn.search_runner import search, trial_shares, worker_seed

require("optuna", "search")


def _cfg(folder, out, **search_opts):
    return parse_config({
        "name": "integrity", "output": str(out), "precisions": ["fp32"], "targets": [],
        "data": {"root": str(folder), "image_size": 16, "limit_per_class": 6, "split": {"val": 0.25, "test": 0.25}},
        "model": {"name": "customnet", "args": {"stem_channels": 4, "channels": [8], "blocks": 0}},
        "train": {"batch_size": 16, "amp": "off", "channels_last": False},
        "search": {"space": {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}, "epochs": 1, "trials": 1,
                   **search_opts}})


def _total(outcome) -> int:
    return sum(outcome.counts.values())


def test_a_study_reopened_with_another_objective_of_the_same_direction_is_refused(small_folder, tmp_path):
    search(_cfg(small_folder, tmp_path, objectives=["params"]))
    with pytest.raises(EdgeCNNError, match="was made for params, not macs"):
        search(_cfg(small_folder, tmp_path, objectives=["macs"]))


def test_a_finished_study_runs_no_more_trials_and_workers_do_not_multiply_them(small_folder, tmp_path):
    cfg = _cfg(small_folder, tmp_path, trials=2)
    assert _total(search(cfg)) == 2
    assert _total(search(cfg)) == 2  # rerunning a finished study runs no trial
    other = _cfg(small_folder, tmp_path / "w", trials=1, workers=2)
    assert _total(search(other)) == 1  # --workers 2 --trials 1: one trial, not one per worker


@pytest.mark.parametrize("trials, finished, workers, shares", [
    (1, 0, 3, [1]), (5, 0, 2, [3, 2]), (5, 5, 2, [0]), (5, 7, 1, [0]), (2, 1, 4, [1]), (8, 2, 4, [2, 2, 1, 1])])
def test_trial_shares(trials, finished, workers, shares):
    assert trial_shares(trials, finished, workers) == shares


def test_only_a_lone_worker_opening_a_new_study_keeps_the_configured_seed(small_folder, tmp_path):
    search_cfg = _cfg(small_folder, tmp_path).search
    assert worker_seed(search_cfg, "sqlite:///x.db", 0, fresh=True) == search_cfg.seed
    joining = worker_seed(search_cfg, "sqlite:///x.db", 0, fresh=False)
    assert joining != search_cfg.seed  # a second lone worker on a study with trials draws other candidates


def test_a_worker_that_dies_is_reported(small_folder, tmp_path):
    from search_helpers import die

    outcome = search(_cfg(small_folder, tmp_path, trials=2, workers=2), space=die)
    assert len(outcome.lost_workers) == 2 and "signal SIGKILL" in outcome.lost_workers[0]


def test_list_valued_choices_are_sampled_and_reported(small_folder, tmp_path):
    """A choice between lists (as the README's lowbit.variants: [[w4a4], [w2a2]]): every trial gets a list and the
    report, parameter importances included, is written."""
    space = {"model.args.channels": {"choices": [[8], [8, 16]]}, "train.lr": {"low": 1e-3, "high": 1e-2}}
    outcome = search(_cfg(small_folder, tmp_path, trials=3, space=space, sampler="random"))
    assert outcome.report_path is not None and outcome.report_path.exists()
    sampled = [row["sampled"]["model.args.channels"] for row in outcome.best]
    assert sampled and all(s in ([8], [8, 16]) for s in sampled)


def test_an_unwritable_export_best_and_a_bad_study_name_fail_before_any_trial(small_folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EdgeCNNError, match="--export-best .* is not a writable folder"):
        search(_cfg(small_folder, tmp_path / "runs"), export_best=blocker / "sub" / "best.yaml")
    with pytest.raises(EdgeCNNError, match="--export-best .* is a folder"):
        search(_cfg(small_folder, tmp_path / "runs"), export_best=tmp_path)
    with pytest.raises(EdgeCNNError, match="--study '../x' cannot be a file or folder name"):
        search(_cfg(small_folder, tmp_path / "runs"), study="../x")
    assert not (tmp_path / "runs").exists()  # no run directory, no study, no trial
