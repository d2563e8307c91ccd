"""What a report says, gathered from the run store once and shared by the HTML and PDF views."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from medfed import __version__
from medfed.reports import formatting as fmt
from medfed.reports.roc import RocData
from medfed.store.records import CheckpointRecord, ClientResultRecord, RoundRecord, RunRecord

STRATEGY_PARAMETERS = {
    "FedProx": ("proximal_mu",),
    "FedTrimmedAvg": ("trim_beta",),
    "Krum": ("num_malicious_clients",),
    "FedAdam": ("server_learning_rate", "tau"),
    "FedYogi": ("server_learning_rate", "tau"),
    "FedAvgM": ("server_learning_rate", "server_momentum"),
}
CURVE_METRICS = ("accuracy", "f1", "auc", "loss")


@dataclass(frozen=True)
class Table:
    """Rows of already formatted cells; ``numeric`` marks the right-aligned columns."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    failed_rows: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.rows


@dataclass(frozen=True)
class Kpi:
    label: str
    value: str
    detail: str = ""


@dataclass
class ReportContent:
    """Everything shown in a report: formatted tables for text, raw series for the charts."""

    title: str
    run_id: str
    run_name: str
    status: str
    generated_at: str
    version: str
    strategy: str
    model: str
    delta: str
    error: str | None
    kpis: list[Kpi]
    overview: list[tuple[str, str]]
    settings: dict[str, list[tuple[str, str]]]
    hospitals: list[str]
    class_names: list[str]
    data_table: Table
    class_counts: dict[str, dict[str, int]]
    train_examples: dict[str, int]
    rounds: list[int]
    curves: dict[str, list[float | None]]
    hospital_accuracy: dict[str, dict[int, float]]
    hospital_accuracy_phase: str
    failures: list[tuple[int, str, str, str]]
    confusion: np.ndarray | None
    metrics_table: Table
    last_round: int | None
    last_round_table: Table
    durations: list[float | None]
    bytes_up: list[float | None]
    bytes_down: list[float | None]
    traffic_table: Table
    epsilons: dict[int, float]
    privacy: list[tuple[str, str]]
    privacy_mode: str
    epsilon_budget: float | None
    audit: list[tuple[str, str]]
    audit_reading: str
    roc: RocData | None
    roc_note: str
    checkpoint_note: str
    checkpoint_round: int | None


def gather_content(
    run: RunRecord,
    rounds: list[RoundRecord],
    clients: list[ClientResultRecord],
    checkpoint: CheckpointRecord | None,
    roc: RocData | None,
    roc_note: str,
) -> ReportContent:
    """Turn the store's records of one run into the report's content."""
    config = run.config or {}
    privacy = config.get("privacy", {})
    rounds = sorted(rounds, key=lambda r: r.round)
    final = final_metrics(run, rounds)
    hospitals = sorted({c.hospital for c in clients}, key=natural_key)
    confusion = _confusion(final.get("confusion_matrix"))
    class_names = _class_names(config, roc, confusion, clients)
    numbers = [r.round for r in rounds]
    last_round = max((c.round for c in clients), default=numbers[-1] if numbers else None)
    phase = "evaluate" if any(c.phase == "evaluate" for c in clients) else "train"
    return ReportContent(
        title="Federated evaluation report",
        run_id=str(run.id),
        run_name=run.name or str(run.id),
        status=str(run.status),
        generated_at=fmt.timestamp(datetime.now(UTC)),
        version=__version__,
        strategy=str(run.strategy),
        model=_model_name(config),
        delta=fmt.setting(privacy.get("delta")),
        error=run.error,
        kpis=_kpis(run, rounds, final, hospitals, clients),
        overview=_overview(run, rounds, checkpoint),
        settings=_settings(run, config),
        hospitals=hospitals,
        class_names=class_names,
        data_table=_data_table(clients, hospitals, class_names),
        class_counts=_class_counts(clients, class_names),
        train_examples=_train_examples(clients, hospitals),
        rounds=numbers,
        curves=_curves(rounds),
        hospital_accuracy=_hospital_series(clients, phase),
        hospital_accuracy_phase=phase,
        failures=sorted(
            (c.round, c.hospital, c.phase, c.error or "no reason given")
            for c in clients
            if c.status != "ok"
        ),
        confusion=confusion,
        metrics_table=_metrics_table(final, confusion, class_names),
        last_round=last_round,
        last_round_table=_last_round_table(clients, last_round),
        durations=[r.duration_s for r in rounds],
        bytes_up=[r.bytes_up for r in rounds],
        bytes_down=[r.bytes_down for r in rounds],
        traffic_table=_traffic_table(rounds),
        epsilons={r.round: r.epsilon for r in rounds if fmt.is_number(r.epsilon)},
        privacy=_rows(privacy, _privacy_keys(privacy)),
        privacy_mode=str(privacy.get("mode", "none")),
        epsilon_budget=_number(privacy.get("epsilon_budget") or privacy.get("target_epsilon")),
        audit=_audit_rows(_audit(run)),
        audit_reading=_audit_reading(_audit(run)),
        roc=roc,
        roc_note=roc_note,
        checkpoint_note=_checkpoint_note(checkpoint),
        checkpoint_round=checkpoint.round if checkpoint is not None else None,
    )


