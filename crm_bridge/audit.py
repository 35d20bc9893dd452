"""The audit trail: who opened which citizen's record, listened to which call, and why.

GDPR asks that access to personal data be traceable to a purpose, so opening a citizen's
record needs a reason (the case at hand). Rows are only ever added; subjects are record
ids, never national numbers, and reasons are masked in case one was typed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.case_models import AuditEntry
from crm_bridge.db import session_factory
from crm_bridge.privacy import mask_digits_in_text
from crm_bridge.utc import ensure_utc

CITIZEN_OPENED = "citizen.opened"
CALL_SPIED = "call.spied"
REASON_REQUIRED = frozenset({CITIZEN_OPENED, CALL_SPIED})


class Identified(Protocol):
    """Who acts: a `UserView`, or `Actor` for Guichet itself and scripts."""

    @property
    def id(self) -> int | None: ...

    @property
    def username(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Actor:
    id: int | None
    username: str

    @classmethod
    def system(cls) -> Actor:
        return cls(id=None, username="guichet")


@dataclass(frozen=True, slots=True)
class Subject:
    type: str
    id: str

    @classmethod
    def citizen(cls, citizen_id: int) -> Subject:
        return cls("citizen", str(citizen_id))

    @classmethod
    def case(cls, reference: str) -> Subject:
        return cls("case", reference)

    @classmethod
    def call(cls, call_id: str) -> Subject:
        return cls("call", call_id)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    actor_id: int | None
    actor: str
    action: str
    subject: Subject
    reason: str | None
    at: datetime


def _record(entry: AuditEntry) -> AuditRecord:
    assert entry.id is not None
    return AuditRecord(
        id=entry.id,
        actor_id=entry.actor_id,
        actor=entry.actor,
        action=entry.action,
        subject=Subject(entry.subject_type, entry.subject_id),
        reason=entry.reason,
        at=entry.at,
    )


class AuditLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)

    async def record(
        self, actor: Identified, action: str, subject: Subject, reason: str | None = None
    ) -> AuditRecord:
        """Append one row; the actions in `REASON_REQUIRED` refuse an empty reason."""
        reason = mask_digits_in_text(reason.strip()) if reason and reason.strip() else None
        if action in REASON_REQUIRED and reason is None:
            raise ValueError(f"{action} needs a reason (the case it is for)")
        entry = AuditEntry(
            actor_id=actor.id,
            actor=actor.username,
            action=action,
            subject_type=subject.type,
            subject_id=subject.id,
            reason=reason,
        )
        async with self._sessions() as session, session.begin():
            session.add(entry)
            await session.flush()
            return _record(entry)

    async def citizen_opened(
        self, actor: Identified, citizen_id: int, case_reference: str
    ) -> AuditRecord:
        return await self.record(actor, CITIZEN_OPENED, Subject.citizen(citizen_id), case_reference)

    async def entries(
        self,
        *,
        subject: Subject | None = None,
        actor_id: int | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Newest first; filters combine (a citizen's accesses, an agent's day...)."""
        query = select(AuditEntry)
        if subject is not None:
            query = query.where(AuditEntry.subject_type == subject.type).where(
                AuditEntry.subject_id == subject.id
            )
        if actor_id is not None:
            query = query.where(AuditEntry.actor_id == actor_id)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        if since is not None:
            query = query.where(col(AuditEntry.at) >= ensure_utc(since))
        if until is not None:
            query = query.where(col(AuditEntry.at) < ensure_utc(until))
        query = query.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit)
        async with self._sessions() as session:
            result = await session.exec(query)
            return [_record(entry) for entry in result.all()]


__all__ = [
    "CALL_SPIED",
    "CITIZEN_OPENED",
    "Actor",
    "AuditLog",
    "AuditRecord",
    "Subject",
]
