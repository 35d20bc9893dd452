"""The case store: cases, aliases, interactions, notes, knowledge articles, users, queues, audit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_UTC = sa.DateTime(timezone=True)
_OPEN_CASE = sa.text("status != 'closed'")


def _indexes(table: str, *columns: str, unique: Sequence[str] = ()) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=column in unique)


def upgrade() -> None:
    op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("interface", sa.String(length=128), nullable=True),
        sa.Column("ui_language", sa.String(length=2), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.CheckConstraint("role IN ('agent', 'supervisor', 'admin')", name="ck_app_user_role"),
        sa.CheckConstraint("ui_language IN ('fr', 'nl', 'en')", name="ck_app_user_ui_language"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("app_user", "username", unique=["username"])

    op.create_table(
        "audit_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("audit_entry", "action", "actor_id", "at")
    op.create_index("ix_audit_entry_subject", "audit_entry", ["subject_type", "subject_id"])

    op.create_table(
        "call_queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=True),
        sa.Column("language", sa.String(length=2), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("call_queue", "name", unique=["name"])

    op.create_table(
        "knowledge_article",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=128), nullable=False),
        sa.Column("request_type", sa.String(length=64), nullable=False),
        sa.Column("title_fr", sa.String(length=200), nullable=True),
        sa.Column("title_nl", sa.String(length=200), nullable=True),
        sa.Column("title_en", sa.String(length=200), nullable=True),
        sa.Column("body_fr", sa.Text(), nullable=True),
        sa.Column("body_nl", sa.Text(), nullable=True),
        sa.Column("body_en", sa.Text(), nullable=True),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("knowledge_article", "request_type", "slug", unique=["slug"])

    op.create_table(
        "crm_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=2), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=128), nullable=True),
        sa.Column("citizen_id", sa.Integer(), nullable=True),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("assigned_agent_id", sa.Integer(), nullable=True),
        sa.Column("disposition", sa.String(length=64), nullable=True),
        sa.Column("flow_hash", sa.String(length=128), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("closed_at", _UTC, nullable=True),
        sa.CheckConstraint("channel IN ('phone', 'email', 'web')", name="ck_crm_case_channel"),
        sa.CheckConstraint(
            "status IN ('new', 'in_progress', 'wrap_up', 'closed', 'reopened')",
            name="ck_crm_case_status",
        ),
        sa.ForeignKeyConstraint(["assigned_agent_id"], ["app_user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes(
        "crm_case",
        "assigned_agent_id",
        "citizen_id",
        "created_at",
        "reference",
        "status",
        unique=["reference"],
    )
    op.create_index(
        "uq_crm_case_open_citizen_category",
        "crm_case",
        ["citizen_id", "category"],
        unique=True,
        sqlite_where=_OPEN_CASE,
        postgresql_where=_OPEN_CASE,
    )

    op.create_table(
        "case_alias",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["crm_case.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("case_alias", "alias", "case_id", unique=["alias"])

    op.create_table(
        "case_note",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["app_user.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["case_id"], ["crm_case.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("case_note", "case_id")

    op.create_table(
        "interaction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("contact", sa.String(length=254), nullable=True),
        sa.Column("queue", sa.String(length=128), nullable=True),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("ended_at", _UTC, nullable=True),
        sa.Column("journey_call_id", sa.String(length=128), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.CheckConstraint("direction IN ('inbound', 'outbound')", name="ck_interaction_direction"),
        sa.CheckConstraint("kind IN ('call', 'email', 'web')", name="ck_interaction_kind"),
        sa.ForeignKeyConstraint(["case_id"], ["crm_case.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("interaction", "call_id", "case_id", "started_at", unique=["call_id"])


def downgrade() -> None:
    for table in (
        "interaction",
        "case_note",
        "case_alias",
        "crm_case",
        "knowledge_article",
        "call_queue",
        "audit_entry",
        "app_user",
    ):
        op.drop_table(table)