def natural_key(name: str) -> list[str | int]:
    """Sort key putting ``hospital-2`` before ``hospital-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def final_metrics(run: RunRecord, rounds: list[RoundRecord]) -> dict[str, Any]:
    """The last round's global metrics, overridden by the run's final metrics where given."""
    merged: dict[str, Any] = dict(rounds[-1].metrics or {}) if rounds else {}
    merged.update({k: v for k, v in (run.final_metrics or {}).items() if v is not None})
    return merged


def _kpis(
    run: RunRecord,
    rounds: list[RoundRecord],
    final: dict,
    hospitals: list[str],
    clients: list[ClientResultRecord],
) -> list[Kpi]:
    replied = len({c.hospital for c in clients if c.status == "ok"})
    total_bytes = sum((r.bytes_up or 0) + (r.bytes_down or 0) for r in rounds)
    total_time = sum(r.duration_s or 0 for r in rounds)
    epsilons = [r.epsilon for r in rounds if fmt.is_number(r.epsilon)]
    kpis = [
        Kpi("Accuracy", fmt.percent(final.get("accuracy")), "final global model"),
        Kpi("AUC", fmt.decimal(final.get("auc")), "area under ROC"),
        Kpi("F1 score", fmt.percent(final.get("f1")), "final global model"),
        Kpi("Rounds", f"{len(rounds)} / {run.num_rounds}", "completed / planned"),
        Kpi(
            "Hospitals",
            str(replied),
            "replied" if replied == len(hospitals) else f"of {len(hospitals)} contacted",
        ),
        Kpi("Training time", fmt.duration(total_time), "sum of rounds"),
        Kpi("Traffic", fmt.byte_size(total_bytes), "up + down"),
    ]
    if epsilons:
        kpis.append(Kpi("Privacy loss", fmt.decimal(epsilons[-1], 2), "ε, last round"))
    return kpis


def _overview(
    run: RunRecord, rounds: list[RoundRecord], checkpoint: CheckpointRecord | None
) -> list[tuple[str, str]]:
    return [
        ("Name", run.name or fmt.MISSING),
        ("Run ID", str(run.id)),
        ("Status", str(run.status)),
        ("Mode", str(run.mode)),
        ("Strategy", str(run.strategy)),
        ("Created by", run.created_by or fmt.MISSING),
        ("Created", fmt.timestamp(run.created_at)),
        ("Started", fmt.timestamp(run.started_at)),
        ("Finished", fmt.timestamp(run.finished_at)),
        ("Wall-clock time", fmt.duration(run.duration_s)),
        ("Rounds completed", f"{len(rounds)} of {run.num_rounds}"),
        ("Model checkpoint", _checkpoint_note(checkpoint)),
    ]


def _checkpoint_note(checkpoint: CheckpointRecord | None) -> str:
    if checkpoint is None:
        return "none stored"
    metric = ""
    if checkpoint.metric_name and fmt.is_number(checkpoint.metric_value):
        metric = f", {checkpoint.metric_name} {fmt.decimal(checkpoint.metric_value)}"
    return f"round {checkpoint.round} ({fmt.byte_size(checkpoint.size_bytes)}{metric})"


def _settings(run: RunRecord, config: dict) -> dict[str, list[tuple[str, str]]]:
    federated = config.get("federated", {})
    strategy = federated.get("strategy", run.strategy)
    strategy_keys = ("strategy", *STRATEGY_PARAMETERS.get(strategy, ()))
    data, partition = config.get("data", {}), config.get("partition", {})
    partition_keys = ["scheme", "seed"]
    if partition.get("scheme") == "dirichlet":
        partition_keys.insert(1, "alpha")
    if partition.get("scheme") == "shards":
        partition_keys.insert(1, "classes_per_client")
    return {
        "Strategy": _rows(federated, strategy_keys)
        + _rows(federated, ("fraction_train", "fraction_evaluate", "bn")),
        "Federation": _rows(
            federated,
            ("rounds", "num_clients", "local_epochs", "min_train_clients", "round_timeout"),
        ),
        "Model": _rows(config.get("model", {}), ("name", "norm", "pretrained_path")),
        "Local training": _rows(
            config.get("training", {}),
            ("optimizer", "learning_rate", "batch_size", "weight_decay", "seed"),
        ),
        "Data": _rows(
            data, ("path", "layout", "test_path", "image_size", "channels", "class_names")
        )
        + [("augmentation", _augmentation(data))],
        "Partition": _rows(partition, partition_keys),
        "Compression": _compression(config.get("compression", {})),
    }


def _rows(section: dict, keys: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    return [(key.replace("_", " "), fmt.setting(section.get(key))) for key in keys]


def _augmentation(data: dict) -> str:
    parts = []
    if data.get("rotation"):
        parts.append(f"rotation ±{data['rotation']:g}°")
    if data.get("hflip"):
        parts.append("horizontal flip")
    if data.get("vflip"):
        parts.append("vertical flip")
    return ", ".join(parts) or "none"


def _compression(section: dict) -> list[tuple[str, str]]:
    topk, bits = section.get("topk"), section.get("quant_bits")
    scope = "each tensor" if section.get("topk_scope") == "tensor" else "the whole update"
    rows = [
        ("sparsification", f"top {topk * 100:g}% of entries of {scope}" if topk else "none"),
        ("quantisation", f"{bits}-bit" if bits else "none (fp32)"),
        ("lossless coding", fmt.setting(bool(section.get("lossless")))),
    ]
    if topk or bits:
        rows.append(("error feedback", fmt.setting(section.get("error_feedback"))))
    rows.append(("downlink", fmt.setting(section.get("downlink", "fp32"))))
    return rows


def _privacy_keys(section: dict) -> tuple[str, ...]:
    if section.get("mode", "none") == "none":
        return ("mode",)
    return (
        "mode",
        "noise_multiplier",
        "target_epsilon",
        "delta",
        "max_grad_norm",
        "clipping",
        "clip_side",
        "epsilon_budget",
    )


def _confusion(value: Any) -> np.ndarray | None:
    """The matrix as a square int array, or None when it is missing or malformed."""
    try:
        matrix = np.asarray(value if value else [], dtype=float)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.isfinite(matrix).all():
        return None
    return matrix.astype(int)


def _class_names(
    config: dict,
    roc: RocData | None,
    confusion: np.ndarray | None,
    clients: list[ClientResultRecord],
) -> list[str]:
    declared = config.get("data", {}).get("class_names")
    if declared:
        return [str(name) for name in declared]
    if roc is not None and roc.class_names:
        return list(roc.class_names)
    if confusion is not None:
        return [str(k) for k in range(confusion.shape[0])]
    return sorted({str(k) for client in clients for k in _counts_of(client, [])})


def _counts_of(client: ClientResultRecord, class_names: list[str]) -> dict[str, int]:
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


def _class_counts(
    clients: list[ClientResultRecord], class_names: list[str]
) -> dict[str, dict[str, int]]:
    counts = {}
    for hospital in sorted({c.hospital for c in clients}, key=natural_key):
        latest = _latest_ok(clients, hospital, "train")
        found = _counts_of(latest, class_names) if latest else {}
        if found:
            counts[hospital] = found
    return counts


def _train_examples(clients: list[ClientResultRecord], hospitals: list[str]) -> dict[str, int]:
    """Each hospital's training examples in its last successful reply (when it had one)."""
    latest = {h: _latest_ok(clients, h, "train") for h in hospitals}
    return {h: c.num_examples for h, c in latest.items() if c is not None and c.num_examples}


