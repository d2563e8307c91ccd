"""Named run configurations saved for reuse."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from medfed.errors import StoreError
from medfed.store import models as m
from medfed.store.base import StoreBase, from_row, jsonable
from medfed.store.records import TemplateRecord


class TemplatesMixin(StoreBase):
    """The config templates table."""

    def save_template(
        self, name: str, config: dict[str, Any], created_by: str | None = None
    ) -> TemplateRecord:
        """Save a named run configuration, replacing one of the same name."""
        config = jsonable(config, "config")
        with self._session() as session:
            template = session.scalar(select(m.ConfigTemplate).where(m.ConfigTemplate.name == name))
            if template is None:
                template = m.ConfigTemplate(name=name, config=config, created_by=created_by)
                session.add(template)
            else:
                template.config = config
                template.created_by = created_by
            session.flush()
            return from_row(TemplateRecord, template)

    def list_templates(self) -> list[TemplateRecord]:
        with self._session() as session:
            rows = session.scalars(select(m.ConfigTemplate).order_by(m.ConfigTemplate.name))
            return [from_row(TemplateRecord, row) for row in rows]

    def get_template(self, name: str) -> TemplateRecord:
        with self._session() as session:
            row = session.scalar(select(m.ConfigTemplate).where(m.ConfigTemplate.name == name))
            if row is None:
                names = session.scalars(select(m.ConfigTemplate.name)).all()
                known = ", ".join(sorted(names)) or "none yet"
                raise StoreError(f"no config template {name!r}; saved templates: {known}")
            return from_row(TemplateRecord, row)
