"""A round of the ServerApp's loop from its training to its record, and the ways a run ends
early."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord

from medfed.federation.phases import PhaseResult


class RunStopped(Exception):
    """The coordinator asked the run to stop."""


class BudgetSpent(Exception):
    """Too few hospitals have privacy budget left for another round: the run ends early."""


@dataclass
class RoundState:
    """A round from its training to its record; its model is evaluated by the hospitals in
    the next round's training messages (or, after the last round, an evaluate phase).

    Its duration runs from its start to the next round's (or to its record, for the last):
    rounds overlap with their records, so that is the pace of the run."""

    round: int
    arrays: ArrayRecord
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None  # when the next round started
    train: PhaseResult = field(default_factory=PhaseResult)
    train_metrics: Any = None
    bytes_down: int = 0
    recorded: bool = False
    last: bool = False  # the run's last round: its record gives the run's final metrics

    def duration_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started