def _data_table(
    clients: list[ClientResultRecord], hospitals: list[str], class_names: list[str]
) -> Table:
    counts = _class_counts(clients, class_names)
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
    return _without_empty_columns(table, keep=1)


def _curves(rounds: list[RoundRecord]) -> dict[str, list[float | None]]:
    curves: dict[str, list[float | None]] = {}
    for name in CURVE_METRICS:
        curves[name] = [_number((r.metrics or {}).get(name)) for r in rounds]
    curves["train_loss"] = [_number(metric(r.train_metrics, "loss", "train")) for r in rounds]
    return curves


def metric(metrics: dict[str, Any] | None, name: str, phase: str) -> Any:
    """``name`` from a hospital's metrics; training replies may prefix it with ``train_``."""
    metrics = metrics or {}
    if name in metrics or phase != "train":
        return metrics.get(name)
    return metrics.get(f"train_{name}")


def _number(value: Any) -> float | None:
    return float(value) if fmt.is_number(value) else None


def _hospital_series(clients: list[ClientResultRecord], phase: str) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for client in clients:
        accuracy = metric(client.metrics, "accuracy", client.phase)
        if client.phase == phase and client.status == "ok" and fmt.is_number(accuracy):
            series[client.hospital][client.round] = float(accuracy)
    return {hospital: series[hospital] for hospital in sorted(series, key=natural_key)}


