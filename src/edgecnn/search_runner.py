"""`edgecnn search`: one Optuna study over the experiment's ``search:`` space.

A trial samples the space (define-by-run), builds the candidate untrained, prices it (params, MACs, size, CPU
latency, hardware estimates on the named targets), prunes it without training when it breaks a constraint,
trains it with the search's short budget on the run's train split (validation only: the test split is never
read), reports its validation curve to Optuna's pruner, and returns its objectives. The study lives in an Optuna
storage (a SQLite file in the run directory by default), so rerunning the command continues it and any number
of workers can join it through a PostgreSQL URL.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import pickle
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin

from edgecnn.config import ExperimentConfig
from edgecnn.errors import EdgeCNNError, did_you_mean
from edgecnn.names import check_name, check_output_file
from edgecnn.processes import clamp_workers, die_with_parent
from edgecnn.study.objectives import Constraint, Metric, parse_constraint, parse_objectives, parse_timeout
from edgecnn.study.options import SearchConfig
from edgecnn.study.space import check_dimension, sample, set_dotted
from edgecnn.study.storage import make_storage, optuna_module

log = logging.getLogger(__name__)
#: A define-by-run space: Optuna trial -> {dotted config key: value}.
SpaceFunction = Callable[[Any], dict[str, Any]]


@dataclass
class SearchOutcome:
    """What a search left: its storage and study, the trials by state, and the best trials (Pareto front)."""

    storage: str
    study: str
    counts: dict[str, int]
    best: list[dict[str, Any]] = field(default_factory=list)
    summary_path: Path | None = None
    retrained: list[Path] = field(default_factory=list)  # run directories of --retrain-best
    exported: Path | None = None  # the experiment YAML of --export-best
    report_path: Path | None = None  # search/report.html: trials, Pareto fronts, importances, winners
    lost_workers: list[str] = field(default_factory=list)  # workers that died (killed, out of memory): one line each


def search_section(cfg: ExperimentConfig) -> SearchConfig:
    """The experiment's search section (a search run is started only for an experiment that has one)."""
    if cfg.search is None:
        raise EdgeCNNError("the experiment has no search section; add one to run `edgecnn search`")
    return cfg.search


def check_space_keys(cfg: ExperimentConfig, search: SearchConfig) -> None:
    """Every searched key names a config field (below a free-form mapping such as model.args or lowbit.specs, the
    model builder or the spec parser checks the rest); one line with the close names."""
    for key, dim in search.space.items():
        check_dimension(key, dim)
        check_key(cfg, key)
        if key.startswith("model.args.") and "model.name" not in search.space:
            _check_model_arg(cfg.model.name, key.split(".")[2], key)


def _check_model_arg(model: str, arg: str, key: str) -> None:
    """A searched model argument the model does not take would fail every trial's build (each trial pruned, the
    search ending with nothing): a configuration error before the first trial."""
    from edgecnn.models.registry import model_arguments

    accepted = model_arguments(model)
    if accepted is not None and arg not in accepted:
        raise EdgeCNNError(f"search.space: '{key}': model {model} takes no argument '{arg}'"
                           f"{did_you_mean(arg, accepted)} (its arguments: {', '.join(accepted) or 'none'})")


def check_key(cfg: ExperimentConfig, key: str) -> None:
    """A dotted key names a config field, or lies below a free-form mapping; else a one-line error."""
    node: Any = type(cfg)
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = getattr(node, "model_fields", None)
        if fields is None:  # a free-form mapping (model.args): the model builder checks it
            break
        if part not in fields:
            where = ".".join(parts[:i]) or "the experiment"
            raise EdgeCNNError(f"search.space: unknown key '{key}' ('{part}' is not in {where}"
                               f"{did_you_mean(part, list(fields))})")
        annotation = fields[part].annotation
        options = getattr(annotation, "__args__", (annotation,)) if get_origin(annotation) is not dict \
            else (annotation,)
        if any(get_origin(a) is dict for a in options):
            break
        node = next((a for a in options if hasattr(a, "model_fields")), None)
        if node is None and i < len(parts) - 1:
            raise EdgeCNNError(f"search.space: unknown key '{key}' ('{part}' has no sub-keys)")
        if node is None:
            break


