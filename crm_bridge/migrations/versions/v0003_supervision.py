"""Supervision: queue calls (wallboard "today" figures, reports), spy sessions, private messages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def _indexes(table: str, *columns: str, unique: Sequence[str] = ()) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=column in unique)


def upgrade() -> None:
    op.create_table(
        "queue_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("linked_id", sa.String(length=128), nullable=True),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("lang", sa.String(length=2), nullable=True),
        sa.Column("request_type", sa.String(length=64), nullable=True),
        sa.Column("case_reference", sa.String(length=32), nullable=True),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("queued_at", _UTC, nullable=False),
        sa.Column("answered_at", _UTC, nullable=True),
        sa.Column("ended_at", _UTC, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("hold_s", sa.Float(), nullable=True),
        sa.Column("talk_s", sa.Float(), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("transferred", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('completed', 'abandoned', 'unanswered', 'lost')",
            name="ck_queue_call_outcome",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes(
        "queue_call",
        "agent",
        "call_id",
        "case_reference",
        "outcome",
        "queued_at",
        "request_type",
        unique=["call_id"],
    )
    op.create_index("ix_queue_call_queue_queued_at", "queue_call", ["queue", "queued_at"])

    op.create_table(
        "spy_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("supervisor_id", sa.Integer(), nullable=True),
        sa.Column("supervisor", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("case_reference", sa.String(length=32), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("modes", sa.String(length=255), nullable=False),
        sa.Column("spy_channel", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("ended_at", _UTC, nullable=True),
        sa.CheckConstraint("mode IN ('listen', 'whisper', 'barge')", name="ck_spy_session_mode"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("spy_session", "call_id", "started_at", "supervisor_id")

    op.create_table(
        "supervisor_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender_id", sa.Integer(), nullable=True),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("sent_at", _UTC, nullable=False),
        sa.Column("read_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(["recipient_id"], ["app_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("supervisor_message", "recipient_id", "sender_id", "sent_at")


def downgrade() -> None:
    for table in ("supervisor_message", "spy_session", "queue_call"):
        op.drop_table(table)
