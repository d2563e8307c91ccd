"""The run store: SQL database of runs, rounds, hospitals' results and events, plus
encrypted model artifacts. SQLite by default; MySQL/MariaDB and PostgreSQL by URL."""

from medfed.store.artifacts import ArtifactStore
from medfed.store.records import (
    ActivityRecord,
    CheckpointRecord,
    ClientResultRecord,
    EventRecord,
    HospitalRecord,
    RoundRecord,
    RunRecord,
    TemplateRecord,
    UserRecord,
)
from medfed.store.repository import RunStore
from medfed.store.vocabulary import (
    ACTIVE_STATUSES,
    ENDED_ON_ITS_OWN,
    FINAL_STATUSES,
    TERMINAL_EVENTS,
    EventType,
    Metric,
    Mode,
    Phase,
    ResultStatus,
    Role,
    RunStatus,
)

__all__ = [
    "ACTIVE_STATUSES",
    "ENDED_ON_ITS_OWN",
    "FINAL_STATUSES",
    "TERMINAL_EVENTS",
    "ActivityRecord",
    "ArtifactStore",
    "CheckpointRecord",
    "ClientResultRecord",
    "EventRecord",
    "EventType",
    "HospitalRecord",
    "Metric",
    "Mode",
    "Phase",
    "ResultStatus",
    "Role",
    "RoundRecord",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "TemplateRecord",
    "UserRecord",
]
