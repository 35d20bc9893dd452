"""`CaseService`: the case store's operations, for the IVR's hand-off and the agent console.

A call handed off becomes a case, or reopens the citizen's open case of the same request
type (one case per request, however many calls it takes). Writing a call's case is
idempotent on the call id, so the outbox may retry or replay it freely. Agent operations
take the reference the agent sees (an alias resolves to its case).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from crm_bridge.case_facts import CallFacts, CaseView, InteractionFacts, InteractionView, NoteView
from crm_bridge.case_models import (
    CHANNELS,
    CLOSED,
    DIRECTIONS,
    IN_PROGRESS,
    INTERACTION_KINDS,
    NEW,
    REOPENED,
    WRAP_UP,
    Case,
    CaseAlias,
    Interaction,
    Note,
)
from crm_bridge.db import session_factory
from crm_bridge.references import new_reference, normalise_reference
from crm_bridge.utc import ensure_utc, utc_now

log = logging.getLogger("guichet.crm.cases")

_KIND_OF_CHANNEL = {"phone": "call", "email": "email", "web": "web"}
# Unique-index races (the same call twice, two calls of one citizen at once) are settled by
# running the decision again: the second pass sees the winner's rows.
_ATTEMPTS = 3
_NEXT_STATUS: dict[str, frozenset[str]] = {
    NEW: frozenset({IN_PROGRESS, WRAP_UP, CLOSED}),
    REOPENED: frozenset({IN_PROGRESS, WRAP_UP, CLOSED}),
    IN_PROGRESS: frozenset({WRAP_UP, CLOSED}),
    WRAP_UP: frozenset({IN_PROGRESS, CLOSED}),
    CLOSED: frozenset({REOPENED}),
}


class CaseError(Exception):
    """A case operation the store refuses; the message is safe to show an agent."""


class CaseNotFound(CaseError, LookupError):
    pass


class InvalidTransition(CaseError, ValueError):
    pass


class CaseConflict(CaseError):
    """The change would give a citizen two open cases of one category."""

    def __init__(self, message: str, other_reference: str | None) -> None:
        super().__init__(message)
        self.other_reference = other_reference


def _case_view(case: Case) -> CaseView:
    assert case.id is not None  # flushed
    return CaseView(
        id=case.id,
        reference=case.reference,
        status=case.status,
        category=case.category,
        language=case.language,
        priority=case.priority,
        queue=case.queue,
        citizen_id=case.citizen_id,
        caller=case.caller,
        channel=case.channel,
        assigned_agent_id=case.assigned_agent_id,
        disposition=case.disposition,
        flow_hash=case.flow_hash,
        created_at=case.created_at,
        updated_at=case.updated_at,
        closed_at=case.closed_at,
    )


def _interaction_view(row: Interaction, reference: str) -> InteractionView:
    assert row.id is not None
    return InteractionView(
        id=row.id,
        case_reference=reference,
        kind=row.kind,
        call_id=row.call_id,
        direction=row.direction,
        contact=row.contact,
        queue=row.queue,
        started_at=row.started_at,
        ended_at=row.ended_at,
        journey_call_id=row.journey_call_id,
        summary=row.summary,
    )


def _note_view(note: Note, reference: str) -> NoteView:
    assert note.id is not None
    return NoteView(
        id=note.id,
        case_reference=reference,
        author_id=note.author_id,
        text=note.text,
        created_at=note.created_at,
    )


def _check_facts(facts: CallFacts) -> None:
    """Refuse what can never be stored (the outbox keeps it aside instead of retrying)."""
    if not facts.call_id:
        raise ValueError("a call needs its call id")
    if facts.channel not in CHANNELS:
        raise ValueError(f"unknown channel {facts.channel!r}")
    if facts.direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {facts.direction!r}")
    if facts.started_at is not None:
        ensure_utc(facts.started_at)


def _move(case: Case, status: str, now: datetime) -> None:
    """Change status along the allowed transitions; closed_at follows."""
    if status == case.status:
        return
    if status not in _NEXT_STATUS.get(case.status, frozenset()):
        raise InvalidTransition(f"case {case.reference}: cannot go from {case.status} to {status}")
    case.status = status
    case.closed_at = now if status == CLOSED else None


class CaseService:
    """Cases over the SQL store. Stateless apart from the engine: share one per process."""

    def __init__(self, engine: AsyncEngine, *, references: Callable[[], str] = new_reference):
        self.engine = engine
        self._references = references
        self._sessions = session_factory(engine)

    # --- the IVR's hand-off ---------------------------------------------------------------

    async def open_case_for_call(self, facts: CallFacts) -> str:
        """Create the call's case, or reopen the citizen's open case of the same request type;
        return the case's reference. A call id seen before returns its case, writing nothing
        (but the alias below).

        A reference given in ``facts`` (the one handed to Asterisk) that ends up on a reopened
        case is stored as an alias of it.
        """
        _check_facts(facts)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._sessions() as session, session.begin():
                    return await self._open(session, facts)
            except IntegrityError:
                if attempt == _ATTEMPTS:
                    raise
                log.info("call %s: lost a race for its case, deciding again", facts.call_id)
        raise AssertionError("unreachable")

    async def _open(self, session: AsyncSession, facts: CallFacts) -> str:
        if (seen := await self._seen(session, facts)) is not None:
            return seen
        now = utc_now()
        case = await self._open_case_to_reopen(session, facts)
        if case is not None:
            await self._reopen(session, case, facts, now)
        else:
            case = await self._create(session, facts, now)
        assert case.id is not None
        session.add(
            Interaction(
                case_id=case.id,
                kind=_KIND_OF_CHANNEL[facts.channel],
                call_id=facts.call_id,
                direction=facts.direction,
                contact=facts.caller,
                queue=facts.queue,
                started_at=ensure_utc(facts.started_at) if facts.started_at else now,
                journey_call_id=facts.journey_call_id,
            )
        )
        await session.flush()
        return case.reference

    async def _seen(self, session: AsyncSession, facts: CallFacts) -> str | None:
        """The reference of the case this call id is already on, if any."""
        seen = await session.exec(
            select(Case.id, Case.reference)
            .join(Interaction, col(Interaction.case_id) == col(Case.id))
            .where(Interaction.call_id == facts.call_id)
        )
        if (found := seen.first()) is None:
            return None
        case_id, reference = found
        assert case_id is not None
        # Only a reference handed out that does not resolve yet (the same call submitted
        # again after a restart) is written: every GUICHET_CASE_ID must resolve.
        if facts.reference and not await self._taken(session, facts.reference):
            session.add(CaseAlias(alias=facts.reference, case_id=case_id, call_id=facts.call_id))
        return reference

    async def _reopen(
        self, session: AsyncSession, case: Case, facts: CallFacts, now: datetime
    ) -> None:
        """A new call on an open case: back to the agents' attention, alias kept."""
        assert case.id is not None
        if case.status in (IN_PROGRESS, WRAP_UP):
            case.status = REOPENED
        case.queue = facts.queue or case.queue
        case.priority = max(case.priority, facts.priority)
        case.updated_at = now
        if facts.reference and facts.reference != case.reference:
            if await self._taken(session, facts.reference):
                log.error("call %s: reference %s already in use", facts.call_id, facts.reference)
            else:
                session.add(
                    CaseAlias(alias=facts.reference, case_id=case.id, call_id=facts.call_id)
                )
        log.info("call %s: reopened case %s", facts.call_id, case.reference)

    async def _create(self, session: AsyncSession, facts: CallFacts, now: datetime) -> Case:
        reference = facts.reference or self._references()
        if await self._taken(session, reference):
            log.error("call %s: reference %s already in use", facts.call_id, reference)
            reference = self._references()
        case = Case(
            reference=reference,
            status=NEW,
            category=facts.request_type,
            language=facts.lang,
            priority=facts.priority,
            queue=facts.queue,
            citizen_id=facts.citizen_id,
            caller=facts.caller,
            channel=facts.channel,
            flow_hash=facts.flow_hash,
            created_at=now,
            updated_at=now,
        )
        session.add(case)
        await session.flush()
        log.info("call %s: opened case %s", facts.call_id, case.reference)
        return case

    @staticmethod
    async def _open_case_to_reopen(session: AsyncSession, facts: CallFacts) -> Case | None:
        if facts.citizen_id is None or not facts.request_type:
            return None  # an anonymous call, or no request type: nothing to match it with
        result = await session.exec(
            select(Case)
            .where(Case.citizen_id == facts.citizen_id)
            .where(Case.category == facts.request_type)
            .where(Case.status != CLOSED)
            .with_for_update()
        )
        return result.first()

    @staticmethod
    async def _taken(session: AsyncSession, reference: str) -> bool:
        as_case = await session.exec(select(Case.id).where(Case.reference == reference))
        if as_case.first() is not None:
            return True
        as_alias = await session.exec(select(CaseAlias.id).where(CaseAlias.alias == reference))
        return as_alias.first() is not None

    # --- reading --------------------------------------------------------------------------

    @staticmethod
    async def _find(session: AsyncSession, reference: str, *, lock: bool = False) -> Case | None:
        wanted = normalise_reference(reference)
        query = select(Case).where(Case.reference == wanted)
        direct = await session.exec(query.with_for_update() if lock else query)
        if (case := direct.first()) is not None:
            return case
        aliased = (
            select(Case)
            .join(CaseAlias, col(CaseAlias.case_id) == col(Case.id))
            .where(CaseAlias.alias == wanted)
        )
        via_alias = await session.exec(aliased.with_for_update() if lock else aliased)
        return via_alias.first()

    async def _get(self, session: AsyncSession, reference: str, *, lock: bool = False) -> Case:
        case = await self._find(session, reference, lock=lock)
        if case is None:
            raise CaseNotFound(f"no case {reference}")
        return case

    async def resolve(self, reference: str) -> str | None:
        """The case reference behind ``reference`` (itself, or the case an alias points to)."""
        case = await self.get_case(reference)
        return None if case is None else case.reference

    async def get_case(self, reference: str) -> CaseView | None:
        async with self._sessions() as session:
            case = await self._find(session, reference)
            return None if case is None else _case_view(case)

    async def open_cases_of_citizen(self, citizen_id: int) -> list[CaseView]:
        """Open cases, most recently active first."""
        async with self._sessions() as session:
            result = await session.exec(
                select(Case)
                .where(Case.citizen_id == citizen_id)
                .where(Case.status != CLOSED)
                .order_by(col(Case.updated_at).desc(), col(Case.id).desc())
            )
            return [_case_view(case) for case in result.all()]

    async def last_interactions_of_citizen(
        self, citizen_id: int, limit: int = 5
    ) -> list[InteractionView]:
        """The citizen's latest contacts across all cases, newest first (the agent's pop)."""
        async with self._sessions() as session:
            result = await session.exec(
                select(Interaction, Case.reference)
                .join(Case, col(Interaction.case_id) == col(Case.id))
                .where(Case.citizen_id == citizen_id)
                .order_by(col(Interaction.started_at).desc(), col(Interaction.id).desc())
                .limit(limit)
            )
            return [_interaction_view(row, reference) for row, reference in result.all()]

    async def interactions(self, reference: str) -> list[InteractionView]:
        """A case's contacts, oldest first."""
        async with self._sessions() as session:
            case = await self._get(session, reference)
            result = await session.exec(
                select(Interaction)
                .where(Interaction.case_id == case.id)
                .order_by(col(Interaction.started_at), col(Interaction.id))
            )
            return [_interaction_view(row, case.reference) for row in result.all()]

    async def notes(self, reference: str) -> list[NoteView]:
        async with self._sessions() as session:
            case = await self._get(session, reference)
            result = await session.exec(
                select(Note)
                .where(Note.case_id == case.id)
                .order_by(col(Note.created_at), col(Note.id))
            )
            return [_note_view(note, case.reference) for note in result.all()]

    # --- the agent's operations -----------------------------------------------------------

    async def _change(self, reference: str, change: Callable[[Case, datetime], None]) -> CaseView:
        """Apply ``change`` to the locked case in one transaction; map index clashes."""
        intended: tuple[int | None, str | None] = (None, None)
        try:
            async with self._sessions() as session, session.begin():
                case = await self._get(session, reference, lock=True)
                now = utc_now()
                change(case, now)
                case.updated_at = now
                intended = (case.citizen_id, case.category)
                await session.flush()
                return _case_view(case)
        except IntegrityError as exc:
            other = await self._open_case_of(*intended)
            raise CaseConflict(
                f"case {reference}: the citizen already has an open case of this category"
                + (f" ({other})" if other else ""),
                other,
            ) from exc

    async def _open_case_of(self, citizen_id: int | None, category: str | None) -> str | None:
        if citizen_id is None or category is None:
            return None
        async with self._sessions() as session:
            result = await session.exec(
                select(Case.reference)
                .where(Case.citizen_id == citizen_id)
                .where(Case.category == category)
                .where(Case.status != CLOSED)
            )
            return result.first()

    async def assign(self, reference: str, agent_id: int) -> CaseView:
        """The agent took the case (answered the call, or picked it): in progress."""

        def change(case: Case, now: datetime) -> None:
            _move(case, IN_PROGRESS, now)
            case.assigned_agent_id = agent_id

        return await self._change(reference, change)

    async def start_wrap_up(self, reference: str, disposition: str) -> CaseView:
        def change(case: Case, now: datetime) -> None:
            _move(case, WRAP_UP, now)
            case.disposition = disposition

        return await self._change(reference, change)

    async def close(self, reference: str, disposition: str | None = None) -> CaseView:
        def change(case: Case, now: datetime) -> None:
            _move(case, CLOSED, now)
            case.disposition = disposition or case.disposition

        return await self._change(reference, change)

    async def set_status(self, reference: str, status: str) -> CaseView:
        """Any allowed transition (closed → reopened is how a case is reopened by hand)."""
        return await self._change(reference, lambda case, now: _move(case, status, now))

    async def set_category(self, reference: str, category: str | None) -> CaseView:
        def change(case: Case, _now: datetime) -> None:
            case.category = category

        return await self._change(reference, change)

    async def link_citizen(self, reference: str, citizen_id: int | None) -> CaseView:
        """Attach the case to the citizen the agent identified (None detaches it)."""

        def change(case: Case, _now: datetime) -> None:
            case.citizen_id = citizen_id

        return await self._change(reference, change)

    async def add_note(self, reference: str, text: str, *, author_id: int | None) -> NoteView:
        if not text.strip():
            raise CaseError("a note needs some text")
        async with self._sessions() as session, session.begin():
            case = await self._get(session, reference)
            assert case.id is not None
            note = Note(case_id=case.id, author_id=author_id, text=text)
            session.add(note)
            case.updated_at = note.created_at
            await session.flush()
            return _note_view(note, case.reference)

    async def append_interaction(
        self, reference: str, interaction: InteractionFacts
    ) -> InteractionView:
        """Add a contact to a case; a call id seen before returns the stored one."""
        if interaction.kind not in INTERACTION_KINDS:
            raise CaseError(f"unknown interaction kind {interaction.kind!r}")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._sessions() as session, session.begin():
                    return await self._append(session, reference, interaction)
            except IntegrityError:
                if attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _append(
        self, session: AsyncSession, reference: str, facts: InteractionFacts
    ) -> InteractionView:
        if facts.call_id is not None:
            seen = await session.exec(
                select(Interaction, Case.reference)
                .join(Case, col(Interaction.case_id) == col(Case.id))
                .where(Interaction.call_id == facts.call_id)
            )
            if (found := seen.first()) is not None:
                return _interaction_view(*found)
        case = await self._get(session, reference)
        assert case.id is not None
        row = Interaction(
            case_id=case.id,
            kind=facts.kind,
            call_id=facts.call_id,
            direction=facts.direction,
            contact=facts.contact,
            queue=facts.queue,
            started_at=facts.started(),
            ended_at=ensure_utc(facts.ended_at) if facts.ended_at else None,
            journey_call_id=facts.journey_call_id,
            summary=facts.summary,
        )
        session.add(row)
        case.updated_at = utc_now()
        await session.flush()
        return _interaction_view(row, case.reference)

    async def end_interaction(
        self, call_id: str, *, ended_at: datetime, summary: str | None = None
    ) -> bool:
        """Record the end of a call (from the CTI's CallEnded); False if the call has no case."""
        values: dict[str, object] = {"ended_at": ensure_utc(ended_at)}
        if summary is not None:
            values["summary"] = summary
        async with self._sessions() as session, session.begin():
            result = await session.exec(
                update(Interaction).where(col(Interaction.call_id) == call_id).values(**values)
            )
            return bool(result.rowcount)

    async def unlink_citizen(self, citizen_id: int) -> int:
        """Detach every case from a citizen being erased (GDPR); returns the count."""
        async with self._sessions() as session, session.begin():
            result = await session.exec(
                update(Case)
                .where(col(Case.citizen_id) == citizen_id)
                .values(citizen_id=None, updated_at=utc_now())
            )
            return int(result.rowcount)
