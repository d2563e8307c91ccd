"""Per-site truth: how the final global model does at each hospital, on the hospital's own
held-out split, from the evaluate replies of the run's last round (under ``federated.bn:
local`` each hospital evaluated with its own BatchNorm statistics)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from medfed.store.records import ClientResultRecord


@dataclass
class SiteResult:
    """One hospital's evaluation of the final model and its class balance."""

    hospital: str
    status: str
    num_examples: int
    accuracy: float | None
    auc: float | None
    confusion_matrix: list[list[int]] | None
    held_out_counts: list[int]  # per class, from the confusion matrix's rows
    train_counts: list[int]  # per class, from the hospital's training reply
    error: str | None = None
    worst: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SiteTable:
    """Every hospital's result in ``round``; ``worst`` names the lowest accuracy."""

    round: int | None
    class_names: list[str]
    sites: list[SiteResult] = field(default_factory=list)
    worst: str | None = None
    bn: str = "average"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sites": [site.to_dict() for site in self.sites]}


def site_table(
    clients: list[ClientResultRecord], class_names: list[str], bn: str = "average"
) -> SiteTable:
    """The per-site table of the last round that has evaluate results (any phase else)."""
    evaluated = [c for c in clients if c.phase == "evaluate"]
    if not evaluated:
        return SiteTable(None, list(class_names), bn=bn)
    last = max(c.round for c in evaluated)
    if not class_names:  # the run did not name them: as many as the confusion matrices have
        sizes = [
            len(m)
            for c in evaluated
            if isinstance(m := (c.metrics or {}).get("confusion_matrix"), list)
        ]
        class_names = [str(k) for k in range(max(sizes, default=0))]
    chosen = {c.hospital: c for c in evaluated if c.round == last}
    sites = [
        _site(chosen[name], clients, len(class_names)) for name in sorted(chosen, key=_natural)
    ]
    scored = [s for s in sites if s.accuracy is not None]
    worst = (
        min(scored, key=lambda s: (s.accuracy, s.auc if s.auc is not None else 1.0))
        if (len(scored) > 1)
        else None
    )
    if worst is not None:
        worst.worst = True
    return SiteTable(last, list(class_names), sites, worst.hospital if worst else None, bn)


def _site(
    result: ClientResultRecord, clients: list[ClientResultRecord], num_classes: int
) -> SiteResult:
    metrics = result.metrics or {}
    matrix = _matrix(metrics.get("confusion_matrix"), num_classes)
    return SiteResult(
        hospital=result.hospital,
        status=result.status,
        num_examples=int(result.num_examples or 0),
        accuracy=_unit(metrics.get("accuracy")) if result.status == "ok" else None,
        auc=_unit(metrics.get("auc")) if result.status == "ok" else None,
        confusion_matrix=matrix,
        held_out_counts=[sum(row) for row in matrix] if matrix else [],
        train_counts=_train_counts(clients, result.hospital, result.round, num_classes),
        error=result.error,
    )


def _train_counts(
    clients: list[ClientResultRecord], hospital: str, round: int, num_classes: int
) -> list[int]:
    """Class counts of the hospital's latest successful training reply up to ``round``."""
    replies = [
        c
        for c in clients
        if c.hospital == hospital and c.phase == "train" and c.status == "ok" and c.round <= round
    ]
    for reply in sorted(replies, key=lambda c: -c.round):
        metrics = reply.metrics or {}
        counts = metrics.get("class-counts", metrics.get("class_counts"))
        if isinstance(counts, list) and len(counts) == num_classes:
            return [int(v) for v in counts]
    return []


def _matrix(value: Any, num_classes: int) -> list[list[int]] | None:
    if not isinstance(value, list) or len(value) != num_classes:
        return None
    try:
        rows = [[int(v) for v in row] for row in value]
    except (TypeError, ValueError):
        return None
    return rows if all(len(row) == num_classes for row in rows) else None


def _unit(value: Any) -> float | None:
    """A 0..1 score, or None (a hospital with one class sends AUC -1: not defined)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def _natural(name: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
