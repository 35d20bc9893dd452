"""Several Guichet nodes on one Redis bus: each keeps its own CTI state, one publishes.

Two nodes (each its own AMI session to a peer replaying the same recorded call, as two nodes
logged in to one Asterisk would see it) share a real `redis-server`; a third subscriber counts
what reaches the bus: every event once. When the publisher stops (lease handed back) or dies
(lease expires), the other node takes over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from ami_peer import AmiPeer, Script, recording
from cti_harness import DEADLINE, config_for
from test_cti_bus import redis_url

from cti.ami import AmiClient
from cti.bridge import CtiBridge
from cti.bus import RedisBus
from cti.events import CallAnswered, CallEnded, Event
from cti.leader import RedisLease

__all__ = ["redis_url"]

TTL = 0.6  # seconds: short, so a take-over happens within the test


async def _until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"still not true after {timeout} s")


@contextlib.asynccontextmanager
async def node(url: str, lease: RedisLease) -> AsyncIterator[CtiBridge]:
    """A Guichet node's CTI: AMI session to its own replay of inbound-answered, Redis bus."""
    peer = AmiPeer([Script.load(recording("inbound-answered"))], settle=3)
    await peer.start()
    bus = RedisBus(url)
    await bus.start()
    client = AmiClient(config_for(peer.port))
    bridge = CtiBridge(client, bus, leader=lease)
    await bridge.start()
    try:
        yield bridge
    finally:
        await client.close()
        await bridge.stop()
        await bus.close()
        await peer.close()


async def test_only_the_lease_holder_publishes_and_the_other_node_takes_over(
    redis_url: str,
) -> None:
    watcher = RedisBus(redis_url)
    await watcher.start()
    seen = watcher.subscribe()
    a, b = RedisLease(redis_url, ttl=TTL, node="a"), RedisLease(redis_url, ttl=TTL, node="b")
    await a.start()
    await b.start()
    try:
        assert a.is_leader and not b.is_leader  # the first node leads from its start
        async with node(redis_url, a) as one, node(redis_url, b) as two:
            for bridge in (one, two):
                await asyncio.wait_for(bridge.client.connect(), DEADLINE)

            events: list[Event] = []

            async def collect() -> None:
                while True:
                    events.append(await seen.get())

            collector = asyncio.create_task(collect())
            # both nodes see the whole call (their own state), the bus carries it once
            await _until(lambda: any(isinstance(e, CallEnded) for e in events))
            await _until(lambda: two.state.calls == {} and one.state.calls == {})
            await asyncio.sleep(0.3)  # anything a second publisher would have sent
            collector.cancel()
            answers = [e for e in events if isinstance(e, CallAnswered)]
            ends = [e for e in events if isinstance(e, CallEnded)]
            assert len(answers) == 1 and len(ends) == 1
            assert two.state.agents.keys() == one.state.agents.keys()  # b kept its state

        await a.stop()  # hands the lease back: b takes it at its next round
        await _until(lambda: b.is_leader, TTL * 3)
        a_again = RedisLease(redis_url, ttl=TTL, node="a")
        await a_again.start()
        assert not a_again.is_leader  # b holds it now
        await a_again.stop()
    finally:
        await b.stop()
        await a.stop()
        await watcher.close()


async def test_a_node_that_dies_loses_the_lease_when_it_expires(redis_url: str) -> None:
    a, b = RedisLease(redis_url, ttl=TTL, node="a"), RedisLease(redis_url, ttl=TTL, node="b")
    await a.start()
    await b.start()
    try:
        assert a.is_leader
        assert a._task is not None
        a._task.cancel()  # the node hangs or dies: no renewal, no hand-back
        with contextlib.suppress(asyncio.CancelledError):
            await a._task
        await _until(lambda: b.is_leader, TTL * 4)
    finally:
        await b.stop()
        await a.stop()


async def test_without_redis_a_node_stops_publishing() -> None:
    lease = RedisLease("redis://127.0.0.1:1/0", ttl=TTL)
    await lease.start()
    try:
        assert not lease.is_leader
    finally:
        await lease.stop()


@pytest.fixture(autouse=True)
def _quiet_redis_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="guichet.cti.leader")
