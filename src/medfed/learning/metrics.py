"""Classification metrics from true labels and predicted class probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC AUC and the confusion matrix (rows = true class).

    Binary tasks score class 1 as positive; multi-class tasks use macro averages (AUC:
    one-vs-rest over the classes present in ``y_true``). AUC is None when ``y_true`` holds a
    single class or the probabilities are not finite.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    _check_shapes(y_true, y_prob, num_classes)
    y_pred = y_prob.argmax(axis=1)
    labels = list(range(num_classes))
    binary = num_classes == 2
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true,
        y_pred,
        labels=labels,
        average="binary" if binary else "macro",
        pos_label=1,
        zero_division=0,
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auc": _auc(y_true, y_prob, num_classes),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
    }


def _check_shapes(y_true: np.ndarray, y_prob: np.ndarray, num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y_true.shape}")
    if y_prob.shape != (len(y_true), num_classes):
        raise ValueError(
            f"y_prob must have shape ({len(y_true)}, {num_classes}), got {y_prob.shape}"
        )
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")


def _auc(y_true: np.ndarray, y_prob: np.ndarray, num_classes: int) -> float | None:
    present = np.unique(y_true)
    if len(present) < 2 or not np.isfinite(y_prob).all():
        return None
    if num_classes == 2:
        return float(roc_auc_score(y_true, y_prob[:, 1]))
    per_class = [roc_auc_score(y_true == k, y_prob[:, k]) for k in present]
    return float(np.mean(per_class))


SCREENING_POINTS = (
    ("specificity", 0.90),
    ("specificity", 0.95),
    ("sensitivity", 0.95),
)


def calibration(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and the reliability diagram's bins (equal width on 0..1).

    Binary tasks bin the positive class's probability against the share of positives in each
    bin; with more classes the top class's probability is binned against the share predicted
    right. ``ece`` is the count-weighted mean gap between the two over the bins.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    _check_shapes(y_true, y_prob, y_prob.shape[1] if y_prob.ndim == 2 else 0)
    if y_prob.shape[1] == 2:
        scores, hits, kind = y_prob[:, 1], (y_true == 1).astype(float), "positive class"
    else:
        scores = y_prob.max(axis=1)
        hits, kind = (y_prob.argmax(axis=1) == y_true).astype(float), "top class"
    which = np.clip((scores * bins).astype(int), 0, bins - 1)
    table, gap = [], 0.0
    for index in range(bins):
        chosen = which == index
        count = int(chosen.sum())
        mean_score = float(scores[chosen].mean()) if count else None
        observed = float(hits[chosen].mean()) if count else None
        if count:
            gap += count * abs(observed - mean_score)
        table.append(
            {
                "lower": index / bins,
                "upper": (index + 1) / bins,
                "count": count,
                "confidence": mean_score,
                "observed": observed,
            }
        )
    return {"ece": gap / len(y_true), "kind": kind, "bins": table}


def operating_points(y_true: np.ndarray, y_prob: np.ndarray) -> list[dict[str, Any]]:
    """Screening operating points of a binary classifier, from its ROC curve: sensitivity at
    90% and 95% specificity and specificity at 95% sensitivity, each with the threshold on the
    positive class's probability that gives it (positive when probability >= threshold).

    Empty for more than two classes or a test set with one class.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or y_prob.shape[1] != 2 or len(np.unique(y_true)) < 2:
        return []
    fpr, tpr, thresholds = roc_curve(y_true, y_prob[:, 1])
    specificity = 1.0 - fpr
    points = []
    for target, level in SCREENING_POINTS:
        if target == "specificity":
            allowed = np.flatnonzero(specificity >= level - 1e-12)
            best = allowed[np.argmax(tpr[allowed])]
            name = f"sensitivity at {level:.0%} specificity"
        else:
            allowed = np.flatnonzero(tpr >= level - 1e-12)
            best = allowed[np.argmax(specificity[allowed])]
            name = f"specificity at {level:.0%} sensitivity"
        points.append(
            {
                "name": name,
                "target": target,
                "level": level,
                "sensitivity": float(tpr[best]),
                "specificity": float(specificity[best]),
                "threshold": float(min(thresholds[best], 1.0)),
            }
        )
    return points
