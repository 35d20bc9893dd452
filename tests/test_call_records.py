"""The call recorder: Asterisk's recorded AMI streams, replayed over TCP through the real
AmiClient and CtiBridge into a LocalBus, become exactly one ``queue_call`` row per call, with
the hold and talk times Asterisk reported; replays add nothing; a database outage loses
nothing; a row the database refuses is kept aside without sinking the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ami_peer import AmiPeer, Script, recording
from crm_fixtures import *  # noqa: F403  (crm_engine: SQLite, then PostgreSQL)
from crm_fixtures import _Cluster
from cti_harness import DEADLINE, Cti, running
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from test_buffered_crm import own_cluster, pg_ctl  # noqa: F401  (a cluster of the test's own)

from crm_bridge.db import init_db, make_engine, session_factory
from crm_bridge.supervision_models import QueueCallRecord
from cti.bus import LocalBus
from cti.call_records import CallRecorder
from cti.events import AgentRef, CallAnswered, CallEnded, CallQueued, Event

ANSWERED, ABANDONED, NO_ANSWER, BLIND = (
    "1795370006.1",
    "1795370029.1",
    "1795370055.1",
    "1795370095.1",
)


@pytest.fixture
async def engine(crm_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """crm_engine with ``queue_call`` emptied (the shared PostgreSQL keeps it between tests)."""
    await clear_calls(crm_engine)
    yield crm_engine


async def clear_calls(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(QueueCallRecord))


async def stored(engine: AsyncEngine) -> dict[str, QueueCallRecord]:
    async with session_factory(engine)() as session:
        found = (await session.exec(select(QueueCallRecord))).all()
    return {r.call_id: r for r in found}


async def replay(scenario: str, recorder_for: AsyncEngine) -> tuple[Cti, CallRecorder]:
    """Play a recording through the real AMI client and CTI bridge, a recorder listening on
    the bus from before the login; returns once the rows are stored."""
    async with (
        AmiPeer([Script.load(recording(scenario))]) as peer,
        running(peer, connect=False) as cti,
    ):
        recorder = CallRecorder(cti.bus, recorder_for, retry_initial=0.05, retry_max=0.2)
        await recorder.start()
        try:
            await asyncio.wait_for(cti.client.connect(), DEADLINE)
            if scenario == "blind-transfer":  # Asterisk waits for Guichet's action
                answered = await cti.next(CallAnswered)
                await cti.pbx.blind_transfer(
                    answered.agent_channel, "population-fr", "transfer-targets"
                )
            await cti.close()  # returns once the recording reached its Logoff
            await recorder.flush()
        finally:
            await recorder.stop()
    return cti, recorder


async def record_scenarios(engine: AsyncEngine, *scenarios: str) -> dict[str, QueueCallRecord]:
    for scenario in scenarios:
        await replay(scenario, engine)
    return await stored(engine)


async def test_each_recorded_call_is_one_row_with_asterisks_figures(engine: AsyncEngine) -> None:
    rows = await record_scenarios(
        engine, "inbound-answered", "inbound-abandoned", "ring-no-answer", "blind-transfer"
    )
    assert set(rows) == {ANSWERED, ABANDONED, NO_ANSWER, BLIND}

    answered = rows[ANSWERED]
    assert (answered.queue, answered.lang, answered.request_type) == (
        "population-nl",
        "nl",
        "population",
    )
    assert (answered.case_reference, answered.caller, answered.linked_id) == (
        "case-1001",
        "0470123456",
        "1795370006.0",
    )
    # AgentConnect HoldTime=2, AgentComplete TalkTime=3
    assert (answered.outcome, answered.hold_s, answered.talk_s) == ("completed", 2.0, 3.0)
    assert (answered.agent, answered.transferred) == ("agent1", False)
    assert answered.answered_at is not None
    assert answered.queued_at <= answered.answered_at <= answered.ended_at
    assert answered.queued_at.tzinfo is not None

    abandoned = rows[ABANDONED]  # QueueCallerAbandon HoldTime=8, nobody answered
    assert (abandoned.queue, abandoned.lang, abandoned.outcome) == (
        "population-fr",
        "fr",
        "abandoned",
    )
    assert (abandoned.hold_s, abandoned.talk_s, abandoned.agent) == (8.0, None, None)
    assert abandoned.answered_at is None
    assert abandoned.queued_at <= abandoned.ended_at

    second_agent = rows[NO_ANSWER]  # Agent One never answered; Agent Two after 19 s
    assert (second_agent.outcome, second_agent.hold_s, second_agent.talk_s) == (
        "completed",
        19.0,
        3.0,
    )
    assert second_agent.agent == "agent2"

    transferred = rows[BLIND]  # answered in population-nl, blind-transferred to population-fr
    assert (transferred.queue, transferred.transferred, transferred.outcome) == (
        "population-nl",  # the first queue joined
        True,
        "completed",
    )
    assert (transferred.hold_s, transferred.talk_s, transferred.agent) == (2.0, 3.0, "agent1")


async def test_a_replay_and_a_restarted_recorder_add_no_row(engine: AsyncEngine) -> None:
    cti, _ = await replay("inbound-answered", engine)
    events = cti.drain()
    assert any(isinstance(e, CallEnded) for e in events)
    before = await stored(engine)

    bus = LocalBus()
    again = CallRecorder(bus, engine)  # a restarted process, remembering nothing
    await again.start()
    try:
        for _ in range(2):  # the same stream twice (a resync replays what it saw)
            for event in events:
                await bus.publish(event)
        await again.flush()
    finally:
        await again.stop()
    after = await stored(engine)
    assert list(after) == [ANSWERED]
    assert after[ANSWERED].id == before[ANSWERED].id
    assert again.rejected == []


def _call(call_id: str, at: float, **extra: Any) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "linked_id": call_id,
        "channel": f"Local/0@from-citizen-{call_id};2",
        "queue": "population-fr",
        "lang": "fr",
        "at": at,
        **extra,
    }


async def test_a_call_lost_during_a_disconnection_is_recorded_lost(engine: AsyncEngine) -> None:
    bus = LocalBus()
    recorder = CallRecorder(bus, engine)
    await recorder.start()
    try:
        await bus.publish(CallQueued(**_call("lost-1", 1_795_370_000.0), caller_number="0470"))
        # the rebuild after the reconnect found it gone
        await bus.publish(CallEnded(**_call("lost-1", 1_795_370_090.0), reason="lost", resync=True))
        # a call first seen in the rebuild, already answered, then ended
        agent = AgentRef(interface="Local/agent2@agents", name="Agent Two")
        await bus.publish(
            CallAnswered(
                **_call("seen-late", 1_795_370_100.0),
                agent=agent,
                agent_channel="Local/agent2@agents-1;1",
                resync=True,
            )
        )
        await bus.publish(
            CallEnded(
                **_call("seen-late", 1_795_370_160.0),
                reason="completed",
                agent=agent,
                talk_time=55.0,
            )
        )
        await recorder.flush()
    finally:
        await recorder.stop()
    rows = await stored(engine)
    lost = rows["lost-1"]
    assert (lost.outcome, lost.hold_s, lost.talk_s, lost.caller) == ("lost", None, None, "0470")
    assert (lost.ended_at - lost.queued_at).total_seconds() == 90.0
    late = rows["seen-late"]
    assert (late.outcome, late.agent, late.talk_s, late.hold_s) == (
        "completed",
        "agent2",
        55.0,
        None,
    )
    assert late.queued_at == late.answered_at  # first seen when rebuilt as answered


async def test_a_refused_row_is_kept_aside_and_the_others_are_stored(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'calls.db'}")
    await init_db(engine)
    bus = LocalBus()
    recorder = CallRecorder(bus, engine)
    await recorder.start()
    try:
        reasons: list[Any] = ["abandoned", "not-an-outcome", "unanswered"]
        for n, reason in enumerate(reasons):
            await bus.publish(CallEnded(**_call(f"c{n}", 1_795_370_000.0 + n), reason=reason))
        await recorder.flush()
    finally:
        await recorder.stop()
        rows = await stored(engine)
        await engine.dispose()
    assert sorted(rows) == ["c0", "c2"]  # the CHECK constraint refused c1 alone
    assert [r.call_id for r in recorder.rejected] == ["c1"]


async def test_a_database_outage_delays_rows_and_loses_none(own_cluster: _Cluster) -> None:  # noqa: F811
    engine = make_engine(own_cluster.url)
    await init_db(engine)
    bus = LocalBus()
    recorder = CallRecorder(bus, engine, retry_initial=0.05, retry_max=0.2)
    await recorder.start()
    try:
        await bus.publish(CallEnded(**_call("before", 1_795_370_000.0), reason="abandoned"))
        await recorder.flush()
        await asyncio.to_thread(pg_ctl, own_cluster, "stop")
        events: list[Event] = [
            CallEnded(**_call(f"during-{n}", 1_795_370_010.0 + n), reason="unanswered")
            for n in range(3)
        ]
        for event in events:
            await bus.publish(event)  # the bus never waits for the database
        await asyncio.sleep(0.5)  # let the writer fail against the stopped server
        assert recorder.pending == 3
        await asyncio.to_thread(pg_ctl, own_cluster, "start")
        await asyncio.wait_for(recorder.flush(), 60)
        rows = await stored(engine)
    finally:
        await recorder.stop()
        await engine.dispose()
    assert sorted(rows) == ["before", "during-0", "during-1", "during-2"]
    assert recorder.rejected == []
