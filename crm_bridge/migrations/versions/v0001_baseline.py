"""Baseline: the IVR's tables as ``init_db`` created them before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "citizen",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("national_number", sa.String(length=11), nullable=False),
        sa.Column("first_name", sa.String(), nullable=False),
        sa.Column("last_name", sa.String(), nullable=False),
        sa.Column("preferred_language", sa.String(length=2), nullable=True),
        sa.Column("street", sa.String(), nullable=True),
        sa.Column("postal_code", sa.String(length=16), nullable=True),
        sa.Column("city", sa.String(), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.CheckConstraint(
            "preferred_language IN ('fr', 'nl', 'en', 'de')", name="ck_citizen_language"
        ),
        sa.CheckConstraint("length(national_number) = 11", name="ck_citizen_nn_length"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_citizen_national_number", "citizen", ["national_number"], unique=True)
    op.create_index("ix_citizen_phone", "citizen", ["phone"], unique=False)

    op.create_table(
        "call_journey",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("flow_hash", sa.String(), nullable=False),
        sa.Column("leg", sa.String(), nullable=False),
        sa.Column("caller", sa.String(), nullable=False),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("ended_at", _UTC, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("lang", sa.String(), nullable=True),
        sa.Column("request_type", sa.String(), nullable=True),
        sa.Column("queue", sa.String(), nullable=True),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column("steps", _JSON, nullable=False),
        sa.ForeignKeyConstraint(["citizen_id"], ["citizen.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column, unique in (
        ("call_id", True),
        ("citizen_id", False),
        ("outcome", False),
        ("request_type", False),
        ("started_at", False),
    ):
        op.create_index(f"ix_call_journey_{column}", "call_journey", [column], unique=unique)

    op.create_table(
        "callback_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("flow", sa.String(), nullable=False),
        sa.Column("caller", sa.String(), nullable=False),
        sa.Column("requested_at", _UTC, nullable=False),
        sa.Column("lang", sa.String(), nullable=True),
        sa.Column("request_type", sa.String(), nullable=True),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["citizen_id"], ["citizen.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column, unique in (("call_id", True), ("citizen_id", False), ("status", False)):
        op.create_index(
            f"ix_callback_request_{column}", "callback_request", [column], unique=unique
        )


def downgrade() -> None:
    op.drop_table("callback_request")
    op.drop_table("call_journey")
    op.drop_table("citizen")
