"""The run queue: runs wait in status "queued" until the platform has room, oldest first
(``runs.queued_at``); a run whose worker ended without finishing is "interrupted".

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("queued_at", TIMESTAMP, nullable=True))
        batch.create_index("ix_runs_queued_at", ["queued_at"])


def downgrade() -> None:
    runs = sa.table("runs", sa.column("status", sa.String(16)))
    # Statuses older versions do not know: a queued run was never started, an interrupted one
    # stopped without finishing.
    op.execute(runs.update().where(runs.c.status == "queued").values(status="pending"))
    op.execute(runs.update().where(runs.c.status == "interrupted").values(status="stopped"))
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_queued_at")
        batch.drop_column("queued_at")
