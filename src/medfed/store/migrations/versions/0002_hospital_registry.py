"""Hospitals registered with a public key: fingerprint, Flower node id, added and removed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("hospitals") as batch:
        batch.alter_column("last_seen", existing_type=TIMESTAMP, nullable=True)
        batch.add_column(sa.Column("public_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(100), nullable=True))
        batch.add_column(sa.Column("node_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("registered_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("registered_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("removed_at", TIMESTAMP, nullable=True))
        batch.create_index("ix_hospitals_node_id", ["node_id"])


def downgrade() -> None:
    with op.batch_alter_table("hospitals") as batch:
        batch.drop_index("ix_hospitals_node_id")
        for column in (
            "removed_at",
            "registered_by",
            "registered_at",
            "node_id",
            "fingerprint",
            "public_key",
        ):
            batch.drop_column(column)