def trial_config(cfg: ExperimentConfig, values: dict[str, Any], epochs: int) -> ExperimentConfig:
    """The experiment with the sampled values and the search's training budget (validated as a whole)."""
    from edgecnn.schema import validate

    raw = cfg.model_dump(mode="json", exclude={"search"})
    for key, value in values.items():
        set_dotted(raw, key, value)
    raw["train"]["epochs"] = epochs
    return validate(ExperimentConfig, raw, "search trial")


def candidate_metrics(cfg: ExperimentConfig, data: Any, needed: list[Metric]) -> tuple[Any, dict[str, float]]:
    """The untrained candidate (built as the pipeline's train stage builds it) and every metric known before
    training that the objectives/constraints need."""
    from edgecnn.models.profile import profile_model
    from edgecnn.train.trainer import new_model

    model = new_model(cfg.model, data, cfg.seed).eval()
    prof = profile_model(model, data.image_size)
    out: dict[str, float] = {"params": float(prof.params), "macs": float(prof.macs),
                             "size_kb": round(prof.params / 1024, 2)}
    if any(m.name == "cpu_ms" for m in needed):
        from edgecnn.measure.latency import torch_latency

        out["cpu_ms"] = torch_latency(model, data.image_size, 1, repeats=10, warmup=2).median_ms
    targets = sorted({m.target for m in needed if m.target})
    if targets:
        finn = {m.target for m in needed if m.name == "finn" and m.target}
        out.update(_hardware_metrics(cfg, model, data, targets, finn))
    return model, out


def _hardware_metrics(cfg: ExperimentConfig, model: Any, data: Any, targets: list[str],
                      finn: AbstractSet[str] = frozenset()) -> dict[str, float]:
    """Estimates of the untrained candidate: INT8 graph for DPU/systolic/CPU targets, its low-bit QONNX graph
    (the first precision of ``lowbit.variants``, as FINN builds it) for dataflow targets, with FINN's verdict
    (``finn@T``) where FINN ran: always for the targets in ``finn`` (a constraint), else when it is installed."""
    from edgecnn.hw import estimate, get_target
    from edgecnn.hw.graph import module_graph

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-search-") as tmp:
        files: dict[str, Any] = {}
        for name in targets:
            kind = get_target(name).kind
            if kind == "dataflow" and "dataflow" not in files:
                files["dataflow"] = _lowbit_file(cfg, model, data.image_size, Path(tmp))
            elif kind != "dataflow" and "float" not in files:
                files["float"] = module_graph(model, (data.image_size, data.image_size), "candidate")
            est = estimate(files["dataflow" if kind == "dataflow" else "float"], name,
                           finn=True if name in finn else None)
            row = est.summary_row()
            out[f"fps@{name}"] = float(est.fps)
            out[f"latency_ms@{name}"] = float(est.latency_ms)
            out[f"energy_mj@{name}"] = float(est.energy_mj_per_image)
            if kind == "dataflow":
                out[f"fits@{name}"] = 1.0 if row.get("fits") else 0.0
                if "finn" in est.extra:
                    out[f"finn@{name}"] = 1.0 if est.extra["finn_deployable"] else 0.0
    return out


def _lowbit_file(cfg: ExperimentConfig, model: Any, size: int, tmp: Path) -> Path:
    from edgecnn.compress.lowbit import finn_ready, to_lowbit
    from edgecnn.compress.options import HETERO_SPEC
    from edgecnn.export.qonnx import export_qonnx

    lowbit = cfg.lowbit
    variants = lowbit.variants if lowbit is not None else []
    if lowbit is None or not variants:
        raise EdgeCNNError("dataflow objectives/constraints price the low-bit file: set lowbit.variants (or search "
                           "it, e.g. lowbit.variants: [[w4a4], [w2a2]])")
    name = variants[0]
    spec = lowbit.specs.get(name) or (HETERO_SPEC if name == "hetero" else name)
    qmodel = to_lowbit(model, spec, size)
    with finn_ready(qmodel):
        return export_qonnx(qmodel, tmp / "candidate.qonnx.onnx", size)


