"""The audit log: who logged in, created, started, stopped runs and downloaded what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from medfed.api.deps import AdminUser, StoreDep
from medfed.api.errors import ADMIN_ONLY
from medfed.api.schemas import AuditEntryOut, AuditPage

router = APIRouter(prefix="/audit", tags=["audit"])
MAX_PAGE = 1_000_000


@router.get("", response_model=AuditPage, responses=ADMIN_ONLY)
def audit_log(
    store: StoreDep,
    _user: AdminUser,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditPage:
    """One page of the audit log, newest first."""
    entries = store.audit_log(limit=page_size, offset=(page - 1) * page_size)
    return AuditPage(
        items=[AuditEntryOut.model_validate(e, from_attributes=True) for e in entries],
        total=store.count_audit(),
        page=page,
        page_size=page_size,
    )
