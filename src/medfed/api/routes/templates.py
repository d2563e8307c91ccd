"""Named run configurations to start new runs from."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from medfed.api.deps import AdminUser, ConfigDep, CurrentUser, StoreDep
from medfed.api.errors import ADMIN_ONLY, LOGGED_IN, error
from medfed.api.runconfig import validate_run_config
from medfed.api.schemas import TemplateIn, TemplateOut, posted_config
from medfed.errors import StoreError

router = APIRouter(prefix="/templates", tags=["templates"])


@router.get("", response_model=list[TemplateOut], responses=LOGGED_IN)
def list_templates(store: StoreDep, _user: CurrentUser) -> list[TemplateOut]:
    """Every saved template, by name."""
    return [TemplateOut.model_validate(t, from_attributes=True) for t in store.list_templates()]


@router.post(
    "",
    response_model=TemplateOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        **ADMIN_ONLY,
        status.HTTP_409_CONFLICT: error("settings that contradict each other (detail lists them)"),
    },
)
def save_template(
    body: TemplateIn, store: StoreDep, cfg: ConfigDep, user: AdminUser
) -> TemplateOut:
    """Save (or replace) a template; its partial config is validated like a run's."""
    config = posted_config(body.config)
    validate_run_config(cfg, config)
    template = store.save_template(body.name, config, created_by=user.name)
    store.log_activity(user.name, "template.save", body.name)
    return TemplateOut.model_validate(template, from_attributes=True)


@router.get(
    "/{name}",
    response_model=TemplateOut,
    responses={**LOGGED_IN, status.HTTP_404_NOT_FOUND: error("no template of that name")},
)
def get_template(name: str, store: StoreDep, _user: CurrentUser) -> TemplateOut:
    """One template by name."""
    try:
        template = store.get_template(name)
    except StoreError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return TemplateOut.model_validate(template, from_attributes=True)