class _Objective:
    """The trial function (picklable, so worker processes can run it)."""

    def __init__(self, cfg: ExperimentConfig, data: Any, run_dir: Path, objectives: list[Metric],
                 constraints: list[Constraint], space: SpaceFunction | None = None) -> None:
        self.cfg, self.data, self.run_dir = cfg, data, run_dir
        self.objectives, self.constraints, self.space = objectives, constraints, space

    def __call__(self, trial: Any) -> Any:
        optuna = optuna_module()
        from edgecnn.train.trainer import train_model

        search = search_section(self.cfg)
        t0 = time.perf_counter()
        values = sample(trial, search.space) if self.space is None else space_values(self.cfg, self.space, trial)
        trial.set_user_attr("values", values)
        trial.set_user_attr("pid", os.getpid())
        single = len(self.objectives) == 1
        earlier = _finished_twin(trial, values)
        if earlier is not None:  # a sampler may draw a finished candidate again; training is seeded, so it
            # would give the same result: reuse it (Optuna's FAQ advice) instead of training again
            for key in ("metrics", "checkpoint"):
                trial.set_user_attr(key, earlier.user_attrs.get(key))
            trial.set_user_attr("repeat_of", earlier.number)
            return earlier.value if single else tuple(earlier.values)
        try:
            cfg = trial_config(self.cfg, values, search.epochs)
            needed = [*self.objectives, *(c.metric for c in self.constraints)]
            model, metrics = candidate_metrics(cfg, self.data, [m for m in needed if m.before_training])
        except EdgeCNNError as exc:  # a combination the config or the model builder refuses
            trial.set_user_attr("pruned_reason", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("metrics", metrics)
        broken = [str(c) for c in self.constraints if not c.holds(metrics[c.metric.key])]
        if broken:
            reason = "infeasible before training: " + "; ".join(f"{b} (is {metrics[b.split()[0]]:g})"
                                                              if " " in b else b for b in broken)
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        trial.set_user_attr("search_overhead_s", round(time.perf_counter() - t0, 3))

        def report(row: dict[str, float]) -> None:
            if single:
                trial.report(row["val_acc"], int(row["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation accuracy {row['val_acc']:.4f} at epoch {row['epoch']}")

        out_dir = self.run_dir / "search" / f"trial-{trial.number:04d}"
        # the training of `edgecnn run`'s train stage, on the candidate priced above
        result = train_model(cfg.model, self.data, cfg.train, out_dir, seed=cfg.seed, experiment=cfg.name,
                             model=model, show_progress=False, on_epoch=report)
        metrics["accuracy"] = float(result.best_val_acc)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("checkpoint", str(result.best_checkpoint))
        trial.set_user_attr("train_s", round(time.perf_counter() - t0, 2))
        return tuple(metrics[m.key] for m in self.objectives) if not single else metrics[self.objectives[0].key]


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def trial_shares(trials: int, finished: int, workers: int) -> list[int]:
    """How many trials each local worker starts: the ``trials`` the study still lacks, split evenly, and no worker
    for which none is left (a finished study starts none; ``--workers 3 --trials 1`` starts one)."""
    remaining = max(0, trials - finished)
    shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    return [s for s in shares if s] or ([0] if not remaining else [])


def _run_workers(cfg: ExperimentConfig, run_dir: Path, url: str, name: str, trials: int, seconds: float | None,
                 space: SpaceFunction | None, plan: list[tuple[int, int]]) -> list[str]:
    """Run the (seed, trials to start) workers: one in this process, several as spawned processes that die with it.
    Returns a line for each worker that did not end normally (killed, out of memory)."""
    args = (cfg.model_dump_json(), str(run_dir), url, name, trials, seconds)
    if len(plan) == 1:
        seed, share = plan[0]
        if share:
            _worker(*args, seed, space, None, share)
        return []
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(*args, seed, space, os.getpid(), share)) for seed, share in plan]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lost = [f"worker {i + 1} of {len(procs)} ended with {_how(p.exitcode)}" for i, p in enumerate(procs)
            if p.exitcode != 0]
    for line in lost:
        log.warning("search: %s; its trial may stay RUNNING until the heartbeat fails it; rerun to finish the study",
                    line)
    return lost


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        return f"signal {signal.Signals(-code).name}" if -code in signal.Signals._value2member_map_ else \
            f"signal {-code}"
    return f"exit code {code}"


def worker_seed(search: SearchConfig, storage_url: str, index: int, fresh: bool = True) -> int:
    """The sampler seed of one worker. A lone worker that opens a new study on its own SQLite file keeps
    ``search.seed``, so its study is reproducible. Every other worker (several local ones, one joining a study that
    has trials, or other machines joining by URL) gets its own seed: with one seed they would draw the same
    candidates in lock step, and their order depends on timing anyway."""
    if search.workers == 1 and storage_url.startswith("sqlite") and fresh:
        return search.seed
    key = f"{search.seed}:{socket.gethostname()}:{os.getpid()}:{index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def _finished_twin(trial: Any, values: dict[str, Any]) -> Any:
    """The first completed trial of the study that sampled exactly ``values`` (None if there is none)."""
    from optuna.trial import TrialState

    for done in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if done.user_attrs.get("values") == values:
            return done
    return None


def _sampler(search: SearchConfig, n_objectives: int, seed: int) -> Any:
    optuna = optuna_module()
    kind = search.sampler if search.sampler != "auto" else ("tpe" if n_objectives == 1 else "nsga2")
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def _pruner(search: SearchConfig) -> Any:
    optuna = optuna_module()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=search.epochs)
    return optuna.pruners.NopPruner()


