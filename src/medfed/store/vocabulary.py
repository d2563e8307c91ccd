"""The names the run store records, each list written once: run statuses, event types, modes,
phases, result statuses, roles, and the keys of stored metrics.

The members are strings (``RunStatus.QUEUED == "queued"``), stored and sent as they are; the
API serves the lists the web UI needs (``GET /api/vocabulary``).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"  # waiting for room on the platform
    PENDING = "pending"  # created, or admitted and starting
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"  # its worker ended before the run did (resumable)


# Being trained, or about to be: a worker (or a SuperLink) owns the run.
ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)
# The run has ended; finished_at is stamped.
FINAL_STATUSES = (
    RunStatus.FINISHED,
    RunStatus.FAILED,
    RunStatus.STOPPED,
    RunStatus.INTERRUPTED,
)
# Ended by its own round loop (not interrupted from outside): the queue's room is free again.
ENDED_ON_ITS_OWN = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.STOPPED)


class EventType(StrEnum):
    """The events a run publishes, in about the order they come."""

    RUN_QUEUED = "run_queued"
    RUN_ADMITTED = "run_admitted"
    RUN_STARTED = "run_started"
    ROUND_STARTED = "round_started"
    CLIENT_REPLIED = "client_replied"
    CLIENT_FAILED = "client_failed"
    ROUND_FINISHED = "round_finished"
    RUN_NOTE = "run_note"
    PRIVACY_BUDGET_SPENT = "privacy_budget_spent"
    RUN_FINISHED = "run_finished"
    RUN_FAILED = "run_failed"
    RUN_STOPPED = "run_stopped"
    RUN_INTERRUPTED = "run_interrupted"


# The last event of a run's life (until it is started again).
TERMINAL_EVENTS = frozenset(
    {
        EventType.RUN_FINISHED,
        EventType.RUN_FAILED,
        EventType.RUN_STOPPED,
        EventType.RUN_INTERRUPTED,
    }
)


class Mode(StrEnum):
    """Where a run's hospitals are."""

    SIMULATION = "simulation"  # simulated hospitals on the platform host
    DEPLOYMENT = "deployment"  # registered hospitals connected to the platform's SuperLink


class Phase(StrEnum):
    """The two halves of a round a hospital answers."""

    TRAIN = "train"
    EVALUATE = "evaluate"


class ResultStatus(StrEnum):
    """How a hospital's part in a phase ended."""

    OK = "ok"
    FAILED = "failed"


class Role(StrEnum):
    """What a dashboard user may do."""

    ADMIN = "admin"  # starts, stops and cancels runs, downloads models, manages hospitals
    VIEWER = "viewer"  # reads


class Metric(StrEnum):
    """Keys of the metrics stored with a round, a hospital's result and a run's final metrics
    (the hyphenated ones as hospitals send them)."""

    LOSS = "loss"
    ACCURACY = "accuracy"
    F1 = "f1"
    AUC = "auc"
    CONFUSION_MATRIX = "confusion_matrix"
    NUM_EXAMPLES = "num-examples"
    SECONDS = "seconds"
    BYTES_UP = "bytes-up"
    BYTES_DOWN = "bytes-down"
    DEVICE = "device"  # the device a hospital used (cpu, cuda, mps): a string
    BEST_ROUND = "best_round"
    AUDIT = "audit"  # the membership-inference audit of the run's final model


# The curves a run is drawn with, in the order they are shown.
CURVE_METRICS = (Metric.ACCURACY, Metric.F1, Metric.AUC, Metric.LOSS)
