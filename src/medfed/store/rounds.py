"""Rounds, hospitals' results and checkpoints of a run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from medfed.store import models as m
from medfed.store.base import StoreBase, check_choice, finite_or_none, from_row, jsonable
from medfed.store.records import CheckpointRecord, ClientResultRecord, RoundRecord
from medfed.store.vocabulary import Phase, ResultStatus


class RoundsMixin(StoreBase):
    """The rounds, client results and checkpoints tables."""

    def record_round(
        self,
        run_id: str,
        round: int,
        *,
        metrics: dict[str, Any],
        duration_s: float,
        bytes_up: int = 0,
        bytes_down: int = 0,
        train_metrics: dict[str, Any] | None = None,
        evaluate_metrics: dict[str, Any] | None = None,
        epsilon: float | None = None,
        num_clients_ok: int = 0,
        num_clients_failed: int = 0,
    ) -> None:
        """Record a finished round; recording the same round again replaces it."""
        values = {
            "metrics": jsonable(metrics, "metrics"),
            "train_metrics": jsonable(train_metrics, "train_metrics"),
            "evaluate_metrics": jsonable(evaluate_metrics, "evaluate_metrics"),
            "duration_s": float(duration_s),
            "bytes_up": int(bytes_up),
            "bytes_down": int(bytes_down),
            "epsilon": finite_or_none(epsilon),
            "num_clients_ok": int(num_clients_ok),
            "num_clients_failed": int(num_clients_failed),
            "finished_at": m.utcnow(),
        }
        with self._writing(run_id) as session:
            existing = session.scalar(
                select(m.Round).where(m.Round.run_id == run_id, m.Round.round == round)
            )
            if existing is None:
                session.add(m.Round(run_id=run_id, round=round, **values))
            else:
                for key, value in values.items():
                    setattr(existing, key, value)

    def record_client_result(
        self,
        run_id: str,
        round: int,
        *,
        hospital: str,
        phase: str,
        status: str,
        num_examples: int = 0,
        metrics: dict[str, Any] | None = None,
        duration_s: float | None = None,
        bytes_up: int = 0,
        bytes_down: int = 0,
        epsilon: float | None = None,
        error: str | None = None,
    ) -> None:
        """Record one hospital's reply (or failure) in one phase of a round."""
        check_choice("phase", phase, Phase)
        check_choice("status", status, ResultStatus)
        result = m.ClientResult(
            run_id=run_id,
            round=round,
            hospital=str(hospital),
            phase=phase,
            status=status,
            num_examples=int(num_examples),
            metrics=jsonable(metrics, "metrics"),
            duration_s=None if duration_s is None else float(duration_s),
            bytes_up=int(bytes_up),
            bytes_down=int(bytes_down),
            epsilon=finite_or_none(epsilon),
            error=error,
        )
        with self._writing(run_id) as session:
            session.add(result)

    def record_checkpoint(
        self,
        run_id: str,
        round: int,
        path: str,
        *,
        metric_name: str,
        metric_value: float | None,
        size_bytes: int,
    ) -> None:
        """Record a saved model artifact (see :class:`medfed.store.ArtifactStore`)."""
        checkpoint = m.Checkpoint(
            run_id=run_id,
            round=round,
            path=str(path),
            metric_name=metric_name,
            metric_value=finite_or_none(metric_value),
            size_bytes=int(size_bytes),
        )
        with self._writing(run_id) as session:
            session.add(checkpoint)

    def rounds(self, run_id: str) -> list[RoundRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(m.Round).where(m.Round.run_id == run_id).order_by(m.Round.round)
            ).all()
            return [from_row(RoundRecord, row) for row in rows]

    def client_results(self, run_id: str, round: int | None = None) -> list[ClientResultRecord]:
        """Hospitals' results of a run (of one round when given), by round, then arrival."""
        query = select(m.ClientResult).where(m.ClientResult.run_id == run_id)
        if round is not None:
            query = query.where(m.ClientResult.round == round)
        with self._session() as session:
            rows = session.scalars(query.order_by(m.ClientResult.round, m.ClientResult.id)).all()
            return [from_row(ClientResultRecord, row) for row in rows]

    def checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(m.Checkpoint)
                .where(m.Checkpoint.run_id == run_id)
                .order_by(m.Checkpoint.round, m.Checkpoint.id)
            ).all()
            return [from_row(CheckpointRecord, row) for row in rows]

    def latest_checkpoint(self, run_id: str) -> CheckpointRecord | None:
        """The checkpoint of the highest round (the newest of them), or None."""
        with self._session() as session:
            row = session.scalar(
                select(m.Checkpoint)
                .where(m.Checkpoint.run_id == run_id)
                .order_by(m.Checkpoint.round.desc(), m.Checkpoint.id.desc())
                .limit(1)
            )
            return None if row is None else from_row(CheckpointRecord, row)

    def last_completed_round(self, run_id: str) -> int:
        """The highest recorded round of the run, 0 when none."""
        with self._session() as session:
            return session.scalar(
                select(func.coalesce(func.max(m.Round.round), 0)).where(m.Round.run_id == run_id)
            )

    def delete_rounds_after(self, run_id: str, round: int) -> None:
        """Forget rounds, results and checkpoints past ``round`` (a resumed run redoes them)."""
        with self._session() as session:
            for table in (m.Round, m.ClientResult, m.Checkpoint):
                session.execute(delete(table).where(table.run_id == run_id, table.round > round))
