"""Classification metrics from true labels and predicted class probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
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
