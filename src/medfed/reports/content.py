"""What a report says, gathered from the run store once and shared by the HTML and PDF views."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from medfed import __version__
from medfed.reports import clinical_tables, tables
from medfed.reports import formatting as fmt
from medfed.reports import settings as summary
from medfed.reports.clinical import FinalEvaluation
from medfed.reports.roc import RocData
from medfed.reports.sites import SiteTable, site_table
from medfed.reports.tables import EMPTY_TABLE, Table, metric, natural_key
from medfed.store.records import CheckpointRecord, ClientResultRecord, RoundRecord, RunRecord
from medfed.store.vocabulary import CURVE_METRICS


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
    evaluation: FinalEvaluation | None = None
    operating_table: Table = EMPTY_TABLE
    ece: str = fmt.MISSING
    sites: SiteTable | None = None
    sites_table: Table = EMPTY_TABLE


def gather_content(
    run: RunRecord,
    rounds: list[RoundRecord],
    clients: list[ClientResultRecord],
    checkpoint: CheckpointRecord | None,
    roc: RocData | None,
    roc_note: str,
    *,
    evaluation: FinalEvaluation | None = None,
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
    bn = str(config.get("federated", {}).get("bn", "average"))
    sites = site_table(clients, class_names, bn)
    return ReportContent(
        title="Federated evaluation report",
        run_id=str(run.id),
        run_name=run.name or str(run.id),
        status=str(run.status),
        generated_at=fmt.timestamp(datetime.now(UTC)),
        version=__version__,
        strategy=str(run.strategy),
        model=summary.model_name(config),
        delta=fmt.setting(privacy.get("delta")),
        error=run.error,
        kpis=_kpis(run, rounds, final, hospitals, clients),
        overview=_overview(run, rounds, checkpoint),
        settings=summary.settings_sections(run, config),
        hospitals=hospitals,
        class_names=class_names,
        data_table=tables.data_table(clients, hospitals, class_names),
        class_counts=tables.class_counts(clients, class_names),
        train_examples=tables.train_examples(clients, hospitals),
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
        metrics_table=tables.metrics_table(final, confusion, class_names),
        last_round=last_round,
        last_round_table=tables.last_round_table(clients, last_round),
        durations=[r.duration_s for r in rounds],
        bytes_up=[r.bytes_up for r in rounds],
        bytes_down=[r.bytes_down for r in rounds],
        traffic_table=tables.traffic_table(rounds),
        epsilons={r.round: r.epsilon for r in rounds if fmt.is_number(r.epsilon)},
        privacy=summary.rows(privacy, summary.privacy_keys(privacy)),
        privacy_mode=str(privacy.get("mode", "none")),
        epsilon_budget=_number(privacy.get("epsilon_budget") or privacy.get("target_epsilon")),
        audit=summary.audit_rows(summary.audit_of(run)),
        audit_reading=summary.audit_reading(summary.audit_of(run)),
        roc=roc,
        roc_note=roc_note,
        checkpoint_note=_checkpoint_note(checkpoint),
        checkpoint_round=checkpoint.round if checkpoint is not None else None,
        evaluation=evaluation,
        operating_table=clinical_tables.operating_table(evaluation, confusion),
        ece=fmt.decimal(evaluation.calibration.get("ece")) if evaluation else fmt.MISSING,
        sites=sites,
        sites_table=clinical_tables.sites_table(sites),
    )


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
    return sorted({str(k) for client in clients for k in tables.counts_of(client, [])})


def _curves(rounds: list[RoundRecord]) -> dict[str, list[float | None]]:
    curves: dict[str, list[float | None]] = {}
    for name in CURVE_METRICS:
        curves[name] = [_number((r.metrics or {}).get(name)) for r in rounds]
    curves["train_loss"] = [_number(metric(r.train_metrics, "loss", "train")) for r in rounds]
    return curves


def _number(value: Any) -> float | None:
    return float(value) if fmt.is_number(value) else None


def _hospital_series(clients: list[ClientResultRecord], phase: str) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for client in clients:
        accuracy = metric(client.metrics, "accuracy", client.phase)
        if client.phase == phase and client.status == "ok" and fmt.is_number(accuracy):
            series[client.hospital][client.round] = float(accuracy)
    return {hospital: series[hospital] for hospital in sorted(series, key=natural_key)}
