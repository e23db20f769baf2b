"""Plots of a run: training curves, and per-variant bars (accuracy, size) from the results table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_training_curves(history: list[dict[str, float]], path: str | Path) -> Path | None:
    """Loss and accuracy per epoch, train vs validation."""
    if not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["train_acc"] for r in history], label="train")
    ax_acc.plot(epochs, [r["val_acc"] for r in history], label="val")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    return save_figure(fig, path)


def plot_accuracy_vs(rows: list[dict[str, Any]], cost: str, path: str | Path, xlabel: str, front: list[str], *,
                     scale: float = 1.0, log_x: bool = False) -> Path | None:
    """Test accuracy against a cost (latency, size) per variant, the Pareto front joined and labelled."""
    points = {r["variant"]: (float(r[cost]) * scale, 100 * float(r["accuracy"])) for r in rows
              if isinstance(r.get(cost), (int, float)) and isinstance(r.get("accuracy"), (int, float))}
    if len(points) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.scatter([p[0] for p in points.values()], [p[1] for p in points.values()], color="#9aa7b8", s=24,
               label="variants")
    on_front = [points[name] for name in front if name in points]
    ax.plot([p[0] for p in on_front], [p[1] for p in on_front], "o-", color="#d8553b", label="Pareto front")
    for name, (x, y) in points.items():
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_throughput_curve(curves: dict[str, list[tuple[int, float]]], path: str | Path, title: str = "") -> Path:
    """Throughput (images/s) against batch size, one line per backend/variant (log-2 batch axis)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, points in curves.items():
        points = sorted(points)
        ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_grouped_bars(rows: list[dict[str, Any]], metric: str, path: str | Path, ylabel: str, *,
                      group_key: str = "model", series_key: str = "precision", scale: float = 1.0,
                      log_scale: bool = False) -> Path | None:
    """Bars of ``metric`` grouped by model, one colour per precision."""
    import numpy as np

    groups = list(dict.fromkeys(r[group_key] for r in rows))
    series = list(dict.fromkeys(r[series_key] for r in rows))
    if not groups or not series:
        return None
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 2), 3.8))
    for i, s in enumerate(series):
        values = []
        for g in groups:
            match = [r for r in rows if r[group_key] == g and r[series_key] == s and r.get(metric) not in (None, "")]
            values.append(float(match[0][metric]) * scale if match else np.nan)
        ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width, values, width, label=s)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=8, ncols=min(len(series), 6))
    return save_figure(fig, path)
