"""The hardware-aware search on Optuna, on the bundled sample: resume by rerunning, infeasible candidates pruned
before any training, a multi-objective Pareto front, and one-line errors for bad input."""
from __future__ import annotations

import json

import pytest
from conftest import require
from typer.testing import CliRunner

from edgecnn.cli import app
from edgecnn.config import parse_config
from edgecnn.errors import EdgeCNNError
from edgecnn.search_runner import search

require("optuna", "search")

SPACE = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
         "model.args.channels": {"length": {"low": 1, "high": 2}, "each": [8, 16]}}


def _cfg(folder, out, **search_opts):
    return parse_config({
        "name": "srch", "output": str(out), "precisions": ["fp32"], "targets": [],
        "data": {"root": str(folder), "image_size": 32, "split": {"val": 0.2, "test": 0.2}},
        "model": {"name": "customnet", "args": {"stem_channels": 8, "blocks": 1}},
        "train": {"batch_size": 32, "amp": "off"},
        "search": {"space": SPACE, "epochs": 1, "trials": 2, **search_opts}})


def test_search_resumes_by_rerunning(small_folder, tmp_path):
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
             "model.args.channels": {"length": {"low": 1, "high": 2}, "each": [8, 16]}}
    cfg = _cfg(small_folder, tmp_path, space=space)
    first = search(cfg)
    assert first.counts["COMPLETE"] + first.counts["PRUNED"] == 2
    again = search(cfg, trials=3)  # the same study continues up to 3 trials
    assert again.counts["COMPLETE"] + again.counts["PRUNED"] == 3
    import optuna

    numbers = [t.number for t in optuna.load_study(study_name="srch", storage=again.storage).trials]
    assert sorted(numbers) == [0, 1, 2]
    summary = json.loads(again.summary_path.read_text())
    assert summary["objectives"] == ["accuracy"] and summary["best"][0]["metrics"]["accuracy"] > 0
    ckpt = summary["best"][0]["checkpoint"]
    assert ckpt.endswith("best.safetensors") and "/search/trial-" in ckpt


def test_infeasible_candidates_are_pruned_before_training(small_folder, tmp_path):
    space = {"model.args.channels": {"length": {"low": 1, "high": 2}, "each": [8, 16]}}
    cfg = _cfg(small_folder, tmp_path, space=space, constraints=["params <= 100"])
    out = search(cfg)
    assert out.counts["PRUNED"] == 2 and out.counts["COMPLETE"] == 0
    import optuna

    trials = optuna.load_study(study_name="srch", storage=out.storage).trials
    assert len(trials) == 2
    for t in trials:
        assert t.user_attrs["pruned_reason"].startswith("infeasible before training: params <= 100")
    assert not list((tmp_path / "srch" / "search").glob("trial-*"))  # no trial reached training


def test_multi_objective_study_returns_a_pareto_front(small_folder, tmp_path):
    space = {"model.args.channels": {"length": {"low": 1, "high": 2}, "each": [8, 16]}}
    cfg = _cfg(small_folder, tmp_path, space=space, objectives=["accuracy", "fps@kv260"], trials=3)
    out = search(cfg)
    summary = json.loads(out.summary_path.read_text())
    assert summary["directions"] == ["maximize", "maximize"]
    assert summary["pareto_front"] and all(len(t["values"]) == 2 for t in summary["pareto_front"])
    assert all(t["metrics"]["fps@kv260"] > 0 for t in summary["pareto_front"])


