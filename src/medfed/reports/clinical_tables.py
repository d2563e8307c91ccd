"""The report's clinical tables: screening operating points and the per-site results."""

from __future__ import annotations

import numpy as np

from medfed.reports import formatting as fmt
from medfed.reports.clinical import FinalEvaluation
from medfed.reports.sites import SiteResult, SiteTable
from medfed.reports.tables import EMPTY_TABLE, Table


def operating_table(evaluation: FinalEvaluation | None, confusion: np.ndarray | None) -> Table:
    """Each screening operating point with its threshold, after the default (0.5) one."""
    if evaluation is None or not evaluation.operating_points:
        return EMPTY_TABLE
    columns = ["Operating point", "Threshold", "Sensitivity", "Specificity"]
    rows = []
    if confusion is not None and confusion.shape == (2, 2):
        negatives, positives = confusion.sum(axis=1)
        sensitivity = confusion[1, 1] / positives if positives else None
        specificity = confusion[0, 0] / negatives if negatives else None
        rows.append(
            [
                "Default (most probable class)",
                "0.500",
                fmt.percent(_float(sensitivity)),
                fmt.percent(_float(specificity)),
            ]
        )
    for point in evaluation.operating_points:
        rows.append(
            [
                point["name"].capitalize(),
                fmt.decimal(point["threshold"]),
                fmt.percent(point["sensitivity"]),
                fmt.percent(point["specificity"]),
            ]
        )
    return Table(columns, rows, [False, True, True, True])


def sites_table(sites: SiteTable | None) -> Table:
    """One row per hospital: its held-out results, confusion matrix and class balance; the
    worst hospital (lowest accuracy) highlighted."""
    if sites is None or not sites.sites:
        return EMPTY_TABLE
    names = sites.class_names
    columns = [
        "Hospital",
        "Held-out images",
        "Accuracy",
        "AUC",
        "Confusion matrix",
        "Held-out classes",
        "Training classes",
    ]
    rows, failed, worst = [], set(), set()
    for index, site in enumerate(sites.sites):
        if site.status != "ok":
            failed.add(index)
        if site.worst:
            worst.add(index)
        rows.append(
            [
                site.hospital + (" (worst)" if site.worst else ""),
                fmt.integer(site.num_examples) if site.status == "ok" else fmt.MISSING,
                fmt.percent(site.accuracy),
                fmt.decimal(site.auc),
                confusion_text(site, names) if site.status == "ok" else site.error or "failed",
                balance_text(site.held_out_counts, names),
                balance_text(site.train_counts, names),
            ]
        )
    numeric = [False, True, True, True, False, False, False]
    return Table(columns, rows, numeric, frozenset(failed), frozenset(worst))


def confusion_text(site: SiteResult, class_names: list[str]) -> str:
    """``TN 20 · FP 1 · FN 3 · TP 11`` for two classes, else the rows joined by ``|``."""
    matrix = site.confusion_matrix
    if not matrix:
        return fmt.MISSING
    if len(matrix) == 2:
        (tn, fp), (fn, tp) = matrix
        return f"TN {tn} · FP {fp} · FN {fn} · TP {tp}"
    return " | ".join(" ".join(str(v) for v in row) for row in matrix)


def balance_text(counts: list[int], class_names: list[str]) -> str:
    """``120 / 80 (40% tumour)``: counts per class, with the last class's share."""
    if not counts or len(counts) != len(class_names):
        return fmt.MISSING
    total = sum(counts)
    text = " / ".join(f"{count:,}" for count in counts)
    if total and len(counts) == 2:
        text += f" ({counts[1] / total:.0%} {class_names[1]})"
    return text


def _float(value: object) -> float | None:
    return float(value) if value is not None else None
