"""The case outbox: the IVR gets its reference at once, and every case is written exactly once,
through a real PostgreSQL outage and across a process killed while the database was down."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from crm_fixtures import _as_postgres, _Cluster
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from sqlmodel import select
from test_buffered_crm import own_cluster, pg_ctl  # noqa: F401  (a cluster of the test's own)
from test_cases_fixtures import *  # noqa: F403  (the pytest fixtures)
from test_cases_fixtures import add_citizen, count, facts

from crm_bridge.case_facts import CallFacts
from crm_bridge.case_models import Case, CaseAlias, Interaction
from crm_bridge.cases import CaseService
from crm_bridge.db import make_engine, session_factory
from crm_bridge.migrations import upgrade_db
from crm_bridge.outbox import CaseOutbox, SpoolLocked
from crm_bridge.references import REFERENCE_RE


def fast_outbox(cases: CaseService, spool: Path) -> CaseOutbox:
    """Retries in tens of milliseconds, so an outage test takes seconds."""
    return CaseOutbox(cases.open_case_for_call, spool, retry_initial=0.05, retry_max=0.2)


def spool_lines(spool: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in spool.read_text().splitlines() if line.strip()]


async def interactions_per_call(engine: AsyncEngine) -> dict[str, int]:
    async with session_factory(engine)() as session:
        result = await session.exec(
            select(Interaction.call_id, func.count()).group_by(Interaction.call_id)
        )
        return {str(call_id): n for call_id, n in result.all()}


@pytest.fixture
async def pg_store(own_cluster: _Cluster) -> AsyncIterator[tuple[_Cluster, AsyncEngine]]:  # noqa: F811
    await upgrade_db(own_cluster.url)
    engine = make_engine(own_cluster.url)
    try:
        yield own_cluster, engine
    finally:
        await engine.dispose()


async def test_submit_returns_the_reference_and_the_case_follows(
    case_engine: AsyncEngine, tmp_path: Path
) -> None:
    cases = CaseService(case_engine)
    spool = tmp_path / "var" / "case-outbox.jsonl"
    outbox = fast_outbox(cases, spool)
    await outbox.start()
    try:
        reference = await outbox.submit(facts("c1"))
        assert REFERENCE_RE.match(reference)
        assert await outbox.submit(facts("c1")) == reference  # handed off twice: one case
        await outbox.flush()
        case = await cases.get_case(reference)
        assert case is not None and case.reference == reference
        assert await interactions_per_call(case_engine) == {"c1": 1}
        assert spool.read_text() == ""  # nothing pending, nothing to replay
        assert spool.stat().st_mode & 0o777 == 0o600  # callers' numbers: owner only
    finally:
        await outbox.stop()


async def test_a_database_outage_holds_no_call_and_loses_no_case(
    pg_store: tuple[_Cluster, AsyncEngine], tmp_path: Path
) -> None:
    cluster, engine = pg_store
    citizen_id = await add_citizen(engine)
    cases = CaseService(engine)
    spool = tmp_path / "spool.jsonl"
    outbox = fast_outbox(cases, spool)
    await outbox.start()
    try:
        first = await outbox.submit(facts("before", citizen_id=citizen_id))
        await outbox.flush()
        await asyncio.to_thread(pg_ctl, cluster, "stop")

        again = await outbox.submit(facts("during-0", citizen_id=citizen_id))  # reopens `first`
        anonymous = [await outbox.submit(facts(f"during-{n}")) for n in (1, 2)]
        assert await outbox.submit(facts("during-1")) == anonymous[0]
        assert len({first, again, *anonymous}) == 4  # each call got its own GUICHET_CASE_ID at once
        await asyncio.sleep(0.5)  # let the writer fail against the stopped server
        assert outbox.pending == 3
        assert outbox.pending_case(again) is not None
        assert [line["op"] for line in spool_lines(spool)] == ["submit"] * 3  # durable meanwhile

        await asyncio.to_thread(pg_ctl, cluster, "start")
        await asyncio.wait_for(outbox.flush(), 60)
    finally:
        await outbox.stop()

    rejected = spool.with_name("spool.jsonl.rejected")
    assert outbox.rejected == [], rejected.read_text()
    assert await interactions_per_call(engine) == {
        "before": 1,
        "during-0": 1,
        "during-1": 1,
        "during-2": 1,
    }
    assert await count(engine, Case) == 3
    assert await cases.resolve(again) == first  # the reopen: the handed-out reference is an alias
    assert [await cases.resolve(ref) for ref in anonymous] == anonymous
    assert spool.read_text() == ""


async def until_new_sessions_are_refused(url: str) -> None:
    probe = make_engine(url, poolclass=NullPool)
    try:
        while True:
            try:
                async with probe.connect():
                    pass
            except DBAPIError as exc:
                if "shutting down" in str(exc):
                    return
            await asyncio.sleep(0.05)
    finally:
        await probe.dispose()


async def test_a_server_shutting_down_is_waited_for_not_taken_as_a_refusal(
    own_cluster: _Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A "smart" shutdown waits for open sessions and answers new ones with SQLSTATE 57P03."""
    await upgrade_db(own_cluster.url)
    engine = make_engine(own_cluster.url, poolclass=NullPool)  # every write a new session
    holder = make_engine(own_cluster.url)
    session = await holder.connect()
    smart_stop = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            _as_postgres(own_cluster.bin_dir / "pg_ctl", "-D", own_cluster.data_dir,
                         "-m", "smart", "-w", "-t", "120", "stop"),
            capture_output=True, timeout=150, check=True,
        )
    )  # fmt: skip
    cases = CaseService(engine)
    outbox = fast_outbox(cases, tmp_path / "spool.jsonl")
    await outbox.start()
    try:
        await asyncio.wait_for(until_new_sessions_are_refused(own_cluster.url), 60)
        reference = await outbox.submit(facts("c1"))
        await asyncio.sleep(0.5)  # the writer meets "shutting down" a few times
        assert outbox.pending == 1 and outbox.rejected == []
        await session.close()
        await holder.dispose()  # the last session ends: the shutdown completes
        await smart_stop
        await asyncio.to_thread(pg_ctl, own_cluster, "start")
        await asyncio.wait_for(outbox.flush(), 60)
        assert outbox.rejected == []
        assert await cases.resolve(reference) == reference
    finally:
        await outbox.stop()
        await holder.dispose()
        await engine.dispose()