@pytest.mark.parametrize("search_opts, message", [
    ({"space": {"train.lrr": [0.1]}}, "unknown key 'train.lrr' ('lrr' is not in train — did you mean: lr"),
    ({"space": {"model.args.stem_chanels": [8, 16]}}, "takes no argument 'stem_chanels' — did you mean: stem_channels"),
    ({"space": {}}, "search.space is empty"),
    ({"space": {"train.lr": {"low": 2, "high": 1}}}, "high (1) is below low (2)"),
    ({"space": {"train.lr": [0.1]}, "storage": "notaurl"}, "is not a URL"),
    ({"space": {"train.lr": [0.1]}, "objectives": ["fps"]}, "'fps' needs a hardware target"),
    ({"space": {"train.lr": [0.1]}, "constraints": ["size_kb < lots"]}, "write '<metric> <op> <number>'"),
    ({"space": {"train.lr": [0.1]}, "objectives": ["accuracy", "finn@zcu104-finn"]}, "is a constraint, not an"),
])
def test_bad_input_is_one_line(small_folder, tmp_path, search_opts, message):
    cfg = _cfg(small_folder, tmp_path, **search_opts)
    with pytest.raises(EdgeCNNError) as err:
        search(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_search_errors_exit_2(small_folder, tmp_path):
    import yaml

    cfg = _cfg(small_folder, tmp_path, space={"train.lr": [0.01]})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    bad = CliRunner().invoke(app, ["search", str(path), "--storage", "postgresql://nobody@127.0.0.1:1/none"])
    assert bad.exit_code == 2 and "cannot open search storage" in bad.output
    ok = CliRunner().invoke(app, ["search", str(path), "--trials", "1"])
    assert ok.exit_code == 0, ok.output
    assert "study srch" in " ".join(ok.output.split())


def test_export_best_writes_the_most_accurate_front_trial_as_an_experiment(small_folder, tmp_path):
    """--export-best: the Pareto front's most accurate trial as an ordinary experiment that `edgecnn run` loads."""
    import optuna
    import yaml

    from edgecnn.config import load_config

    cfg = _cfg(small_folder, tmp_path, space={"model.args.channels": {"length": {"low": 1, "high": 2},
                                                                      "each": [8, 16]}},
               objectives=["accuracy", "params"], trials=4)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out_yaml = tmp_path / "best" / "best.yaml"
    ok = CliRunner().invoke(app, ["search", str(path), "--export-best", str(out_yaml)])
    assert ok.exit_code == 0, ok.output
    study = optuna.load_study(study_name="srch", storage=f"sqlite:///{tmp_path / 'srch' / 'search.db'}")
    best = max(study.best_trials, key=lambda t: t.values[0])
    exported = load_config(out_yaml)
    assert exported.search is None and exported.train.epochs == 3  # the full budget, not the search's 1 epoch
    assert exported.model.args["channels"] == best.user_attrs["values"]["model.args.channels"]
    assert exported.name == f"srch-trial{best.number:04d}"
    assert f"Trial {best.number} of search study 'srch'" in out_yaml.read_text()


def test_search_report_has_trials_fronts_importances_and_winners(small_folder, tmp_path):
    """search/report.html: every trial in the table, a Pareto-front plot per estimated FPS target and for size,
    fANOVA importances of the sampled parameters, and the retrained winner's test rows."""
    import re

    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
             "model.args.channels": {"length": {"low": 1, "high": 2}, "each": [8, 16]}}
    from edgecnn.pipeline import run as run_pipeline
    from edgecnn.report.html import write_report

    cfg = _cfg(small_folder, tmp_path, space=space, objectives=["accuracy", "fps@kv260"], trials=4)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    run_pipeline(cfg, show_progress=False)  # the hand-designed model: the experiment as written
    out = search(cfg, retrain_best=1)
    page = out.report_path.read_text()
    assert "<td>hand-designed (this experiment)</td><td>fp32</td>" in page
    index = write_report(tmp_path / "srch").read_text()  # the run's own report links the search page
    assert 'href="../search/report.html"' in index
    assert out.report_path == tmp_path / "srch" / "search" / "report.html"
    trial_rows = re.findall(r"<tr><td>(\d+)</td><td>(COMPLETE|PRUNED|FAIL)</td>", page)
    assert sorted(int(n) for n, _ in trial_rows) == list(range(4))
    for plot in ("front-fps-kv260.png", "front-size_kb.png"):
        assert f'src="{plot}"' in page and (out.report_path.parent / plot).stat().st_size > 1000
    assert "train.lr" in page.split("Parameter importances")[1].split("<h2>")[0]  # a sampled parameter is ranked
    winner = out.retrained[0].name
    assert f"<td>{winner}</td><td>fp32</td>" in page


