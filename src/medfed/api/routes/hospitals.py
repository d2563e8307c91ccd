"""Hospitals that have joined runs, and whether they are online."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from medfed.api.deps import CurrentUser, StoreDep
from medfed.api.schemas import HospitalOut
from medfed.store.models import utcnow

router = APIRouter(prefix="/hospitals", tags=["hospitals"])

ONLINE_WINDOW = timedelta(minutes=5)


@router.get("", response_model=list[HospitalOut])
def list_hospitals(store: StoreDep, _user: CurrentUser) -> list[HospitalOut]:
    """Known hospitals, the runs each took part in, online when seen in the last 5 minutes."""
    now = utcnow()
    return [
        HospitalOut(
            name=h.name,
            last_seen=h.last_seen,
            runs=list(h.run_ids),
            status="online" if h.last_seen and now - h.last_seen <= ONLINE_WINDOW else "offline",
        )
        for h in store.list_hospitals()
    ]
