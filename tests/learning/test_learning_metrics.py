"""classification_metrics agrees with scikit-learn on random data, including edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from medfed.learning.metrics import classification_metrics


@st.composite
def labelled_probabilities(draw, min_classes=2, max_classes=5):
    num_classes = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, draw(st.integers(1, num_classes)), size=n)
    logits = rng.normal(size=(n, num_classes)) + 2.0 * np.eye(num_classes)[y_true] * rng.random()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probs, num_classes


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(labelled_probabilities())
def test_matches_sklearn(case):
    y_true, probs, k = case
    result = classification_metrics(y_true, probs, k)
    y_pred = probs.argmax(axis=1)
    labels = list(range(k))
    avg = "binary" if k == 2 else "macro"
    common = {"labels": labels, "average": avg, "zero_division": 0}
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, **common))
    assert result["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, **common))
    assert result["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, **common))
    assert (
        result["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    )
    present = np.unique(y_true)
    if len(present) < 2:
        assert result["auc"] is None
    elif k == 2:
        assert result["auc"] == pytest.approx(skm.roc_auc_score(y_true, probs[:, 1]))
    elif len(present) == k:
        expected = skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
        assert result["auc"] == pytest.approx(expected)
    else:
        per_class = [skm.roc_auc_score(y_true == c, probs[:, c]) for c in present]
        assert result["auc"] == pytest.approx(np.mean(per_class))


def test_result_is_plain_json_types():
    result = classification_metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1]] * 3), 2)
    assert all(isinstance(result[k], float) for k in ("accuracy", "precision", "recall", "f1"))
    assert all(type(v) is int for row in result["confusion_matrix"] for v in row)


def test_all_predicted_negative_gives_zero_precision_not_a_warning():
    result = classification_metrics(np.array([1, 1, 0]), np.array([[0.8, 0.2]] * 3), 2)
    assert result["precision"] == 0.0 and result["recall"] == 0.0 and result["f1"] == 0.0
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["confusion_matrix"] == [[1, 0], [2, 0]]


def test_single_class_has_no_auc_and_full_matrix():
    result = classification_metrics(np.array([2, 2]), np.eye(3)[[2, 0]], 3)
    assert result["auc"] is None
    assert result["confusion_matrix"] == [[0, 0, 0], [0, 0, 0], [1, 0, 1]]


def test_non_finite_probabilities_give_no_auc():
    probs = np.array([[np.nan, np.nan], [0.2, 0.8]])
    assert classification_metrics(np.array([0, 1]), probs, 2)["auc"] is None


@pytest.mark.parametrize(
    ("y_true", "probs", "k"),
    [
        (np.array([], dtype=int), np.zeros((0, 2)), 2),
        (np.array([0, 1]), np.zeros((3, 2)), 2),
        (np.array([0, 3]), np.zeros((2, 3)), 3),
        (np.array([0, 0]), np.zeros((2, 1)), 1),
    ],
)
def test_bad_shapes_are_rejected(y_true, probs, k):
    with pytest.raises(ValueError):
        classification_metrics(y_true, probs, k)
