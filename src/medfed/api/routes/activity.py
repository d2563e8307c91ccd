"""The activity log: who logged in, created, started, stopped runs and downloaded what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from medfed.api.deps import AdminUser, StoreDep
from medfed.api.errors import ADMIN_ONLY
from medfed.api.schemas import ActivityEntryOut, ActivityPage

router = APIRouter(prefix="/activity", tags=["activity"])
MAX_PAGE = 1_000_000


@router.get("", response_model=ActivityPage, responses=ADMIN_ONLY)
def activity_log(
    store: StoreDep,
    _user: AdminUser,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ActivityPage:
    """One page of the activity log, newest first."""
    entries = store.activity_log(limit=page_size, offset=(page - 1) * page_size)
    return ActivityPage(
        items=[ActivityEntryOut.model_validate(e, from_attributes=True) for e in entries],
        total=store.count_activity(),
        page=page,
        page_size=page_size,
    )