def _metrics_table(final: dict, confusion: np.ndarray | None, class_names: list[str]) -> Table:
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


def _last_round_table(clients: list[ClientResultRecord], last_round: int | None) -> Table:
    columns = [
        "Hospital", "Phase", "Status", "Examples", "Loss", "Accuracy", "F1",
        "Duration", "Upload", "Download", "ε", "Note",
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
                client.error or "",
            ]
        )
    numeric = [False, False, False] + [True] * 8 + [False]
    return _without_empty_columns(Table(columns, rows, numeric, frozenset(failed)), keep=4)


def _without_empty_columns(table: Table, keep: int) -> Table:
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


def _traffic_table(rounds: list[RoundRecord]) -> Table:
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


def _audit(run: RunRecord) -> dict[str, Any] | None:
    audit = (run.final_metrics or {}).get("audit")
    return audit if isinstance(audit, dict) else None


AUDIT_LABELS = {
    "auc": "Attack AUC",
    "tpr_at_1pct_fpr": "True positive rate at 1% false positives",
}


def _audit_rows(audit: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not audit:
        return []
    rows = [
        (AUDIT_LABELS[key], fmt.decimal(audit[key]) if key == "auc" else fmt.percent(audit[key]))
        for key in AUDIT_LABELS
        if key in audit
    ]
    canaries = audit.get("canaries")
    if isinstance(canaries, dict):
        planted, held_out = canaries.get("n_members"), canaries.get("n_nonmembers")
        rows += [
            ("Attack AUC on planted canaries", fmt.decimal(canaries.get("auc"))),
            (
                "True positive rate at 1% false positives, canaries",
                fmt.percent(canaries.get("tpr_at_1pct_fpr")),
            ),
            ("Planted / held-out canaries", f"{fmt.integer(planted)} / {fmt.integer(held_out)}"),
        ]
    others = [k for k, v in audit.items() if k not in AUDIT_LABELS and not isinstance(v, dict)]
    return rows + [(key.replace("_", " "), fmt.setting(audit[key])) for key in sorted(others)]


def _audit_reading(audit: dict[str, Any] | None) -> str:
    """A plain-language reading of a membership-inference attack's success."""
    auc = (audit or {}).get("auc")
    if not fmt.is_number(auc):
        return ""
    if auc <= 0.55:
        return (
            f"An attack AUC of {auc:.3f} is close to 0.5 (guessing): the attacker could barely "
            "tell the hospitals' training images from unseen ones."
        )
    if auc <= 0.65:
        return (
            f"An attack AUC of {auc:.3f} shows some membership leakage: the model remembers "
            "part of its training images."
        )
    return (
        f"An attack AUC of {auc:.3f} shows substantial membership leakage: consider "
        "differential privacy (privacy.mode) before sharing this model."
    )


def _model_name(config: dict) -> str:
    model = config.get("model", {})
    name = model.get("name", fmt.MISSING)
    return f"{name} ({model['norm']} norm)" if model.get("norm") else str(name)
