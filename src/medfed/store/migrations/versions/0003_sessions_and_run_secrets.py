"""Sessions survive restarts (revoked tokens, a token version per user); stored runs keep
only what defines them (no database URLs, passwords, Redis URL, API secret or home).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TABLE_OPTIONS = {"mysql_charset": "utf8mb4"}
# The sections that define a run, as of this revision (medfed.config.RUN_SECTIONS).
RUN_SECTIONS = (
    "name",
    "data",
    "model",
    "training",
    "partition",
    "federated",
    "privacy",
    "compression",
)
BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "revoked_tokens",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_revoked_tokens")),
        **TABLE_OPTIONS,
    )
    op.create_index(
        op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False
    )
    strip_run_secrets()


def strip_run_secrets() -> None:
    """Keep only the run-defining sections of every stored run's config."""
    runs = sa.table("runs", sa.column("id", sa.String(32)), sa.column("config", sa.JSON()))
    connection = op.get_bind()
    last = ""
    while True:
        rows = connection.execute(
            sa.select(runs.c.id, runs.c.config)
            .where(runs.c.id > last)
            .order_by(runs.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for run_id, config in rows:
            if isinstance(config, dict) and set(config) - set(RUN_SECTIONS):
                kept = {key: config[key] for key in RUN_SECTIONS if key in config}
                connection.execute(sa.update(runs).where(runs.c.id == run_id).values(config=kept))
        last = rows[-1][0]


def downgrade() -> None:
    # The secrets taken out of stored runs are not put back: the platform's config holds them.
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