def open_study(storage_url: str, name: str, search: SearchConfig, objectives: list[Metric],
               seed: int | None = None) -> Any:
    """The named study in the storage (created if new); its sampler draws from ``seed`` (default ``search.seed``)."""
    optuna = optuna_module()
    storage = make_storage(storage_url, search.heartbeat_s, search.retries)
    directions = [m.direction for m in objectives]
    sampler = _sampler(search, len(objectives), search.seed if seed is None else seed)
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                    sampler=sampler, pruner=_pruner(search),
                                    load_if_exists=True)
    except ValueError as exc:  # e.g. the stored study has other directions
        raise EdgeCNNError(f"search study '{name}' in {storage_url}: {exc}") from None
    keys = [m.key for m in objectives]
    made_for = study.user_attrs.get("objectives")
    if [d.name.lower() for d in study.directions] != directions or (made_for is not None and made_for != keys):
        shown = ", ".join(made_for) if made_for else "other objectives"
        raise EdgeCNNError(f"search study '{name}' in {storage_url} was made for {shown}, not {', '.join(keys)}; "
                           "give another --study name (or the objectives it was made with)")
    if made_for is None:  # a new study (or one from before objectives were recorded): its values mean these
        study.set_user_attr("objectives", keys)
    return study


def space_values(cfg: ExperimentConfig, space: SpaceFunction, trial: Any) -> dict[str, Any]:
    """A user's define-by-run space function's {dotted config key: value}, checked like a YAML space's keys."""
    values = space(trial)
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise EdgeCNNError("the search space function must return {dotted config key: value}, e.g. "
                           "{'train.lr': trial.suggest_float('train.lr', 1e-4, 1e-2, log=True)}; it returned "
                           f"{type(values).__name__}")
    for key in values:
        check_key(cfg, key)
    return values


def _worker(cfg_json: str, run_dir: str, storage_url: str, name: str, trials: int, timeout: float | None,
            seed: int, space: SpaceFunction | None = None, parent: int | None = None,
            share: int | None = None) -> None:
    """One worker process: its own data and torch threads, the shared study. A spawned worker (``parent``: the
    search's pid) dies with the search instead of running on as an orphan, and ends a failure with one line on
    stderr and exit code 2 (its user errors) or 1, not a traceback."""
    if parent is None:
        return _work(cfg_json, run_dir, storage_url, name, trials, timeout, seed, space, share)
    die_with_parent(parent)
    try:
        _work(cfg_json, run_dir, storage_url, name, trials, timeout, seed, space, share)
    except EdgeCNNError as exc:
        sys.stderr.write(f"error: search worker {os.getpid()}: {exc}\n")
        sys.stderr.flush()
        os._exit(2)


def _work(cfg_json: str, run_dir: str, storage_url: str, name: str, trials: int, timeout: float | None,
          seed: int, space: SpaceFunction | None, share: int | None) -> None:
    import torch

    from edgecnn.data.prepare import prepare_data

    cfg = ExperimentConfig.model_validate_json(cfg_json)
    section = search_section(cfg)
    torch.set_num_threads(section.threads)
    objectives = parse_objectives(section.objectives)
    constraints = [parse_constraint(c) for c in section.constraints]
    study = open_study(storage_url, name, section, objectives, seed)
    data = prepare_data(cfg.data, seed=cfg.seed)
    try:
        study.optimize(_Objective(cfg, data, Path(run_dir), objectives, constraints, space), n_trials=share,
                       timeout=timeout, callbacks=[trial_quota(trials)], catch=(RuntimeError,))
    except EdgeCNNError:
        raise
    except Exception as exc:
        if (lost := _storage_lost(storage_url, section)) is not None:  # the storage died under the trials
            raise EdgeCNNError(f"search storage '{storage_url}' stopped answering during the search ({lost}); "
                               "finished trials are kept in it: restart it and rerun the same command to "
                               "continue the study") from None
        raise exc