def test_retrain_best_runs_the_pipeline_with_the_full_budget(small_folder, tmp_path):
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    cfg = _cfg(small_folder, tmp_path, space=space, trials=2)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    out = search(cfg, retrain_best=1)
    assert len(out.retrained) == 1 and out.retrained[0].name.startswith("srch-trial")
    fit = json.loads((out.retrained[0] / "train" / "stage.json").read_text())["outputs"]
    assert fit["epochs_run"] == 2  # the experiment's budget, not the search's 1 epoch
    assert (out.retrained[0] / "results.csv").exists()


def test_per_layer_bits_are_a_search_dimension(small_folder, tmp_path, monkeypatch):
    """The low-bit spec's per-layer bits are ordinary dotted keys of the space: each trial's dataflow estimate is
    priced on the bits it sampled (before any training; an impossible constraint prunes every trial)."""
    import edgecnn.compress.lowbit as lowbit

    used = []
    real = lowbit.to_lowbit

    def spy(model, spec, *args, **kwargs):
        used.append(spec)
        return real(model, spec, *args, **kwargs)

    monkeypatch.setattr(lowbit, "to_lowbit", spy)
    space = {"lowbit.specs.searched.default": ["w2a2", "w4a4"], "lowbit.specs.searched.first.w": [4, 8]}
    cfg = _cfg(small_folder, tmp_path, space=space, objectives=["accuracy", "fps@zcu104-finn"],
               constraints=["fps@zcu104-finn >= 1e15"], trials=6, sampler="random")
    cfg = parse_config({**cfg.model_dump(mode="json"),
                        "lowbit": {"variants": ["searched"], "specs": {"searched": {"default": "w4a4"}}}})
    out = search(cfg)
    assert out.counts["PRUNED"] == 6 and not list((tmp_path / "srch" / "search").glob("trial-*"))
    import optuna

    trials = optuna.load_study(study_name="srch", storage=out.storage).trials
    assert len(trials) == len(used) == 6  # zip below would stop at the shorter: every trial built its spec
    for trial, spec in zip(trials, used):
        values = trial.user_attrs["values"]
        assert spec == {"default": values["lowbit.specs.searched.default"],
                        "first": {"w": values["lowbit.specs.searched.first.w"]}}
    fps = {}
    for trial in trials:
        key = tuple(trial.user_attrs["values"].values())
        fps.setdefault(key, set()).add(trial.user_attrs["metrics"]["fps@zcu104-finn"])
    assert all(len(v) == 1 for v in fps.values())  # the same bits, the same estimate
    by_default = {}
    for (default, _), value in fps.items():
        by_default.setdefault(default, set()).update(value)
    # the sampler is seeded: both defaults are drawn; fewer bits per MAC let the dataflow design unfold further
    assert set(by_default) == {"w2a2", "w4a4"} and min(by_default["w2a2"]) > 2 * max(by_default["w4a4"])


def test_trial_quota_counts_trials_other_workers_are_running():
    """Another worker's running trial counts toward --trials: no surplus trial runs alone at the end."""
    import optuna

    from edgecnn.search_runner import trial_quota

    study = optuna.create_study()
    elsewhere = study.ask()  # a trial another worker is training
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10, callbacks=[trial_quota(4)])
    assert len(study.trials) == 4  # 3 here + the running one (counting finished trials only gave 5)
    study.tell(elsewhere, 0.5)
    queued = optuna.create_study()
    for x in (0.1, 0.2, 0.3):
        queued.enqueue_trial({"x": x})  # queued trials (e.g. re-queued after a killed worker) still run
    queued.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=10, callbacks=[trial_quota(3)])
    assert sorted(t.params["x"] for t in queued.trials) == [0.1, 0.2, 0.3]


