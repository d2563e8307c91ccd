"""A run config posted by the dashboard: merged over the server's defaults and validated
with the same model as the CLI. A bad value is a 422 naming the config key (the request body's
schema has every key with its bounds); settings that contradict each other or the server's
defaults (e.g. federated.min_train_clients above num_clients) are a 409 naming them."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from medfed.api.schemas import RUN_CONFIG_SECTIONS
from medfed.config import RUN_SECTIONS, MedfedConfig, run_definition
from medfed.store.database import redact

CONFIG_LOC = ("body", "config")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _section_errors(partial: dict[str, Any]) -> list[dict[str, Any]]:
    errors = []
    allowed = ", ".join(RUN_CONFIG_SECTIONS)
    for key, value in partial.items():
        if key not in RUN_CONFIG_SECTIONS:
            errors.append(
                {
                    "type": "extra_forbidden",
                    "loc": (*CONFIG_LOC, key),
                    "msg": f"'{key}' cannot be set here; a run config has only: {allowed}",
                    "input": value,
                }
            )
        elif not isinstance(value, dict):
            errors.append(
                {
                    "type": "dict_type",
                    "loc": (*CONFIG_LOC, key),
                    "msg": f"'{key}' must be a mapping of its keys",
                    "input": value,
                }
            )
    return errors


def _located(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors with the config key path under ``body.config`` (JSON-safe fields)."""
    return [
        {
            "type": err["type"],
            "loc": (*CONFIG_LOC, *err["loc"]),
            "msg": err["msg"].removeprefix("Value error, "),
        }
        for err in exc.errors(include_url=False)
    ]


def validate_run_config(
    defaults: MedfedConfig, partial: dict[str, Any], name: str | None = None
) -> MedfedConfig:
    """``partial`` over the run sections of ``defaults``, as the server's config with those
    sections (home, database and keys stay the server's); a 422 naming unknown sections,
    a 409 naming settings that contradict each other once merged."""
    errors = _section_errors(partial)
    if errors:
        raise RequestValidationError(errors)
    merged = _deep_merge(run_definition(defaults.to_dict()), partial)
    if name is not None:
        merged["name"] = name
    try:
        run = MedfedConfig.model_validate(merged)
    except ValidationError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, _located(exc)) from None
    return defaults.model_copy(update={key: getattr(run, key) for key in RUN_SECTIONS})


def redact_config(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict safe to show: no API signing key, no model key, no passwords in the
    database or Redis URLs, no MySQL password."""
    shown = copy.deepcopy(values)
    shown.pop("model_key", None)
    if shown.get("api"):
        shown["api"]["secret_key"] = None
    database = shown.get("database") or {}
    for key in ("url", "redis_url"):
        if database.get(key):
            database[key] = redact(database[key])
    if database.get("mysql"):
        database["mysql"]["password"] = ""
    return shown
