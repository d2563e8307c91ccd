"""The run store: SQL database of runs, rounds, hospitals' results and events, plus
encrypted model artifacts. SQLite by default; MySQL/MariaDB and PostgreSQL by URL."""

from medfed.store.artifacts import ArtifactStore
from medfed.store.records import (
    AuditRecord,
    CheckpointRecord,
    ClientResultRecord,
    EventRecord,
    HospitalRecord,
    RoundRecord,
    RunRecord,
    TemplateRecord,
    UserRecord,
)
from medfed.store.repository import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    MODES,
    PHASES,
    ROLES,
    RUN_STATUSES,
    RunStore,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "MODES",
    "PHASES",
    "ROLES",
    "RUN_STATUSES",
    "ArtifactStore",
    "AuditRecord",
    "CheckpointRecord",
    "ClientResultRecord",
    "EventRecord",
    "HospitalRecord",
    "RoundRecord",
    "RunRecord",
    "RunStore",
    "TemplateRecord",
    "UserRecord",
]
