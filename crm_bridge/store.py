"""`SqlCrm`: the built-in `CrmPort`, backed by SQLite or PostgreSQL through SQLAlchemy async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, select

from crm_bridge.db import init_db, make_engine, session_factory
from crm_bridge.models import CALLBACK_PENDING, CallbackRecord, CallJourneyRecord, Citizen
from crm_bridge.phone import normalise_phone
from crm_bridge.ports import (
    CallbackRequest,
    CallJourney,
    CitizenSummary,
    JourneyStep,
)
from crm_bridge.privacy import mask_digits_in_text
from crm_bridge.register_number import compact
from crm_bridge.utc import ensure_utc
from guichet.settings import get_settings

# `Citizen.address` itself, applied to a plain row that has the same column attributes.
_ADDRESS: Callable[[Any], str | None] = vars(Citizen)["address"].fget


def _summary(row: Any) -> CitizenSummary:
    """The summary of a `citizen` row (see `_CITIZEN_COLUMNS`), without building an ORM object:
    the lookup is on the call path, and a mapped instance costs more than the query."""
    return CitizenSummary(
        id=row.id,
        first_name=row.first_name,
        last_name=row.last_name,
        preferred_language=row.preferred_language,
        address=_ADDRESS(row),
        phone=row.phone,
    )


def step_to_json(step: JourneyStep) -> dict[str, Any]:
    """JSON-ready step. Digits are masked again: the IVR should have, the store makes sure."""
    return {
        "node": step.node,
        "kind": step.kind,
        "at": ensure_utc(step.at).isoformat(),
        "result": step.result,
        "digits": None if step.digits is None else mask_digits_in_text(step.digits),
        "prompts": list(step.prompts),
    }


def step_from_json(data: dict[str, Any]) -> JourneyStep:
    return JourneyStep(
        node=data["node"],
        kind=data["kind"],
        at=ensure_utc(datetime.fromisoformat(data["at"])),
        result=data.get("result"),
        digits=data.get("digits"),
        prompts=tuple(data.get("prompts") or ()),
    )


def journey_row(journey: CallJourney) -> dict[str, Any]:
    """Column values of a `CallJourneyRecord` for ``journey`` (without the id)."""
    return {
        "call_id": journey.call_id,
        "flow": journey.flow,
        "flow_hash": journey.flow_hash,
        "leg": journey.leg,
        "caller": journey.caller,
        "started_at": ensure_utc(journey.started_at),
        "ended_at": ensure_utc(journey.ended_at),
        "duration_s": journey.duration,
        "outcome": journey.outcome,
        "lang": journey.lang,
        "request_type": journey.request_type,
        "queue": journey.queue,
        "citizen_id": journey.citizen_id,
        "steps": [step_to_json(step) for step in journey.steps],
    }


def callback_row(request: CallbackRequest) -> dict[str, Any]:
    """Column values of a new `CallbackRecord` for ``request`` (without the id)."""
    return {
        "call_id": request.call_id,
        "flow": request.flow,
        "caller": request.caller,
        "requested_at": ensure_utc(request.requested_at),
        "lang": request.lang,
        "request_type": request.request_type,
        "citizen_id": request.citizen_id,
        "status": CALLBACK_PENDING,
    }


def _journey(record: CallJourneyRecord) -> CallJourney:
    return CallJourney(
        call_id=record.call_id,
        flow=record.flow,
        flow_hash=record.flow_hash,
        leg=record.leg,
        caller=record.caller,
        started_at=record.started_at,
        ended_at=record.ended_at,
        outcome=record.outcome,
        lang=record.lang,
        request_type=record.request_type,
        queue=record.queue,
        citizen_id=record.citizen_id,
        steps=tuple(step_from_json(step) for step in record.steps),
    )


# Dialect INSERT constructs with ON CONFLICT, which makes save_journey one atomic upsert.
_UPSERT_INSERTS: dict[str, Callable[..., Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}

_ROWS_PER_TURN = 50  # journeys converted between two turns of the event loop (~2 ms)
_CITIZEN_COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "preferred_language",
    "street",
    "postal_code",
    "city",
    "phone",
)


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _last_per_call(journeys: Sequence[CallJourney]) -> list[CallJourney]:
    """One journey per call id, the last one given: what saving them in turn would leave."""
    return list({journey.call_id: journey for journey in journeys}.values())


class SqlCrm:
    """`CrmPort` over the local SQL database. It owns ``engine``: `close` disposes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name not in _UPSERT_INSERTS:
            raise ValueError(
                f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL"
            )
        self.engine = engine
        self._insert = _UPSERT_INSERTS[engine.dialect.name]
        self._sessions = session_factory(engine)
        # The call path's statements, built once: Core with bound parameters, so SQLAlchemy
        # compiles each once (its cache) and no ORM unit of work runs per call.
        citizen = _table(Citizen.__tablename__)
        columns = [citizen.c[name] for name in _CITIZEN_COLUMNS]
        self._by_national_number = select(*columns).where(
            citizen.c.national_number == bindparam("number")
        )
        self._by_phone = (
            select(*columns)
            .where(citizen.c.phone == bindparam("phone"))
            .order_by(citizen.c.id)
            .limit(2)
        )
        self._journey_upserts: dict[tuple[str, ...], Any] = {}  # by the columns written
        self._callback_insert = self._insert(
            _table(CallbackRecord.__tablename__)
        ).on_conflict_do_nothing(index_elements=["call_id"])

    @classmethod
    async def connect(cls, url: str | None = None, *, create_tables: bool = True) -> SqlCrm:
        """Open the store at ``url`` (default: settings' ``database_url``)."""
        engine = make_engine(url if url is not None else get_settings().database_url)
        try:
            if create_tables:
                await init_db(engine)
            return cls(engine)
        except BaseException:
            await engine.dispose()
            raise

    async def close(self) -> None:
        await self.engine.dispose()

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None:
        """Look up by NN or BIS, formatted or not; a malformed entry is simply not found."""
        compacted = compact(number)
        if len(compacted) != 11 or not compacted.isdigit():
            return None
        async with self.engine.connect() as db:
            row = (await db.execute(self._by_national_number, {"number": compacted})).first()
        return None if row is None else _summary(row)

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None:
        """Look up by caller number. A number shared by several citizens (a family landline)
        identifies nobody: None, so the flow asks for the national number instead."""
        normalised = normalise_phone(phone)
        if normalised is None:
            return None
        async with self.engine.connect() as db:
            matches = (await db.execute(self._by_phone, {"phone": normalised})).all()
        return _summary(matches[0]) if len(matches) == 1 else None

    async def record_callback(self, request: CallbackRequest) -> None:
        """Store the request once per call: a retry (BufferedCrm) or a second ask is a no-op,
        and an agent's status change is never reset to pending."""
        await self.record_callbacks([request])

    async def record_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        """`record_callback` for many requests in one transaction (all stored, or none)."""
        rows = [callback_row(request) for request in requests]
        if rows:
            async with self.engine.begin() as db:
                await db.execute(self._callback_insert, rows)

    async def save_journey(self, journey: CallJourney) -> None:
        """Insert or replace the journey of ``call_id`` in one statement (retries are safe)."""
        await self.save_journeys([journey])

    async def save_journeys(self, journeys: Sequence[CallJourney]) -> None:
        """`save_journey` for many journeys in one transaction (all stored, or none): one
        commit, so one disk flush, for a whole batch. A call id given twice keeps its last."""
        rows = []
        for n, journey in enumerate(_last_per_call(journeys), 1):
            rows.append(journey_row(journey))
            if n % _ROWS_PER_TURN == 0:
                await asyncio.sleep(0)  # a big batch must not hold the calls' event loop long
        if rows:
            async with self.engine.begin() as db:
                await db.execute(self._journey_upsert(tuple(rows[0])), rows)

    def _journey_upsert(self, columns: tuple[str, ...]) -> Any:
        """INSERT ... ON CONFLICT (call_id) DO UPDATE of every column written but the key."""
        upsert = self._journey_upserts.get(columns)
        if upsert is None:
            insert = self._insert(_table(CallJourneyRecord.__tablename__))
            upsert = insert.on_conflict_do_update(
                index_elements=["call_id"],
                set_={key: insert.excluded[key] for key in columns if key != "call_id"},
            )
            self._journey_upserts[columns] = upsert
        return upsert

    async def get_journey(self, call_id: str) -> CallJourney | None:
        """The stored journey of ``call_id`` (for the CTI pop), datetimes aware UTC."""
        async with self._sessions() as session:
            result = await session.exec(
                select(CallJourneyRecord).where(CallJourneyRecord.call_id == call_id)
            )
            record = result.first()
        return None if record is None else _journey(record)