def _storage_lost(storage_url: str, search: SearchConfig) -> str | None:
    """Why the storage cannot be reached now (one line), or None when it answers: a failure inside Optuna's
    optimize loop (an UnboundLocalError, a SQLAlchemy OperationalError) is then a lost database, not a bug."""
    try:
        make_storage(storage_url, search.heartbeat_s, search.retries).get_all_studies()
    except EdgeCNNError as exc:
        return str(exc).split(": ", 1)[-1][:200]
    except Exception as exc:  # noqa: BLE001 - any reason the database does not answer
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return first[:200]
    return None


def trial_quota(trials: int) -> Any:
    """Optuna's callback that stops a worker once the study holds ``trials`` finished trials and trials that other
    workers are running: counting only finished ones, a worker that finishes while another still trains starts a
    surplus trial, which then runs alone at the end of the search. Queued (WAITING) trials do not count: a worker
    that stopped for them would leave them unrun."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    return MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))


def search(cfg: ExperimentConfig, *, trials: int | None = None, timeout: str | None = None,
           storage: str | None = None, study: str | None = None, workers: int | None = None,
           retrain_best: int | None = None, export_best: str | Path | None = None,
           space: SpaceFunction | None = None) -> SearchOutcome:
    """Run (or continue) the experiment's search study; returns its trials by state and its best trials.

    ``space``: a define-by-run function ``trial -> {dotted config key: value}`` (Optuna's suggest API) used instead
    of the YAML space; with several workers it must be importable (defined at module level) so they can run it.

    ``retrain_best=K`` then retrains the K best trials (the Pareto front's first K for several objectives) with
    the experiment's full training budget through the usual pipeline (precisions, low-bit, estimates, report),
    each as the run ``<name>-trial<N>``."""
    from edgecnn.pipeline import prepare_run_data, run_directory

    if cfg.search is None:
        raise EdgeCNNError("the experiment has no search: section; add one with a space, e.g. "
                           "search: {space: {train.lr: {low: 1e-4, high: 1e-2, log: true}}}")
    updates = {k: v for k, v in {"trials": trials, "timeout": timeout, "storage": storage, "study": study,
                                 "workers": workers, "retrain_best": retrain_best}.items() if v is not None}
    if study is not None:
        check_name(study, "--study")
    if export_best is not None:  # before the search, not after it
        check_output_file(Path(export_best), "--export-best")
    search_cfg = cfg.search.model_copy(update=updates)
    cfg = cfg.model_copy(update={"search": search_cfg})
    _check_space(cfg, search_cfg, space)
    objectives = parse_objectives(search_cfg.objectives)
    for text in search_cfg.constraints:  # one-line errors before the study opens; workers parse them again
        if parse_constraint(text).metric.name == "finn":
            from edgecnn.hw.finn.tool import require_finn

            require_finn()  # FINN judges every candidate: it must be there before the first trial
    seconds = parse_timeout(search_cfg.timeout)
    name = search_cfg.study or cfg.name
    with run_directory(cfg) as run_dir:
        url = search_cfg.storage or f"sqlite:///{(run_dir / 'search.db').resolve()}"
        study_obj = open_study(url, name, search_cfg, objectives)  # bad URL / server: fail before any work
        prepare_run_data(cfg, run_dir)  # decode and cache once for every worker
        shares = trial_shares(search_cfg.trials, _finished(study_obj), clamp_workers(search_cfg.workers))
        first = worker_seed(search_cfg, url, 0, fresh=not study_obj.trials)
        seeds = [first] + [worker_seed(search_cfg, url, i, fresh=False) for i in range(1, len(shares))]
        lost = _run_workers(cfg, run_dir, url, name, search_cfg.trials, seconds, space, list(zip(seeds, shares)))
        outcome = _summarize(study_obj, url, name, objectives, run_dir)
        outcome.lost_workers = lost
    if export_best is not None:
        outcome.exported = write_best_config(cfg, outcome, objectives, Path(export_best))
    if search_cfg.retrain_best:
        outcome.retrained = _retrain(cfg, outcome, search_cfg.retrain_best, len(objectives) == 1)
    from edgecnn.report.search_page import write_search_report

    outcome.report_path = write_search_report(study_obj, run_dir, [m.key for m in objectives], outcome.retrained)
    return outcome


def _check_space(cfg: ExperimentConfig, search: SearchConfig, space: SpaceFunction | None) -> None:
    """The YAML space is not empty and names config keys; a space function can go to the worker processes."""
    if space is None and not search.space:
        raise EdgeCNNError("search.space is empty: give at least one key to search, e.g. "
                           "search: {space: {train.lr: {low: 1e-4, high: 1e-2, log: true}}}")
    if space is None:
        check_space_keys(cfg, search)
    elif search.workers > 1:
        try:
            pickle.dumps(space)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise EdgeCNNError(f"the search space function cannot go to {search.workers} worker processes "
                               f"({exc}); define it at module level, or use workers=1") from None


def write_best_config(cfg: ExperimentConfig, outcome: SearchOutcome, objectives: list[Metric], path: Path) -> Path:
    """The chosen candidate as an ordinary experiment YAML (no search section, the full training budget), for
    `edgecnn run`: the best trial for one objective; for several, the Pareto front's best on the first objective."""
    import yaml

    if not outcome.best:
        raise EdgeCNNError(f"--export-best: study '{outcome.study}' has no completed trial yet; run more trials "
                           "(or a longer --timeout) first")
    sign = 1 if objectives[0].direction == "maximize" else -1
    row = max(outcome.best, key=lambda r: sign * r["values"][0])
    chosen = trial_config(cfg, row.get("sampled") or {}, cfg.train.epochs)
    raw = chosen.model_dump(mode="json", exclude={"search"})
    raw["name"] = f"{cfg.name}-trial{row['number']:04d}"
    values = ", ".join(f"{m.key} {v:.6g}" for m, v in zip(objectives, row["values"]))
    header = (f"# Trial {row['number']} of search study '{outcome.study}' ({outcome.storage}): {values}.\n"
              f"# Run it with the full training budget: edgecnn run {path.name}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return path


def _retrain(cfg: ExperimentConfig, outcome: SearchOutcome, k: int, single: bool) -> list[Path]:
    """The K best trials retrained with the full budget by the pipeline (each its own run directory): the best
    values for one objective, the Pareto front for several."""
    from edgecnn.pipeline import run as run_pipeline

    rows = outcome.best
    if single:
        optuna = optuna_module()
        from optuna.trial import TrialState

        study = optuna.load_study(study_name=outcome.study, storage=outcome.storage)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        maximize = study.direction.name.lower() == "maximize"
        done.sort(key=lambda t: t.value, reverse=maximize)
        rows = [{"number": t.number, "sampled": t.user_attrs.get("values") or {}} for t in done]
    unique: list[dict[str, Any]] = []
    for row in rows:  # a repeated candidate (reused result) is on the front twice; retrain it once
        if all((row.get("sampled") or {}) != (u.get("sampled") or {}) for u in unique):
            unique.append(row)
    dirs = []
    for row in unique[:k]:
        trial_cfg = trial_config(cfg, row.get("sampled") or {}, cfg.train.epochs)
        trial_cfg = trial_cfg.model_copy(update={"name": f"{cfg.name}-trial{row['number']:04d}"})
        log.info("retraining trial %d with the full budget as %s", row["number"], trial_cfg.name)
        dirs.append(run_pipeline(trial_cfg, show_progress=False).run_dir)
    return dirs


def _summarize(study: Any, url: str, name: str, objectives: list[Metric], run_dir: Path) -> SearchOutcome:
    """Trials by state and the best trials (the Pareto front for several objectives), also in search/summary.json."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    best = [{"number": t.number, "values": t.values, "params": t.params, "sampled": t.user_attrs.get("values"),
             "metrics": t.user_attrs.get("metrics"), "checkpoint": t.user_attrs.get("checkpoint")}
            for t in (study.best_trials if counts["COMPLETE"] else [])]
    overhead = [t.user_attrs["search_overhead_s"] / t.user_attrs["train_s"] for t in trials
                if t.state == TrialState.COMPLETE and t.user_attrs.get("train_s")]
    path = run_dir / "search" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"storage": url, "study": name, "objectives": [m.key for m in objectives],
                                "directions": [m.direction for m in objectives], "counts": counts,
                                "overhead_fraction_median": sorted(overhead)[len(overhead) // 2] if overhead else None,
                                "pareto_front" if len(objectives) > 1 else "best": best}, indent=1, default=str))
    return SearchOutcome(url, name, counts, best, path)
