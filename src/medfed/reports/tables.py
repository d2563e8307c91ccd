"""The report's tables: data per hospital, final metrics, the last round, traffic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfed.reports import formatting as fmt
from medfed.store.records import ClientResultRecord, RoundRecord


@dataclass(frozen=True)
class Table:
    """Rows of already formatted cells; ``numeric`` marks the right-aligned columns."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    failed_rows: frozenset[int] = frozenset()
    highlighted_rows: frozenset[int] = frozenset()  # e.g. the worst hospital

    @property
    def empty(self) -> bool:
        return not self.rows


EMPTY_TABLE = Table([], [], [])


def natural_key(name: str) -> list[str | int]:
    """Sort key putting ``hospital-2`` before ``hospital-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def counts_of(client: ClientResultRecord, class_names: list[str]) -> dict[str, int]:
    """A client's ``class_counts`` metric as {class name: count}, whether a dict or a list."""
    metrics = client.metrics or {}
    counts = metrics.get("class_counts", metrics.get("class-counts"))
    if isinstance(counts, dict):
        return {str(k): int(v) for k, v in counts.items()}
    if isinstance(counts, list | tuple):
        names = class_names if len(class_names) == len(counts) else None
        return {(names[i] if names else str(i)): int(v) for i, v in enumerate(counts)}
    return {}


def _latest_ok(
    clients: list[ClientResultRecord], hospital: str, phase: str
) -> ClientResultRecord | None:
    done = [c for c in clients if c.hospital == hospital and c.phase == phase and c.status == "ok"]
    return max(done, key=lambda c: c.round) if done else None


def class_counts(
    clients: list[ClientResultRecord], class_names: list[str]
) -> dict[str, dict[str, int]]:
    counts = {}
    for hospital in sorted({c.hospital for c in clients}, key=natural_key):
        latest = _latest_ok(clients, hospital, "train")
        found = counts_of(latest, class_names) if latest else {}
        if found:
            counts[hospital] = found
    return counts


def train_examples(clients: list[ClientResultRecord], hospitals: list[str]) -> dict[str, int]:
    """Each hospital's training examples in its last successful reply (when it had one)."""
    latest = {h: _latest_ok(clients, h, "train") for h in hospitals}
    return {h: c.num_examples for h, c in latest.items() if c is not None and c.num_examples}


def data_table(
    clients: list[ClientResultRecord], hospitals: list[str], class_names: list[str]
) -> Table:
    counts = class_counts(clients, class_names)
    shown_classes = [n for n in class_names if any(n in c for c in counts.values())]
    columns = ["Hospital", "Training examples", "Evaluation examples"]
    columns += [f"Class {name}" for name in shown_classes]
    columns += ["Rounds joined", "Failed replies"]
    rows = []
    for hospital in hospitals:
        train, evaluate = (_latest_ok(clients, hospital, p) for p in ("train", "evaluate"))
        mine = [c for c in clients if c.hospital == hospital]
        row = [
            hospital,
            fmt.integer(train.num_examples) if train else fmt.MISSING,
            fmt.integer(evaluate.num_examples) if evaluate else fmt.MISSING,
        ]
        row += [fmt.integer(counts.get(hospital, {}).get(n)) for n in shown_classes]
        row += [
            str(len({c.round for c in mine if c.status == "ok"})),
            str(sum(1 for c in mine if c.status != "ok")),
        ]
        rows.append(row)
    if rows:
        totals = ["Total"]
        for index in range(1, len(columns)):
            values = [r[index].replace(",", "") for r in rows]
            numbers = [int(v) for v in values if v.isdigit()]
            totals.append(fmt.integer(sum(numbers)) if numbers else fmt.MISSING)
        totals[-2] = fmt.MISSING
        rows.append(totals)
    table = Table(columns, rows, [False] + [True] * (len(columns) - 1))
    return without_empty_columns(table, keep=1)


def metric(metrics: dict[str, Any] | None, name: str, phase: str) -> Any:
    """``name`` from a hospital's metrics; training replies may prefix it with ``train_``."""
    metrics = metrics or {}
    if name in metrics or phase != "train":
        return metrics.get(name)
    return metrics.get(f"train_{name}")


