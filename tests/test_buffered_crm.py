"""Writes off the call path survive a real database outage: PostgreSQL is stopped while calls end,
started again, and every journey is stored exactly once."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from crm_fixtures import _as_postgres, _Cluster, _start_cluster

from crm_bridge.buffered import BufferedCrm
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
