"""Writes off the call path survive a real database outage: PostgreSQL is stopped while calls end,
started again, and every journey is stored exactly once. Writes queued together are stored in
one transaction; a batch the store refuses is stored one write at a time."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from crm_fixtures import _as_postgres, _Cluster, _start_cluster
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from crm_bridge.buffered import BufferedCrm
from crm_bridge.models import CallbackRecord
from crm_bridge.ports import CallbackRequest, CallJourney
from crm_bridge.store import SqlCrm

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def journey(call_id: str) -> CallJourney:
    return CallJourney(call_id=call_id, flow="commune", flow_hash="h", leg="agi", caller="0470123456",
                       started_at=T0, ended_at=T0 + timedelta(seconds=30), outcome="queued")


def pg_ctl(cluster: _Cluster, action: str) -> None:
    options = f"-p {cluster.port} -k {cluster.root} -c listen_addresses=127.0.0.1 -c fsync=off"
    argv: list[str | Path] = [cluster.bin_dir / "pg_ctl", "-D", cluster.data_dir, "-w", "-t", "60", "-m", "fast"]
    if action == "start":
        argv += ["-o", options, "-l", cluster.root / "server.log"]
    subprocess.run(_as_postgres(*argv, action), check=True, capture_output=True, timeout=90)


@pytest.fixture
def own_cluster() -> Iterator[_Cluster]:
    """A cluster of this test's own: stopping it must not disturb the session's shared one."""
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        subprocess.run(_as_postgres(cluster.bin_dir / "pg_ctl", "-D", cluster.data_dir, "-m",
                                    "immediate", "stop"), capture_output=True, check=False)
        shutil.rmtree(cluster.root, ignore_errors=True)


async def test_outage_then_recovery_stores_each_write_once(own_cluster: _Cluster) -> None:
    store = await SqlCrm.connect(own_cluster.url)
    crm = BufferedCrm(store, retry_initial=0.05, retry_max=0.2)
    await crm.start()
    try:
        await crm.save_journey(journey("before"))
        await crm.flush()
        await asyncio.to_thread(pg_ctl, own_cluster, "stop")
        for n in range(3):
            await crm.save_journey(journey(f"during-{n}"))  # returns at once: the call is not held
        await crm.record_callback(CallbackRequest(call_id="during-0", flow="commune",
                                                  caller="0470123456", requested_at=T0))
        await asyncio.sleep(0.5)
        assert crm.pending > 0  # still queued: nothing was lost or dropped
        queued = await crm.get_journey("during-1")  # readable before it is stored
        assert queued is not None and queued.call_id == "during-1"
        await asyncio.to_thread(pg_ctl, own_cluster, "start")
        await asyncio.wait_for(crm.flush(), 60)
        for call_id in ("before", "during-0", "during-1", "during-2"):
            stored = await store.get_journey(call_id)
            assert stored is not None and stored.outcome == "queued"
        assert crm.rejected == []
    finally:
        await crm.stop()
        await store.close()


async def test_a_write_the_store_refuses_is_kept_aside_not_retried(tmp_path: Path) -> None:
    store = await SqlCrm.connect(f"sqlite+aiosqlite:///{tmp_path}/crm.db")
    crm = BufferedCrm(store, retry_initial=0.05)
    await crm.start()
    try:
        naive = CallJourney(call_id="naive", flow="f", flow_hash="h", leg="agi", caller="",
                            started_at=datetime(2026, 1, 1), ended_at=datetime(2026, 1, 1),
                            outcome="hangup")
        await crm.save_journey(naive)
        await crm.save_journey(journey("after"))
        await asyncio.wait_for(crm.flush(), 10)
        assert [j.call_id for j in crm.rejected] == ["naive"]
        assert await store.get_journey("after") is not None
    finally:
        await crm.stop()
        await store.close()


class RecordingStore:
    """A store with batch writes that records each call and fails as told."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = failures or []
        self.calls: list[tuple[str, list[str]]] = []
        self.stored: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def _write(self, kind: str, ids: list[str]) -> None:
        self.calls.append((kind, ids))
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.stored.extend(ids)

    async def find_citizen_by_national_number(self, number: str) -> None:
        return None

    async def find_citizen_by_phone(self, phone: str) -> None:
        return None

    async def save_journey(self, journey: CallJourney) -> None:
        await self._write("journey", [journey.call_id])

    async def save_journeys(self, journeys: list[CallJourney]) -> None:
        await self._write("journeys", [j.call_id for j in journeys])

    async def record_callback(self, request: CallbackRequest) -> None:
        await self._write("callback", [request.call_id])

    async def record_callbacks(self, requests: list[CallbackRequest]) -> None:
        await self._write("callbacks", [r.call_id for r in requests])


