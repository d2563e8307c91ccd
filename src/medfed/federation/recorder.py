"""The single writer of a run's progress: store rows, events and encrypted checkpoints.

The ServerApp's round loop tells a :class:`RunRecorder` what happened; the dashboard and the
CLI only read what it wrote, so they work the same for simulated and deployed runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfed.store import EventType, Metric, ResultStatus, RunStatus, RunStore
from medfed.store.artifacts import ArtifactStore

DEVICE_METRIC = Metric.DEVICE  # a hospital result's device, a string among its numeric metrics


@dataclass(frozen=True)
class HospitalFailure:
    """A hospital that failed a phase: its own error, no reply in time, or a refused reply."""

    node_id: int
    hospital: str
    reason: str


@dataclass(frozen=True)
class RoundSummary:
    """What one finished round is recorded with."""

    round: int
    metrics: dict[str, Any]
    duration_s: float
    bytes_up: int
    bytes_down: int
    train_metrics: dict[str, Any]
    evaluate_metrics: dict[str, Any]
    epsilon: float | None
    num_ok: int
    num_failed: int


class RunRecorder:
    """Store writes and published events of one run."""

    def __init__(self, store: RunStore, run_id: str, artifacts: ArtifactStore):
        self.store = store
        self.run_id = run_id
        self.artifacts = artifacts

    def _publish(self, event: EventType, payload: dict[str, Any]) -> None:
        self.store.publish(self.run_id, event, payload)

    # ------------------------------------------------------------------ the run
    def started(self, num_rounds: int, strategy: str, first_round: int, classes: list[str]) -> None:
        self.store.set_status(self.run_id, RunStatus.RUNNING)
        self._publish(
            EventType.RUN_STARTED,
            {
                "num_rounds": num_rounds,
                "strategy": strategy,
                "first_round": first_round,
                "class_names": classes,
            },
        )

    def finished(self, best_round: int | None) -> None:
        done = self.store.rounds(self.run_id)
        final = done[-1].metrics if done else {}
        self.store.set_final_metrics(self.run_id, {**final, Metric.BEST_ROUND: best_round})
        self.store.set_status(self.run_id, RunStatus.FINISHED)
        self._publish(EventType.RUN_FINISHED, {"final_metrics": final})

    def failed(self, reason: str) -> None:
        self.store.set_status(self.run_id, RunStatus.FAILED, error=reason)
        self._publish(EventType.RUN_FAILED, {"error": reason})

    def stopped(self) -> None:
        self.store.set_status(self.run_id, RunStatus.STOPPED)
        self._publish(EventType.RUN_STOPPED, {})

    def note(self, message: str) -> None:
        self._publish(EventType.RUN_NOTE, {"message": message})

    def budget_spent(self, server_round: int, hospitals: list[str]) -> None:
        self._publish(
            EventType.PRIVACY_BUDGET_SPENT,
            {"round": server_round, "hospitals": ", ".join(hospitals)},
        )

    # --------------------------------------------------------------- the rounds
    def round_started(self, server_round: int) -> None:
        self._publish(EventType.ROUND_STARTED, {"round": server_round})

    def replied(self, server_round: int, phase: str, hospital: str, content: Any) -> None:
        """A hospital's accepted (checked) reply to one phase: its metrics, and the device it
        used (cpu, cuda, mps: see :func:`reply_device`) kept in them as ``"device"``."""
        metrics = plain(content["metrics"])
        device = reply_device(content)
        if device is not None:
            metrics[DEVICE_METRIC] = device
        self.store.record_client_result(
            self.run_id,
            server_round,
            hospital=hospital,
            phase=phase,
            status=ResultStatus.OK,
            num_examples=int(metrics.get(Metric.NUM_EXAMPLES, 0)),
            metrics=metrics,
            duration_s=float(metrics.get(Metric.SECONDS, 0.0)),
            bytes_up=int(metrics.get(Metric.BYTES_UP, 0)),
            bytes_down=int(metrics.get(Metric.BYTES_DOWN, 0)),
        )
        self.store.touch_hospital(hospital)
        self._publish(
            EventType.CLIENT_REPLIED,
            {
                "round": server_round,
                "hospital": hospital,
                "phase": phase,
                "num_examples": int(metrics.get(Metric.NUM_EXAMPLES, 0)),
                "metrics": metrics,
            },
        )

    def failed_hospital(self, server_round: int, phase: str, failure: HospitalFailure) -> None:
        self.store.record_client_result(
            self.run_id,
            server_round,
            hospital=failure.hospital,
            phase=phase,
            status=ResultStatus.FAILED,
            error=failure.reason[:2000],
        )
        self._publish(
            EventType.CLIENT_FAILED,
            {
                "round": server_round,
                "hospital": failure.hospital,
                "phase": phase,
                "error": failure.reason,
            },
        )

    def round_finished(self, summary: RoundSummary) -> None:
        self.store.record_round(
            self.run_id,
            summary.round,
            metrics=summary.metrics,
            duration_s=summary.duration_s,
            bytes_up=summary.bytes_up,
            bytes_down=summary.bytes_down,
            train_metrics=summary.train_metrics,
            evaluate_metrics=summary.evaluate_metrics,
            epsilon=summary.epsilon,
            num_clients_ok=summary.num_ok,
            num_clients_failed=summary.num_failed,
        )
        self._publish(
            EventType.ROUND_FINISHED,
            {
                "round": summary.round,
                "metrics": summary.metrics,
                "duration_s": summary.duration_s,
                "bytes_up": summary.bytes_up,
                "bytes_down": summary.bytes_down,
                "epsilon": summary.epsilon,
            },
        )

    # ------------------------------------------------------------ checkpoints
    def checkpoint(
        self,
        server_round: int,
        state: dict[str, Any],
        config: dict[str, Any],
        accuracy: float | None,
    ) -> None:
        """The global weights after ``server_round``, encrypted and bound to run and round."""
        path = self.artifacts.save_state_dict(
            f"{self.run_id}/round-{server_round:04d}",
            state,
            {"run_id": self.run_id, "round": server_round, "config": config},
            run_id=self.run_id,
            round=server_round,
        )
        self.store.record_checkpoint(
            self.run_id,
            server_round,
            str(path),
            metric_name=Metric.ACCURACY,
            metric_value=accuracy,
            size_bytes=path.stat().st_size,
        )

    def resume_point(self) -> tuple[dict[str, Any] | None, int]:
        """The weights and round of the last finished round's checkpoint (None, 0 without
        one); later rounds are forgotten, so they are trained again. A checkpoint whose round
        was never recorded (the process died between the two writes) is not a finished round."""
        recorded = {r.round for r in self.store.rounds(self.run_id)} | {0}
        finished = [c for c in self.store.checkpoints(self.run_id) if c.round in recorded]
        if not finished:
            self.store.delete_rounds_after(self.run_id, 0)
            return None, 0
        checkpoint = finished[-1]
        state, _ = self.artifacts.load_state_dict(
            Path(checkpoint.path), run_id=self.run_id, round=checkpoint.round
        )
        self.store.delete_rounds_after(self.run_id, checkpoint.round)
        return state, checkpoint.round


def reply_device(content: Any) -> str | None:
    """The device a checked reply says its hospital used (its ``info``), or None."""
    try:
        device = content["info"][DEVICE_METRIC]
    except (KeyError, TypeError):
        return None
    return device if isinstance(device, str) else None


def plain(values: Any) -> dict[str, Any]:
    """JSON-able copy of a MetricRecord or metrics dict; a flat confusion matrix made square."""
    if values is None:
        return {}
    out = {}
    for key, value in dict(values).items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = list(value) if isinstance(value, tuple | list) else value
    if "confusion-matrix" in out:  # as hospitals send it
        flat = out.pop("confusion-matrix")
        n = int(round(len(flat) ** 0.5))
        out[Metric.CONFUSION_MATRIX] = [list(flat[i * n : (i + 1) * n]) for i in range(n)]
    return out
