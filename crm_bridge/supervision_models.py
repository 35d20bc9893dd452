"""SQL tables of supervision: one row per queue call (what the wallboard's "today" figures and
the reports count), spy sessions and supervisors' private messages to agents.

Kept apart from `crm_bridge.case_models` so each module stays small; all register on
``SQLModel.metadata`` and migration 0003 creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import CheckConstraint, Index, Text
from sqlmodel import Field, SQLModel

from crm_bridge.utc import UtcDateTime, utc_now

# How a queue call ended (cti.events.CallEndReason).
COMPLETED, ABANDONED, UNANSWERED, LOST = "completed", "abandoned", "unanswered", "lost"
CALL_OUTCOMES: tuple[str, ...] = (COMPLETED, ABANDONED, UNANSWERED, LOST)
SPY_MODES: tuple[str, ...] = ("listen", "whisper", "barge")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


class QueueCallRecord(SQLModel, table=True):
    """A citizen call that reached an Asterisk queue, written once when it ends.

    Times are when Guichet saw the AMI events. ``hold_s`` is the wait in the queue (answered
    or not), ``talk_s`` the conversation (AgentComplete's TalkTime). ``agent`` is the site's
    agent id (``agent1``), not a user id: the CTI knows queue members, not accounts.
    ``transferred`` marks an escalation (blind or attended transfer by the agent).
    """

    __tablename__: ClassVar[Any] = "queue_call"
    __table_args__ = (
        _one_of("outcome", CALL_OUTCOMES, "ck_queue_call_outcome"),
        Index("ix_queue_call_queue_queued_at", "queue", "queued_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(max_length=128, unique=True, index=True)
    linked_id: str | None = Field(default=None, max_length=128)
    queue: str = Field(max_length=128)
    lang: str | None = Field(default=None, max_length=2)
    request_type: str | None = Field(default=None, max_length=64, index=True)
    case_reference: str | None = Field(default=None, max_length=32, index=True)
    caller: str | None = Field(default=None, max_length=64)
    queued_at: datetime = Field(sa_type=UtcDateTime, index=True)
    answered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    ended_at: datetime = Field(sa_type=UtcDateTime)
    outcome: str = Field(max_length=16, index=True)
    hold_s: float | None = None
    talk_s: float | None = None
    agent: str | None = Field(default=None, max_length=64, index=True)
    transferred: bool = False


class SpySession(SQLModel, table=True):
    """A supervisor listening to, whispering to or barging into an agent's call."""

    __tablename__: ClassVar[Any] = "spy_session"
    __table_args__ = (_one_of("mode", SPY_MODES, "ck_spy_session_mode"),)

    id: int | None = Field(default=None, primary_key=True)
    supervisor_id: int | None = Field(default=None, index=True)
    supervisor: str = Field(max_length=64)  # copied: the trail outlives the account
    call_id: str = Field(max_length=128, index=True)
    agent: str | None = Field(default=None, max_length=64)
    case_reference: str | None = Field(default=None, max_length=32)
    mode: str = Field(max_length=16)  # the current (last) mode
    modes: str = Field(default="", max_length=255)  # every mode used, in order: listen,whisper
    spy_channel: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=255)
    started_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime, index=True)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class SupervisorMessage(SQLModel, table=True):
    """A private text from a supervisor to one agent (shown only on that agent's console)."""

    __tablename__: ClassVar[Any] = "supervisor_message"

    id: int | None = Field(default=None, primary_key=True)
    sender_id: int | None = Field(default=None, index=True)
    sender: str = Field(max_length=64)
    recipient_id: int = Field(foreign_key="app_user.id", ondelete="CASCADE", index=True)
    text: str = Field(sa_type=Text)
    call_id: str | None = Field(default=None, max_length=128)
    sent_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime, index=True)
    read_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
