"""Hospitals: when they were last seen, their registration and Flower node."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.errors import StoreError
from medfed.store import models as m
from medfed.store.base import StoreBase, from_row, jsonable
from medfed.store.records import HospitalRecord


class HospitalsMixin(StoreBase):
    """The hospitals table, with the runs each hospital sent results to."""

    def touch_hospital(self, name: str, info: dict[str, Any] | None = None) -> None:
        """Mark a hospital as seen now; ``info`` (when given) replaces what was known."""
        name = str(name)
        with self._session() as session:
            hospital = session.scalar(select(m.Hospital).where(m.Hospital.name == name))
            if hospital is None:
                session.add(
                    m.Hospital(name=name, last_seen=m.utcnow(), info=jsonable(info, "info"))
                )
                return
            hospital.last_seen = m.utcnow()
            if info is not None:
                hospital.info = jsonable(info, "info")

    def register_hospital(
        self, name: str, public_key: str, fingerprint: str, *, registered_by: str | None = None
    ) -> HospitalRecord:
        """Register ``name`` with its public key; a removed hospital's name can be reused."""
        with self._session() as session:
            hospital = session.scalar(select(m.Hospital).where(m.Hospital.name == name))
            if hospital is not None and hospital.public_key and hospital.removed_at is None:
                raise StoreError(
                    f"hospital {name!r} is already registered (key {hospital.fingerprint}): "
                    "remove it first to give it a new key"
                )
            if hospital is None:
                hospital = m.Hospital(name=name)
                session.add(hospital)
            hospital.public_key = public_key
            hospital.fingerprint = fingerprint
            hospital.node_id = None
            hospital.registered_at = m.utcnow()
            hospital.registered_by = registered_by
            hospital.removed_at = None
        return self.get_hospital(name)

    def set_hospital_node(self, name: str, node_id: int | None) -> None:
        """The Flower node id the SuperLink gave the hospital's key (signed 64-bit)."""
        with self._session() as session:
            self._hospital(session, name).node_id = node_id

    def remove_hospital(self, name: str) -> HospitalRecord:
        """Withdraw a hospital's registration; its results stay in the history."""
        with self._session() as session:
            hospital = self._hospital(session, name)
            if not hospital.public_key or hospital.removed_at is not None:
                raise StoreError(f"hospital {name!r} is not registered: nothing to remove")
            hospital.removed_at = m.utcnow()
            hospital.node_id = None
        return self.get_hospital(name)

    def get_hospital(self, name: str) -> HospitalRecord:
        """One hospital, with the runs it took part in."""
        for hospital in self.list_hospitals():
            if hospital.name == name:
                return hospital
        raise _no_hospital(name)

    def hospital_by_node(self, node_id: int) -> HospitalRecord | None:
        """The registered hospital holding Flower node ``node_id``, if any."""
        with self._session() as session:
            row = session.scalar(
                select(m.Hospital).where(
                    m.Hospital.node_id == node_id, m.Hospital.removed_at.is_(None)
                )
            )
            return None if row is None else from_row(HospitalRecord, row, run_ids=())

    def list_hospitals(self) -> list[HospitalRecord]:
        """Known hospitals, each with the runs it sent results to (oldest run first)."""
        joined = (
            select(m.ClientResult.hospital, m.ClientResult.run_id)
            .join(m.Run, m.Run.id == m.ClientResult.run_id)
            .group_by(m.ClientResult.hospital, m.ClientResult.run_id, m.Run.created_at)
            .order_by(m.Run.created_at, m.ClientResult.run_id)
        )
        with self._session() as session:
            run_ids: dict[str, list[str]] = {}
            for hospital, run_id in session.execute(joined):
                run_ids.setdefault(hospital, []).append(run_id)
            hospitals = session.scalars(select(m.Hospital).order_by(m.Hospital.name)).all()
            return [
                from_row(HospitalRecord, h, run_ids=tuple(run_ids.get(h.name, ())))
                for h in hospitals
            ]

    @staticmethod
    def _hospital(session: Session, name: str) -> m.Hospital:
        row = session.scalar(select(m.Hospital).where(m.Hospital.name == name))
        if row is None:
            raise _no_hospital(name)
        return row


def _no_hospital(name: str) -> StoreError:
    return StoreError(f"no hospital {name!r}; see `medfed hospital list`")
