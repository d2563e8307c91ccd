"""Liveness (no login needed)."""

from __future__ import annotations

from fastapi import APIRouter

from medfed import __version__
from medfed.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
def health() -> HealthOut:
    """The server is up; its version."""
    return HealthOut(version=__version__)