def lr_and_depth(trial):
    """A define-by-run space in Python: the depth decides how many widths are sampled."""
    depth = trial.suggest_int("depth", 1, 2)
    return {"train.lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
            "model.args.channels": [trial.suggest_categorical(f"width{i}", [8, 16]) for i in range(depth)]}


def test_a_python_space_function_replaces_the_yaml_space(small_folder, tmp_path):
    import optuna

    cfg = _cfg(small_folder, tmp_path, space={}, trials=3)
    out = search(cfg, space=lr_and_depth)
    assert out.counts["COMPLETE"] == 3
    study = optuna.load_study(study_name="srch", storage=out.storage)
    assert len(study.trials) == 3
    for t in study.trials:
        depth = t.params["depth"]
        assert t.user_attrs["values"]["model.args.channels"] == [t.params[f"width{i}"] for i in range(depth)]
        assert t.user_attrs["metrics"]["params"] > 0  # the candidate was built with those widths
    with pytest.raises(EdgeCNNError, match="unknown key 'train.lrr'"):
        search(_cfg(small_folder, tmp_path / "bad", space={}, trials=1),
               space=lambda trial: {"train.lrr": trial.suggest_float("lr", 1e-3, 1e-2)})
    with pytest.raises(EdgeCNNError, match="define it at module level"):
        search(_cfg(small_folder, tmp_path / "many", space={}, trials=1, workers=2),
               space=lambda trial: {"train.lr": 0.01})


def test_workers_sample_from_their_own_seeds():
    from edgecnn.search_runner import worker_seed
    from edgecnn.study.options import SearchConfig

    space = {"train.lr": [0.1]}
    lone = SearchConfig(space=space, seed=7)
    assert worker_seed(lone, "sqlite:///run/search.db", 0) == 7  # one worker on its own file: reproducible
    shared = worker_seed(lone, "postgresql://u@h/db", 0)  # others may join by URL: not the configured seed
    assert shared != 7 and worker_seed(lone, "postgresql://u@h/db", 0) == shared
    many = SearchConfig(space=space, seed=7, workers=4)
    assert len({worker_seed(many, "sqlite:///run/search.db", i) for i in range(4)}) == 4


def test_a_repeated_candidate_reuses_the_finished_trial(small_folder, tmp_path, monkeypatch):
    """A space of one candidate: the first trial trains, the repeats take its result without training."""
    import edgecnn.train.trainer as trainer

    calls = []
    real = trainer.fit

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "fit", counting_fit)
    cfg = _cfg(small_folder, tmp_path, space={"train.lr": [0.003]}, objectives=["accuracy", "params"], trials=3)
    out = search(cfg, retrain_best=2)
    import optuna

    trials = optuna.load_study(study_name="srch", storage=out.storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len(calls) == 1 + 1  # one search trial, one retraining (the front's three twins retrain once)
    assert [t.user_attrs.get("repeat_of") for t in trials] == [None, 0, 0]
    assert all(t.values == trials[0].values for t in trials)
    assert len(out.retrained) == 1


@pytest.mark.parametrize("text", ["fits@zcu104-finn", "finn@zcu104-finn"])
def test_yes_no_constraints_hold_only_for_one(text):
    from edgecnn.study.objectives import parse_constraint

    constraint = parse_constraint(text)
    assert str(constraint) == text and constraint.holds(1.0) and not constraint.holds(0.0)


def test_finn_constraint_without_finn_is_one_line(small_folder, tmp_path, monkeypatch):
    """``finn@T`` needs FINN's own verdict on every candidate: without FINN's environment the search stops with the
    command that installs it, before any training."""
    monkeypatch.delenv("EDGECNN_FINN_PYTHON", raising=False)
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    raw = _cfg(small_folder, tmp_path, space={"train.lr": [0.01]}, constraints=["finn@zcu104-finn"])
    cfg = parse_config({**raw.model_dump(mode="json"), "lowbit": {"variants": ["w4a4"]}})
    with pytest.raises(EdgeCNNError, match="edgecnn tools install finn") as err:
        search(cfg)
    assert "\n" not in str(err.value)
