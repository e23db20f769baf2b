"""The search's report, search/report.html in the run directory: the trials table, the Pareto fronts (trial accuracy
against each estimated FPS and against size), Optuna's parameter importances, and the retrained winners next to the
hand-designed model (the experiment's own `edgecnn run`, where it has been made)."""
from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Any

from edgecnn.report.plots import plt, save_figure
from edgecnn.report.summary import front
from edgecnn.report.tables import html_table
from edgecnn.results import read_results

#: Result columns shown for the retrained winners and the hand-designed model.
WINNER_KEYS = ("precision", "accuracy", "params", "macs", "size_bytes")


def plot_trial_front(trials: list[dict[str, Any]], cost: str, path: Path) -> Path | None:
    """Trial accuracy against one cost (an estimated FPS, or size), the Pareto front joined."""
    points = [(t["metrics"][cost], 100 * t["metrics"]["accuracy"], t["number"]) for t in trials
              if isinstance(t["metrics"].get(cost), (int, float)) and "accuracy" in t["metrics"]]
    if len(points) < 2:
        return None
    better_high = cost.startswith("fps@")
    line = front(points, lambda p: p[0], lambda p: p[1], higher_cost_is_better=better_high)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#9aa7b8", s=18, label="trials")
    ax.plot([p[0] for p in line], [p[1] for p in line], "o-", color="#d8553b", label="Pareto front")
    for x, y, number in line:
        ax.annotate(f"#{number}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"estimated {cost} (higher is better)" if better_high else "size (KiB, parameters)")
    ax.set_ylabel("validation accuracy after the trial budget (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def importances(study: Any) -> dict[str, float] | str:
    """Optuna's PED-ANOVA importances of the sampled parameters for the first objective (it needs no scikit-learn,
    unlike fANOVA), or why there are none. PED-ANOVA ranks what makes the target low, so a maximized objective is
    negated."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return "n/a (fewer than 2 completed trials)"
    sign = -1.0 if study.directions[0].name.lower() == "maximize" else 1.0
    try:
        with warnings.catch_warnings():  # its reminder that it ranks low targets: the sign above handles that
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), target=lambda t: sign * t.values[0], normalize=True)
    except (RuntimeError, ValueError, ImportError, TypeError) as exc:  # e.g. no parameter varies across the trials
        return f"n/a ({exc})"


def _winner_rows(run_dir: Path, label: str) -> list[list[str]]:
    rows = []
    for r in read_results(run_dir):
        fps = "; ".join(f"{k[4:]} {v:,.0f}" for k, v in r.items()
                        if k.startswith("fps_") and isinstance(v, (int, float)))
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in WINNER_KEYS]
        rows.append([label, *cells, fps or "-"])
    return rows


def write_search_report(study: Any, run_dir: Path, objective_keys: list[str], retrained: list[Path]) -> Path:
    """Render ``run_dir/search/report.html`` (plots beside it) from the study and the retrained runs."""
    out_dir = run_dir / "search"
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = [{"number": t.number, "state": t.state.name, "values": t.values,
               "sampled": t.user_attrs.get("values") or t.params, "metrics": t.user_attrs.get("metrics") or {},
               "note": t.user_attrs.get("pruned_reason") or (f"repeat of #{t.user_attrs['repeat_of']}"
                                                             if "repeat_of" in t.user_attrs else "")}
              for t in study.get_trials(deepcopy=False)]
    done = [t for t in trials if t["state"] == "COMPLETE"]
    costs = sorted({k for t in done for k in t["metrics"] if k.startswith("fps@")}) + ["size_kb"]
    plots = [p.name for c in costs if (p := plot_trial_front(done, c, out_dir / f"front-{c.replace('@', '-')}.png"))]
    parts = [f"<h1>Search study {html.escape(study.study_name)}</h1>",
             f"<p>Objectives: {html.escape(', '.join(objective_keys))}. {len(done)} of {len(trials)} trials "
             "completed. Accuracy here is validation accuracy after the search's short trial budget.</p>",
             "<h2>Pareto fronts</h2>", *(f'<img src="{name}" alt="{name}">' for name in plots)]
    imp = importances(study)
    parts.append(f"<h2>Parameter importances for {html.escape(objective_keys[0])} (PED-ANOVA)</h2>")
    parts.append(html.escape(imp) if isinstance(imp, str) else
                 html_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()]))
    winners = [row for d in retrained for row in _winner_rows(d, d.name)]
    hand = _winner_rows(run_dir, "hand-designed (this experiment)")  # [] before `edgecnn run`
    parts.append("<h2>Retrained winners and the hand-designed model (test split)</h2>")
    parts.append(html_table(["run", *WINNER_KEYS, "estimated FPS"], hand + winners) if hand + winners else
                 "<p>None yet: retrain with --retrain-best K; `edgecnn run` of this experiment adds the "
                 "hand-designed model's rows.</p>")
    if not hand and winners:
        parts.append("<p>`edgecnn run` of this experiment adds the hand-designed model's rows.</p>")
    metric_keys = sorted({k for t in done for k in t["metrics"]})
    table = [[str(t["number"]), t["state"], *(f"{t['metrics'][k]:.4g}" if isinstance(t["metrics"].get(k), (int, float))
                                             else "" for k in metric_keys),
              ", ".join(f"{k}={v}" for k, v in t["sampled"].items()), t["note"]] for t in trials]
    parts.append("<h2>Trials</h2>")
    parts.append(html_table(["#", "state", *metric_keys, "sampled values", "note"], table))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>edgecnn search</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:48%;margin:4px}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    path = out_dir / "report.html"
    path.write_text(page)
    return path
