"""SqlCrm against SQLite and a real PostgreSQL, plus the engine and phone helpers it relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from crm_fixtures import *  # noqa: F403  (the pytest fixtures)
from crm_fixtures import (
    BIS_1998,
    NN_1985,
    NN_2017,
)
from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from crm_bridge.db import normalise_url, session_factory
from crm_bridge.models import CallbackRecord, CallJourneyRecord, Citizen
from crm_bridge.phone import normalise_phone
from crm_bridge.ports import CallbackRequest, CallJourney, CrmPort, JourneyStep
from crm_bridge.store import SqlCrm

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
BRUSSELS_WINTER = timezone(timedelta(hours=1))


# --- phone normalisation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+32 470 12 34 56", "+32470123456"),
        ("0032470123456", "+32470123456"),
        ("0470/12.34.56", "+32470123456"),
        ("0470123456", "+32470123456"),
        ("+32 (0)470 12 34 56", "+32470123456"),
        ("+320470123456", "+32470123456"),
        ("32470123456", "+32470123456"),  # Asterisk caller ID without the +
        ("02/123.45.67", "+3221234567"),
        ("+33 1 23 45 67 89", "+33123456789"),
        ("0033123456789", "+33123456789"),
        ("1207", "1207"),  # short number: kept as digits
        ("anonymous", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_phone(raw: str | None, expected: str | None) -> None:
    assert normalise_phone(raw) == expected


# --- engine -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db/guichet", "postgresql+asyncpg://u:***@db/guichet"),
        ("postgres://u@db/guichet", "postgresql+asyncpg://u@db/guichet"),
        ("postgresql://u@db/g?sslmode=require", "postgresql+asyncpg://u@db/g?ssl=require"),
        ("postgresql+asyncpg://u@db/g", "postgresql+asyncpg://u@db/g"),
        ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
        ("sqlite+aiosqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert str(normalise_url(url)) == expected


async def test_sqlite_file_gets_its_directory_wal_and_busy_timeout(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    assert (tmp_path / "var" / "guichet.db").exists()
    async with sqlite_engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1


# --- store ------------------------------------------------------------------------------------


@pytest.fixture
async def crm(crm_engine: AsyncEngine) -> SqlCrm:
    """The store; not closed here because crm_engine disposes the shared engine."""
    return SqlCrm(crm_engine)


async def _add_citizen(engine: AsyncEngine, **fields: object) -> int:
    values: dict[str, object] = {
        "national_number": NN_1985,
        "first_name": "Jan",
        "last_name": "Peeters",
        "preferred_language": "nl",
        "street": "Veldstraat 1",
        "postal_code": "9000",
        "city": "Gent",
        "phone": "+32470123456",
    }
    values.update(fields)
    citizen = Citizen(**values)  # type: ignore[arg-type]
    async with session_factory(engine)() as session, session.begin():
        session.add(citizen)
    assert citizen.id is not None
    return citizen.id


def _journey(call_id: str = "call-1", **fields: object) -> CallJourney:
    values: dict[str, object] = {
        "call_id": call_id,
        "flow": "main",
        "flow_hash": "abc123",
        "leg": "agi",
        "caller": "+32470123456",
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=95.5),
        "outcome": "deflected",
        "lang": "fr",
        "request_type": "certificate",
        "steps": (
            JourneyStep("welcome", "play", T0, result="lang"),
            JourneyStep("ask_nn", "input", T0 + timedelta(seconds=20), "done", "*********28"),
            JourneyStep("done", "hangup", T0 + timedelta(seconds=95), "deflected", None, ("bye",)),
        ),
    }
    values.update(fields)
    return CallJourney(**values)  # type: ignore[arg-type]


def test_sqlcrm_is_a_crm_port(crm: SqlCrm) -> None:
    port: CrmPort = crm
    assert port is crm


@pytest.mark.parametrize("number", [NN_1985, "85.07.30-033.28", " 85 07 30 033 28 "])
async def test_find_by_national_number(crm: SqlCrm, number: str) -> None:
    citizen_id = await _add_citizen(crm.engine)
    found = await crm.find_citizen_by_national_number(number)
    assert found is not None
    assert found.id == citizen_id
    assert (found.first_name, found.last_name, found.preferred_language) == ("Jan", "Peeters", "nl")
    assert found.address == "Veldstraat 1, 9000 Gent"
    assert found.phone == "+32470123456"


async def test_find_by_bis_number(crm: SqlCrm) -> None:
    citizen_id = await _add_citizen(crm.engine, national_number=BIS_1998, phone=None)
    found = await crm.find_citizen_by_national_number("98.47.28-997.65")
    assert found is not None and found.id == citizen_id


@pytest.mark.parametrize("number", [NN_2017, "8507300332", "", "abc", "85073003328999"])
async def test_unknown_or_malformed_number_is_not_found(crm: SqlCrm, number: str) -> None:
    await _add_citizen(crm.engine)
    assert await crm.find_citizen_by_national_number(number) is None


@pytest.mark.parametrize("caller", ["0470123456", "+32 470 12 34 56", "0032470123456"])
async def test_find_by_phone(crm: SqlCrm, caller: str) -> None:
    citizen_id = await _add_citizen(crm.engine)
    found = await crm.find_citizen_by_phone(caller)
    assert found is not None and found.id == citizen_id


async def test_phone_shared_by_two_citizens_identifies_nobody(crm: SqlCrm) -> None:
    await _add_citizen(crm.engine)
    await _add_citizen(crm.engine, national_number=NN_2017, first_name="Lotte")
    assert await crm.find_citizen_by_phone("0470123456") is None


@pytest.mark.parametrize("caller", ["0499999999", "anonymous", ""])
async def test_unknown_phone_is_not_found(crm: SqlCrm, caller: str) -> None:
    await _add_citizen(crm.engine)
    assert await crm.find_citizen_by_phone(caller) is None


async def test_national_number_is_unique(crm: SqlCrm) -> None:
    await _add_citizen(crm.engine)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate") as raised:
        await _add_citizen(crm.engine, first_name="Other")
    assert NN_1985 not in str(raised.value)  # hide_parameters: no national number in errors


async def test_save_journey_round_trip(crm: SqlCrm) -> None:
    citizen_id = await _add_citizen(crm.engine)
    journey = _journey(citizen_id=citizen_id, queue="certificates")
    await crm.save_journey(journey)
    assert await crm.get_journey("call-1") == journey
    async with session_factory(crm.engine)() as session:
        record = (await session.exec(select(CallJourneyRecord))).one()
    assert record.duration_s == pytest.approx(95.5)
    assert record.started_at == T0 and record.started_at.tzinfo is not None
    assert record.steps[1] == {
        "node": "ask_nn",
        "kind": "input",
        "at": "2026-11-02T09:00:20+00:00",
        "result": "done",
        "digits": "*********28",
        "prompts": [],
    }


async def test_save_journey_is_idempotent_on_call_id(crm: SqlCrm) -> None:
    await crm.save_journey(_journey(outcome="transferred"))
    await crm.save_journey(_journey(outcome="deflected", steps=()))
    await crm.save_journey(_journey(outcome="deflected", steps=()))
    await crm.save_journey(_journey("call-2"))
    async with crm.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(CallJourneyRecord))).scalar()
    assert count == 2
    stored = await crm.get_journey("call-1")
    assert stored is not None
    assert (stored.outcome, stored.steps) == ("deflected", ())  # the last save wins


async def test_journey_times_are_stored_in_utc(crm: SqlCrm) -> None:
    local_start = datetime(2026, 11, 2, 10, 0, tzinfo=BRUSSELS_WINTER)
    await crm.save_journey(
        _journey(started_at=local_start, ended_at=local_start + timedelta(minutes=1), steps=())
    )
    stored = await crm.get_journey("call-1")
    assert stored is not None
    assert stored.started_at == T0
    assert stored.started_at.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused(crm: SqlCrm) -> None:
    naive = datetime(2026, 11, 2, 9, 0)
    with pytest.raises(ValueError, match="naive"):
        await crm.save_journey(_journey(started_at=naive, ended_at=naive, steps=()))


async def test_raw_national_number_in_step_digits_is_masked(crm: SqlCrm) -> None:
    await crm.save_journey(_journey(steps=(JourneyStep("ask_nn", "input", T0, None, NN_1985),)))
    stored = await crm.get_journey("call-1")
    assert stored is not None
    assert stored.steps[0].digits == "*********28"


async def test_record_callback(crm: SqlCrm) -> None:
    citizen_id = await _add_citizen(crm.engine)
    await crm.record_callback(
        CallbackRequest(
            call_id="call-9",
            flow="main",
            caller="+32470123456",
            requested_at=T0,
            lang="nl",
            request_type="tax",
            citizen_id=citizen_id,
        )
    )
    async with session_factory(crm.engine)() as session:
        record = (await session.exec(select(CallbackRecord))).one()
    assert (record.call_id, record.status, record.citizen_id) == ("call-9", "pending", citizen_id)
    assert record.requested_at == T0


async def test_record_callback_is_idempotent_on_call_id(crm: SqlCrm) -> None:
    request = CallbackRequest(call_id="call-9", flow="main", caller="0470123456", requested_at=T0)
    await crm.record_callback(request)
    async with session_factory(crm.engine)() as session, session.begin():
        record = (await session.exec(select(CallbackRecord))).one()
        record.status = "done"  # an agent already called back
    await crm.record_callback(request)  # e.g. BufferedCrm retrying after a lost commit ack
    async with session_factory(crm.engine)() as session:
        records = (await session.exec(select(CallbackRecord))).all()
    assert [(r.call_id, r.status) for r in records] == [("call-9", "done")]


async def test_deleting_a_citizen_keeps_the_anonymous_journey(crm: SqlCrm) -> None:
    citizen_id = await _add_citizen(crm.engine)
    await crm.save_journey(_journey(citizen_id=citizen_id))
    async with session_factory(crm.engine)() as session, session.begin():
        citizen = await session.get(Citizen, citizen_id)
        await session.delete(citizen)
    stored = await crm.get_journey("call-1")
    assert stored is not None and stored.citizen_id is None


async def test_connect_and_close(tmp_path: Path) -> None:
    crm = await SqlCrm.connect(f"sqlite:///{tmp_path / 'new' / 'crm.db'}")
    try:
        await crm.save_journey(_journey())
        assert await crm.get_journey("call-1") is not None
    finally:
        await crm.close()


# --- batches (BufferedCrm under load) ---------------------------------------------------------


async def _journey_count(crm: SqlCrm) -> int:
    async with crm.engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(CallJourneyRecord))).scalar_one()
        )


async def test_save_journeys_stores_a_batch_the_last_save_of_a_call_winning(crm: SqlCrm) -> None:
    await crm.save_journey(_journey("call-1", outcome="transferred"))
    await crm.save_journeys(
        [
            _journey("call-1", outcome="hangup", steps=()),
            _journey("call-2"),
            _journey("call-1", outcome="deflected", steps=()),
        ]
    )
    await crm.save_journeys([])
    assert await _journey_count(crm) == 2
    stored = await crm.get_journey("call-1")
    assert stored is not None and (stored.outcome, stored.steps) == ("deflected", ())
    assert await crm.get_journey("call-2") == _journey("call-2")


async def test_a_batch_is_stored_whole_or_not_at_all(crm: SqlCrm) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"):  # no citizen 999
        await crm.save_journeys([_journey("call-1"), _journey("call-2", citizen_id=999)])
    naive = datetime(2026, 11, 2, 9, 0)
    with pytest.raises(ValueError, match="naive"):
        await crm.save_journeys(
            [_journey("call-1"), _journey("call-3", started_at=naive, ended_at=naive)]
        )
    assert await _journey_count(crm) == 0


async def test_record_callbacks_stores_each_call_once(crm: SqlCrm) -> None:
    first = CallbackRequest(call_id="call-9", flow="main", caller="0470123456", requested_at=T0)
    await crm.record_callback(first)
    async with session_factory(crm.engine)() as session, session.begin():
        (await session.exec(select(CallbackRecord))).one().status = "done"
    await crm.record_callbacks(
        [
            first,
            CallbackRequest(call_id="call-10", flow="main", caller="0470", requested_at=T0),
            CallbackRequest(call_id="call-10", flow="other", caller="0470", requested_at=T0),
        ]
    )
    await crm.record_callbacks([])
    async with session_factory(crm.engine)() as session:
        records = (await session.exec(select(CallbackRecord))).all()
    assert sorted((r.call_id, r.status, r.flow) for r in records) == [
        ("call-10", "pending", "main"),  # the first ask stands
        ("call-9", "done", "main"),  # an agent's status is never reset
    ]
