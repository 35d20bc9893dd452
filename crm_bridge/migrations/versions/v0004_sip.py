"""SIP: the agent's browser softphone switch, and the mystery caller's test calls.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("app_user") as batch:
        batch.add_column(
            sa.Column("softphone", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "probe_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("script", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("answered_s", sa.Float(), nullable=True),
        sa.Column("ivr_s", sa.Float(), nullable=True),
        sa.Column("agent_s", sa.Float(), nullable=True),
        sa.Column("greeting_ok", sa.Boolean(), nullable=True),
        sa.Column("greeting_score", sa.Float(), nullable=True),
        sa.Column("digits", sa.String(length=64), nullable=True),
        sa.Column("recording", sa.String(length=512), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('passed', 'failed', 'no_answer', 'error')", name="ck_probe_run_outcome"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("outcome", "script", "started_at"):
        op.create_index(f"ix_probe_run_{column}", "probe_run", [column])


def downgrade() -> None:
    op.drop_table("probe_run")
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("softphone")
