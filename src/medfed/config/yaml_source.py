"""The YAML file as a settings source of :class:`medfed.config.MedfedConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from medfed.errors import ConfigError

YAML_PATH: dict[str, Path | None] = {"path": None}


class YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file given to :func:`load_config`."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        return read_yaml(self.path)


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping, with a ConfigError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found: copy config_template.yml to {path} or pass --config"
        )
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(content)}")
    return content