def callback(call_id: str) -> CallbackRequest:
    return CallbackRequest(call_id=call_id, flow="commune", caller="0470123456", requested_at=T0)


async def test_writes_queued_together_are_stored_in_one_transaction() -> None:
    store = RecordingStore()
    crm = BufferedCrm(store, batch_size=4)
    for n in range(6):
        await crm.save_journey(journey(f"j{n}"))
    await crm.record_callback(callback("j1"))
    await crm.start()
    try:
        await asyncio.wait_for(crm.flush(), 10)
    finally:
        await crm.stop()
    # at most batch_size writes per batch, callbacks first, each kind in its order; a batch
    # of one goes through the single write
    assert store.calls == [
        ("journeys", ["j0", "j1", "j2", "j3"]),
        ("callback", ["j1"]),
        ("journeys", ["j4", "j5"]),
    ]
    assert crm.pending == 0 and crm.rejected == []


async def test_a_batch_failing_transiently_is_retried_whole() -> None:
    store = RecordingStore([OperationalError("INSERT", {}, Exception("database is locked"))])
    crm = BufferedCrm(store, retry_initial=0.01)
    for n in range(3):
        await crm.save_journey(journey(f"j{n}"))
    await crm.start()
    try:
        await asyncio.wait_for(crm.flush(), 10)
    finally:
        await crm.stop()
    assert store.calls == [("journeys", ["j0", "j1", "j2"])] * 2
    assert store.stored == ["j0", "j1", "j2"] and crm.rejected == []


async def test_writes_the_writer_holds_count_as_pending() -> None:
    store = RecordingStore()
    store.gate.clear()  # the database hangs
    crm = BufferedCrm(store)
    await crm.start()
    try:
        for n in range(3):
            await crm.save_journey(journey(f"j{n}"))
        await asyncio.sleep(0.05)
        assert store.calls == [("journeys", ["j0", "j1", "j2"])]  # taken off the queue...
        assert crm.pending == 3  # ...but not stored yet
        store.gate.set()
        await asyncio.wait_for(crm.flush(), 10)
        assert crm.pending == 0
    finally:
        await crm.stop()


async def test_a_refused_batch_is_stored_one_by_one(tmp_path: Path) -> None:
    """One write the database refuses (no such citizen: a foreign key) is kept aside alone;
    the others of its batch are stored."""
    store = await SqlCrm.connect(f"sqlite+aiosqlite:///{tmp_path}/crm.db")
    crm = BufferedCrm(store, retry_initial=0.05)
    try:
        await crm.save_journey(journey("a"))
        await crm.save_journey(replace(journey("bad"), citizen_id=999))
        await crm.save_journey(journey("c"))
        await crm.record_callback(callback("a"))
        await crm.record_callback(replace(callback("bad"), citizen_id=999))
        await crm.start()
        await asyncio.wait_for(crm.flush(), 10)
        assert sorted(item.call_id for item in crm.rejected) == ["bad", "bad"]
        for call_id in ("a", "c"):
            assert await store.get_journey(call_id) is not None
        assert await store.get_journey("bad") is None
        async with store.engine.connect() as db:
            stored = (await db.execute(select(CallbackRecord.call_id))).scalars().all()  # type: ignore[call-overload]
        assert stored == ["a"]
        assert crm.pending == 0
    finally:
        await crm.stop()
        await store.close()
