"""Every reported metric, computed from predictions with scikit-learn, nothing else."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from ferbench.report.stats import wilson_interval


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    probs: np.ndarray | None = None,
) -> dict:
    """Accuracy with its 95% interval, balanced accuracy, macro-F1 (over the classes present in
    the truth), per-class precision/recall/F1/support, confusion; with `probs`, the expected
    calibration error too."""
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    present = support > 0
    worst = int(np.argmin(np.where(present, recall, np.inf))) if present.any() else 0
    # macro-F1 over the classes present in the truth: a class with no face scores F1 0 whatever
    # the model does, so averaging it in would lower every model by the same arbitrary share
    # (on a 6-class set scored as 7, by a seventh); predictions of an absent class still cost
    # the true class its recall
    truth = [label for label, seen in zip(labels, present) if seen]
    accuracy = float(accuracy_score(y_true, y_pred))
    correct = int(np.sum(np.asarray(y_true) == np.asarray(y_pred)))
    low, high = wilson_interval(correct, len(y_true))
    metrics = {
        "accuracy": accuracy,
        # 95% Wilson interval over the test faces: the draw of faces alone moves the figure
        "accuracy_ci95": [low, high],
        "accuracy_ci_method": "wilson",
        "faces": int(len(y_true)),  # what the interval counts
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(f1_score(y_true, y_pred, labels=truth, average="macro", zero_division=0))
        if truth
        else 0.0,
        "macro_f1_classes": "present in the truth",
        "worst_class": class_names[worst],
        "worst_class_recall": float(recall[worst]),
        "per_class": per_class,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }
    if probs is not None:
        metrics["ece"] = expected_calibration_error(probs, y_true)
    return metrics


def class_shares(metrics: dict) -> tuple[dict, dict]:
    """Each class's share of the predictions and of the truth, from a metrics dict's confusion
    matrix (rows true, columns predicted): a drift toward one class shows here."""
    confusion, names = metrics.get("confusion"), metrics.get("class_names")
    if not confusion or not names:
        return {}, {}
    matrix = np.asarray(confusion, dtype=float)
    total = max(matrix.sum(), 1.0)
    return dict(zip(names, matrix.sum(0) / total)), dict(zip(names, matrix.sum(1) / total))


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """How far the top probability is from the accuracy it promises: the support-weighted mean of
    |accuracy - mean confidence| over `bins` equal-width confidence bins (Guo et al. 2017).  The
    probability `live` draws should mean what it says; 0 is perfectly calibrated."""
    if not len(y_true):
        return float("nan")
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (predictions of absent classes are errors,
    not extra classes: sklearn warns about them, which is expected on class subsets)."""
    if not len(y_true):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))
