"""Accuracy, per-class precision/recall/F1 and the confusion matrix from labels and predictions."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class ClassificationReport:
    accuracy: float
    macro_f1: float
    classes: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def per_class(self) -> dict[str, dict[str, float]]:
        return {c: {"precision": p, "recall": r, "f1": f, "support": s}
                for c, p, r, f, s in zip(self.classes, self.precision, self.recall, self.f1, self.support)}


def classification_report(y_true, y_pred, classes: list[str]) -> ClassificationReport:
    """Metrics of predicted vs true class indices (numpy arrays or tensors)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return ClassificationReport(
        accuracy=float(tp.sum() / max(1, len(y_true))),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        classes=list(classes), precision=precision.round(6).tolist(), recall=recall.round(6).tolist(),
        f1=f1.round(6).tolist(), support=support.tolist(), confusion=confusion.tolist(), n=int(len(y_true)))


def paired_comparison(y_true, pred_a, pred_b) -> dict[str, float | int]:
    """How two classifiers differ on the same images: the images only A gets right, only B gets right, and the
    two-sided p-value of the exact McNemar test (a binomial test on those discordant images), so a gain of a few
    images is not read as a real one. The binomial tail is summed here rather than adding scipy for one formula."""
    y_true, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    if not (y_true.shape == pred_a.shape == pred_b.shape):
        raise ValueError(f"paired_comparison: labels {y_true.shape}, predictions {pred_a.shape} and {pred_b.shape} "
                         "must cover the same images")
    a_right, b_right = pred_a == y_true, pred_b == y_true
    a_only, b_only = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    return {"a_only_correct": a_only, "b_only_correct": b_only, "mcnemar_p": mcnemar_p(a_only, b_only)}


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value of ``a_only`` vs ``b_only`` discordant images (binomial, p = 1/2)."""
    n = a_only + b_only
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return 1.0 if n == 0 else min(1.0, 2 * tail / 2**n)


def plot_confusion(report: ClassificationReport, path: str | Path, title: str = "") -> Path:
    """Write the confusion matrix (row-normalized colours, counts printed) as a PNG."""
    from edgecnn.report.plots import plt, save_figure

    cm = np.asarray(report.confusion)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(report.classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), report.classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), report.classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {report.accuracy:.2%}")
    return save_figure(fig, path)