KILLED_IVR = """
import asyncio, json, os, signal, sys
from crm_bridge.case_facts import CallFacts
from crm_bridge.cases import CaseService
from crm_bridge.db import make_engine
from crm_bridge.outbox import CaseOutbox

async def main() -> None:
    url, spool, citizen_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
    outbox = CaseOutbox(CaseService(make_engine(url)).open_case_for_call, spool,
                        retry_initial=0.05, retry_max=0.2)
    await outbox.start()
    refs = [await outbox.submit(CallFacts(call_id=call_id, citizen_id=cid, caller="+32470123456",
                                          request_type="identity_card", lang="fr"))
            for call_id, cid in (("k1", citizen_id), ("k2", citizen_id), ("k3", None))]
    print(json.dumps(refs), flush=True)
    await asyncio.sleep(0.3)  # the writer fails against the stopped server
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_cases_spooled_by_a_killed_process_are_written_once_after_restart(
    pg_store: tuple[_Cluster, AsyncEngine], tmp_path: Path
) -> None:
    cluster, engine = pg_store
    citizen_id = await add_citizen(engine)
    cases = CaseService(engine)
    existing = await cases.open_case_for_call(facts("before", citizen_id=citizen_id))
    spool = tmp_path / "spool.jsonl"
    await asyncio.to_thread(pg_ctl, cluster, "stop")

    killed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", KILLED_IVR, cluster.url, str(spool), str(citizen_id)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    handed_out = json.loads(killed.stdout)
    assert [line["op"] for line in spool_lines(spool)] == ["submit"] * 3

    await asyncio.to_thread(pg_ctl, cluster, "start")
    outbox = fast_outbox(cases, spool)  # the restarted server
    await outbox.start()
    try:
        await asyncio.wait_for(outbox.flush(), 60)
    finally:
        await outbox.stop()

    assert await interactions_per_call(engine) == {"before": 1, "k1": 1, "k2": 1, "k3": 1}
    assert await count(engine, Case) == 2
    assert [await cases.resolve(ref) for ref in handed_out[:2]] == [existing, existing]
    assert await cases.resolve(handed_out[2]) == handed_out[2]
    assert await count(engine, CaseAlias) == 2


async def test_a_replay_of_a_case_already_written_writes_nothing(
    case_engine: AsyncEngine, tmp_path: Path
) -> None:
    """A crash after the commit but before the spool said "done"; and a line cut short."""
    cases = CaseService(case_engine)
    written = facts("c1", reference="C-2026-000001-AA")
    assert await cases.open_case_for_call(written) == "C-2026-000001-AA"
    pending = facts("c2", reference="C-2026-000002-BB")
    spool = tmp_path / "spool.jsonl"
    spool.write_text(
        json.dumps({"op": "submit", "facts": written.to_json()})
        + "\n"
        + json.dumps({"op": "submit", "facts": pending.to_json()})
        + "\n"
        + '{"op": "submit", "facts": {"call_id": "c3", "refer'  # the process died mid-line
    )
    outbox = fast_outbox(cases, spool)
    await outbox.start()
    try:
        await outbox.flush()
    finally:
        await outbox.stop()
    assert await interactions_per_call(case_engine) == {"c1": 1, "c2": 1}
    assert await cases.resolve("C-2026-000002-BB") == "C-2026-000002-BB"
    assert outbox.rejected == []


async def test_a_case_the_store_refuses_is_kept_aside_not_retried(
    case_engine: AsyncEngine, tmp_path: Path
) -> None:
    cases = CaseService(case_engine)
    spool = tmp_path / "spool.jsonl"
    outbox = fast_outbox(cases, spool)
    await outbox.start()
    try:
        await outbox.submit(facts("naive", started_at=datetime(2026, 11, 23, 9, 0)))
        after = await outbox.submit(facts("after"))
        await asyncio.wait_for(outbox.flush(), 30)
    finally:
        await outbox.stop()
    assert [f.call_id for f in outbox.rejected] == ["naive"]
    [kept] = spool_lines(spool.with_name("spool.jsonl.rejected"))
    assert kept["facts"]["call_id"] == "naive" and "naive datetime" in str(kept["error"])  # type: ignore[index]
    assert await cases.resolve(after) == after
    assert spool.read_text() == ""


async def test_one_process_per_spool(case_engine: AsyncEngine, tmp_path: Path) -> None:
    cases = CaseService(case_engine)
    first = CaseOutbox(cases.open_case_for_call, tmp_path / "spool.jsonl")
    second = CaseOutbox(cases.open_case_for_call, tmp_path / "spool.jsonl")
    await first.start()
    try:
        with pytest.raises(SpoolLocked):
            await second.start()
    finally:
        await first.stop()
    await second.start()
    await second.stop()


async def test_facts_survive_the_spool_round_trip() -> None:
    original = facts("c1", citizen_id=4, reference="C-2026-000001-AA", priority=7)
    assert CallFacts.from_json(json.loads(json.dumps(original.to_json()))) == original
