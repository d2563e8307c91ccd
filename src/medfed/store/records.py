"""Plain records the run store returns (no SQLAlchemy objects leave the store)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from medfed.store.models import utcnow


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    name: str
    mode: str
    status: str
    strategy: str
    num_rounds: int
    config: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    flower_run_id: int | None
    created_by: str | None
    final_metrics: dict[str, Any] | None
    rounds_done: int = 0
    best_accuracy: float | None = None
    queued_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (or to now while running); None before the start."""
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class RoundRecord:
    run_id: str
    round: int
    metrics: dict[str, Any]
    train_metrics: dict[str, Any] | None
    evaluate_metrics: dict[str, Any] | None
    duration_s: float
    bytes_up: int
    bytes_down: int
    epsilon: float | None
    num_clients_ok: int
    num_clients_failed: int
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class ClientResultRecord:
    id: int
    run_id: str
    round: int
    hospital: str
    phase: str
    status: str
    num_examples: int
    metrics: dict[str, Any] | None
    duration_s: float | None
    bytes_up: int
    bytes_down: int
    epsilon: float | None
    error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    id: int
    run_id: str
    round: int
    path: str
    metric_name: str
    metric_value: float | None
    size_bytes: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    run_id: str
    type: str
    payload: dict[str, Any]
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, as relayed to browsers and published on Redis."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    role: str
    created_at: datetime
    token_version: int = 0


@dataclass(frozen=True, slots=True)
class ActivityRecord:
    id: int
    at: datetime
    user: str | None
    action: str
    target: str | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    name: str
    config: dict[str, Any]
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HospitalRecord:
    name: str
    last_seen: datetime | None
    info: dict[str, Any] | None
    run_ids: tuple[str, ...] = ()
    public_key: str | None = None
    fingerprint: str | None = None
    node_id: int | None = None
    registered_at: datetime | None = None
    registered_by: str | None = None
    removed_at: datetime | None = None

    @property
    def registered(self) -> bool:
        """Holds a key the platform accepts now (added, not removed)."""
        return self.public_key is not None and self.removed_at is None

    @property
    def runs_joined(self) -> int:
        return len(self.run_ids)
