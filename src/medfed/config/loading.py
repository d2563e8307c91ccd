"""Building the configuration: from files, environment and flags, or from a stored dict."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medfed.config.settings import RUN_SECTIONS, MedfedConfig
from medfed.config.yaml_source import YAML_PATH, read_yaml
from medfed.errors import ConfigError

# Keys whose values are never echoed in error messages.
SECRET_KEYS = (
    "api.secret_key",
    "database.url",
    "database.redis_url",
    "database.mysql.password",
    "model_key",
)


def describe_validation_error(exc: ValidationError, source: str = "config") -> str:
    """One line per bad key: the dotted key, the value given and what is allowed."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if not key:
            lines.append(f"{source}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config_template.yml)"
            lines.append(f"{source}: {key}: {msg}")
            continue
        if key in SECRET_KEYS:
            lines.append(f"{source}: {key}: {msg}")
            continue
        shown = value if not isinstance(value, dict) else "{...}"
        lines.append(f"{source}: {key} = {shown!r}: {msg}")
    return "\n".join(lines)


def load_config(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> MedfedConfig:
    """Build the configuration from defaults, YAML, .env, environment and ``overrides``.

    ``overrides`` are CLI flags as a nested dict (``{"federated": {"rounds": 3}}``) or
    dotted keys (``{"federated.rounds": 3}``).
    """
    nested = nest_dotted(overrides or {})
    YAML_PATH["path"] = Path(path) if path is not None else None
    source = str(path) if path is not None else "config"
    try:
        if path is not None:
            read_yaml(Path(path))  # clear error for a missing or malformed file first
        return MedfedConfig(**nested)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None
    except ValueError as exc:  # e.g. a malformed MEDFED_* environment value
        raise ConfigError(f"{source}: {exc}") from None
    finally:
        YAML_PATH["path"] = None


def config_from_dict(values: dict[str, Any], source: str = "config") -> MedfedConfig:
    """Validate a full config dict (e.g. stored with a run, or posted by the dashboard).

    Only ``values`` and defaults count here: no YAML, ``.env`` or environment.
    """
    try:
        return MedfedConfig.model_validate(values, context=None)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None


def run_definition(values: dict[str, Any]) -> dict[str, Any]:
    """What defines a run (:data:`RUN_SECTIONS`) out of a config dict: never the home,
    database, API, deployment or key settings. A copy; unknown keys are dropped too."""
    return {key: copy.deepcopy(values[key]) for key in RUN_SECTIONS if key in values}


def run_config(
    platform: MedfedConfig, definition: dict[str, Any], source: str = "run config"
) -> MedfedConfig:
    """The configuration a run trains with: the platform's own (home, database, keys) with the
    run's stored sections in place of its defaults. A section missing from ``definition``
    takes the model's default, not the platform's."""
    values = run_definition(definition)
    run = config_from_dict(values, source)
    return platform.model_copy(update={key: getattr(run, key) for key in RUN_SECTIONS})


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": 2}}``; None values dropped."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out
