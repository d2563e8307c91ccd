"""Create all tables of the run store.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE_OPTIONS = {"mysql_charset": "utf8mb4"}  # any language's names, whatever the server default


def _id() -> sa.Column:
    return sa.Column("id", AUTO_ID, autoincrement=True, nullable=False)


def _run_id(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f(f"fk_{table}_run_id_runs"), ondelete="CASCADE"
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("num_rounds", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flower_run_id", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("final_metrics", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_runs_created_at"), "runs", ["created_at"])
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])
    op.create_index(op.f("ix_runs_strategy"), "runs", ["strategy"])

    op.create_table(
        "rounds",
        _id(),
        *_run_id("rounds"),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("train_metrics", sa.JSON(), nullable=True),
        sa.Column("evaluate_metrics", sa.JSON(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=True),
        sa.Column("num_clients_ok", sa.Integer(), nullable=False),
        sa.Column("num_clients_failed", sa.Integer(), nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("run_id", "round", name=op.f("uq_rounds_run_id_round")),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "client_results",
        _id(),
        *_run_id("client_results"),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("hospital", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_results")),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_client_results_run_id_round", "client_results", ["run_id", "round"])
    op.create_index("ix_client_results_hospital", "client_results", ["hospital"])

    op.create_table(
        "checkpoints",
        _id(),
        *_run_id("checkpoints"),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("metric_name", sa.String(64), nullable=False),
        sa.Column("metric_value", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_checkpoints_run_id_round", "checkpoints", ["run_id", "round"])

    op.create_table(
        "events",
        _id(),
        *_run_id("events"),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_events_run_id_id", "events", ["run_id", "id"])

    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "audit_log",
        _id(),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("user", sa.String(200), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(1000), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"])
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])

    op.create_table(
        "config_templates",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_config_templates_name")),
        **TABLE_OPTIONS,
    )

    op.create_table(
        "hospitals",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_seen", TIMESTAMP, nullable=False),
        sa.Column("info", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hospitals")),
        sa.UniqueConstraint("name", name=op.f("uq_hospitals_name")),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    for table in (
        "hospitals",
        "config_templates",
        "audit_log",
        "users",
        "events",
        "checkpoints",
        "client_results",
        "rounds",
        "runs",
    ):
        op.drop_table(table)