def metrics_table(final: dict, confusion: np.ndarray | None, class_names: list[str]) -> Table:
    columns = ["", "Precision", "Recall (sensitivity)", "F1 score", "AUC", "Support"]
    support = fmt.integer(int(confusion.sum())) if confusion is not None else fmt.MISSING
    rows = [
        [
            "Overall",
            fmt.percent(final.get("precision")),
            fmt.percent(final.get("recall")),
            fmt.percent(final.get("f1")),
            fmt.decimal(final.get("auc")),
            support,
        ]
    ]
    if confusion is not None:
        true_positive = np.diag(confusion).astype(float)
        predicted = confusion.sum(axis=0).astype(float)
        actual = confusion.sum(axis=1).astype(float)
        for k in range(confusion.shape[0]):
            precision = true_positive[k] / predicted[k] if predicted[k] else None
            recall = true_positive[k] / actual[k] if actual[k] else None
            f1 = (
                2 * precision * recall / (precision + recall)
                if precision is not None and recall is not None and precision + recall
                else None
            )
            name = class_names[k] if k < len(class_names) else str(k)
            rows.append(
                [
                    f"Class {name}",
                    fmt.percent(precision),
                    fmt.percent(recall),
                    fmt.percent(f1),
                    fmt.MISSING,
                    fmt.integer(int(actual[k])),
                ]
            )
    return Table(columns, rows, [False] + [True] * 5)


def last_round_table(clients: list[ClientResultRecord], last_round: int | None) -> Table:
    columns = [
        "Hospital", "Phase", "Status", "Examples", "Loss", "Accuracy", "F1",
        "Duration", "Upload", "Download", "ε", "Device", "Note",
    ]  # fmt: skip
    chosen = sorted(
        (c for c in clients if c.round == last_round),
        key=lambda c: (natural_key(c.hospital), c.phase),
    )
    rows, failed = [], set()
    for index, client in enumerate(chosen):
        metrics = client.metrics or {}
        if client.status != "ok":
            failed.add(index)
        rows.append(
            [
                client.hospital,
                client.phase,
                client.status,
                fmt.integer(client.num_examples),
                fmt.decimal(metric(metrics, "loss", client.phase)),
                fmt.percent(metric(metrics, "accuracy", client.phase)),
                fmt.percent(metric(metrics, "f1", client.phase)),
                fmt.duration(client.duration_s),
                fmt.byte_size(client.bytes_up),
                fmt.byte_size(client.bytes_down),
                fmt.decimal(client.epsilon, 2),
                device_of(metrics),
                client.error or "",
            ]
        )
    numeric = [False, False, False] + [True] * 8 + [False, False]
    return without_empty_columns(Table(columns, rows, numeric, frozenset(failed)), keep=4)


def device_of(metrics: dict[str, Any]) -> str:
    """The device a hospital reported with a result (cpu, cuda, mps), or the missing mark."""
    device = metrics.get("device")
    return device if isinstance(device, str) and device else fmt.MISSING


def without_empty_columns(table: Table, keep: int) -> Table:
    """Drop columns after the first ``keep`` that no row fills in."""
    kept = [
        index
        for index in range(len(table.columns))
        if index < keep or any(row[index] not in ("", fmt.MISSING) for row in table.rows)
    ]
    return Table(
        [table.columns[i] for i in kept],
        [[row[i] for i in kept] for row in table.rows],
        [table.numeric[i] for i in kept],
        table.failed_rows,
    )


def traffic_table(rounds: list[RoundRecord]) -> Table:
    columns = ["Round", "Duration", "Upload", "Download", "Hospitals ok", "Hospitals failed"]
    rows = [
        [
            str(r.round),
            fmt.duration(r.duration_s),
            fmt.byte_size(r.bytes_up),
            fmt.byte_size(r.bytes_down),
            fmt.integer(r.num_clients_ok),
            fmt.integer(r.num_clients_failed),
        ]
        for r in rounds
    ]
    failed = frozenset(i for i, r in enumerate(rounds) if (r.num_clients_failed or 0) > 0)
    if rounds:
        rows.append(
            [
                "Total",
                fmt.duration(sum(r.duration_s or 0 for r in rounds)),
                fmt.byte_size(sum(r.bytes_up or 0 for r in rounds)),
                fmt.byte_size(sum(r.bytes_down or 0 for r in rounds)),
                fmt.MISSING,
                fmt.integer(sum(r.num_clients_failed or 0 for r in rounds)),
            ]
        )
    return Table(columns, rows, [False] + [True] * 5, failed)
