"""Live coaching's records: spy sessions (who listened to which call, in which modes, from
when to when) and supervisors' private messages to agents.

These rows are the durable half of the trail (the audit log says who did what and why; a
session row says how long and in which modes). Rows are values once read: callers get
frozen records, never live ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.audit import Identified
from crm_bridge.db import session_factory
from crm_bridge.supervision_models import SPY_MODES, SpySession, SupervisorMessage
from crm_bridge.utc import ensure_utc, utc_now


@dataclass(frozen=True, slots=True)
class SpyRecord:
    id: int
    supervisor_id: int | None
    supervisor: str
    call_id: str
    agent: str | None
    case_reference: str | None
    mode: str
    modes: tuple[str, ...]  # every mode used, in order
    spy_channel: str | None
    reason: str | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    sender_id: int | None
    sender: str
    recipient_id: int
    text: str
    call_id: str | None
    sent_at: datetime


def _spy(row: SpySession) -> SpyRecord:
    assert row.id is not None
    return SpyRecord(
        id=row.id,
        supervisor_id=row.supervisor_id,
        supervisor=row.supervisor,
        call_id=row.call_id,
        agent=row.agent,
        case_reference=row.case_reference,
        mode=row.mode,
        modes=tuple(m for m in row.modes.split(",") if m),
        spy_channel=row.spy_channel,
        reason=row.reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def _message(row: SupervisorMessage) -> MessageRecord:
    assert row.id is not None
    return MessageRecord(
        id=row.id,
        sender_id=row.sender_id,
        sender=row.sender,
        recipient_id=row.recipient_id,
        text=row.text,
        call_id=row.call_id,
        sent_at=row.sent_at,
    )


def _check_mode(mode: str) -> None:
    if mode not in SPY_MODES:
        raise ValueError(f"unknown spy mode {mode!r}; one of {', '.join(SPY_MODES)}")


class CoachingStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)

    # --- spy sessions ---

    async def start(
        self,
        supervisor: Identified,
        *,
        call_id: str,
        mode: str,
        agent: str | None = None,
        case_reference: str | None = None,
        reason: str | None = None,
    ) -> SpyRecord:
        _check_mode(mode)
        row = SpySession(
            supervisor_id=supervisor.id,
            supervisor=supervisor.username,
            call_id=call_id,
            agent=agent,
            case_reference=case_reference[:32] if case_reference else None,
            mode=mode,
            modes=mode,
            reason=reason[:255] if reason else None,
        )
        async with self._sessions() as session, session.begin():
            session.add(row)
            await session.flush()
            return _spy(row)

    async def set_channel(self, session_id: int, spy_channel: str) -> SpyRecord | None:
        async with self._sessions() as session, session.begin():
            row = await session.get(SpySession, session_id)
            if row is None:
                return None
            row.spy_channel = spy_channel[:128]
            return _spy(row)

    async def change_mode(self, session_id: int, mode: str) -> SpyRecord | None:
        """Record the new mode; `modes` keeps the sequence (listen,whisper,listen)."""
        _check_mode(mode)
        async with self._sessions() as session, session.begin():
            row = await session.get(SpySession, session_id)
            if row is None:
                return None
            if row.mode != mode:
                used = [m for m in row.modes.split(",") if m] + [mode]
                row.mode, row.modes = mode, ",".join(used)[:255]
            return _spy(row)

    async def end(self, session_id: int, at: datetime | None = None) -> SpyRecord | None:
        """Set the end once (a later end keeps the first one)."""
        async with self._sessions() as session, session.begin():
            row = await session.get(SpySession, session_id)
            if row is None:
                return None
            if row.ended_at is None:
                row.ended_at = ensure_utc(at) if at is not None else utc_now()
            return _spy(row)

    async def get(self, session_id: int) -> SpyRecord | None:
        async with self._sessions() as session:
            row = await session.get(SpySession, session_id)
            return None if row is None else _spy(row)

    async def spy_sessions(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        open_only: bool = False,
        limit: int = 200,
    ) -> list[SpyRecord]:
        """Newest first: the admins' trail, or the sessions not ended (`open_only`)."""
        query = select(SpySession)
        if since is not None:
            query = query.where(col(SpySession.started_at) >= ensure_utc(since))
        if until is not None:
            query = query.where(col(SpySession.started_at) < ensure_utc(until))
        if open_only:
            query = query.where(col(SpySession.ended_at).is_(None))
        query = query.order_by(col(SpySession.started_at).desc(), col(SpySession.id).desc())
        async with self._sessions() as session:
            result = await session.exec(query.limit(limit))
            return [_spy(row) for row in result.all()]

    # --- private messages ---

    async def add_message(
        self, sender: Identified, recipient_id: int, text: str, call_id: str | None = None
    ) -> MessageRecord:
        row = SupervisorMessage(
            sender_id=sender.id,
            sender=sender.username,
            recipient_id=recipient_id,
            text=text,
            call_id=call_id[:128] if call_id else None,
        )
        async with self._sessions() as session, session.begin():
            session.add(row)
            await session.flush()
            return _message(row)

    async def messages_for(self, recipient_id: int, *, limit: int = 50) -> list[MessageRecord]:
        """A user's messages, newest first."""
        query = (
            select(SupervisorMessage)
            .where(SupervisorMessage.recipient_id == recipient_id)
            .order_by(col(SupervisorMessage.sent_at).desc(), col(SupervisorMessage.id).desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            result = await session.exec(query)
            return [_message(row) for row in result.all()]


__all__ = ["CoachingStore", "MessageRecord", "SpyRecord"]
