"""The server's default run configuration and the JSON schema of the config model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from medfed.api.deps import ConfigDep, CurrentUser
from medfed.api.errors import LOGGED_IN
from medfed.api.runconfig import redact_config
from medfed.config import MedfedConfig

router = APIRouter(prefix="/config", tags=["config"])


@router.get("/defaults", responses=LOGGED_IN)
def defaults(cfg: ConfigDep, _user: CurrentUser) -> dict[str, Any]:
    """The full default MedfedConfig the server merges posted run configs over."""
    return redact_config(cfg.to_dict())


@router.get("/schema", responses=LOGGED_IN)
def schema(_user: CurrentUser) -> dict[str, Any]:
    """JSON schema of MedfedConfig: types, bounds and enums (strategies, models, schemes)."""
    return MedfedConfig.model_json_schema()
