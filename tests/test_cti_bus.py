"""The event bus: in process, and over a real `redis-server` started by the test on a free
port (the Debian package `redis-server`; the test fails, it does not skip, without it)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from ami_peer import AmiPeer, Script, recording
from cti_harness import DEADLINE, running

from cti.bus import LocalBus, RedisBus, SubscriptionClosed
from cti.events import (
    EVENT_TYPES,
    AgentRef,
    CallAnswered,
    CallEnded,
    Event,
    QueueStatsChanged,
    from_json,
    to_json,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: install the Debian package `redis-server`")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {proc.returncode}")
                time.sleep(0.01)
        else:
            pytest.fail("redis-server did not listen")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def scenario_events() -> list[Event]:
    """Every kind of event a real call produces (blind transfer: two queues, one agent)."""
    async with AmiPeer([Script.load(recording("blind-transfer"))]) as peer, running(peer) as cti:
        answered = await cti.next(CallAnswered)
        await cti.pbx.blind_transfer(answered.agent_channel, "population-fr", "transfer-targets")
        return await cti.close()


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    a, b = RedisBus(redis_url), RedisBus(redis_url)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_events_round_trip_through_json() -> None:
    events = await scenario_events()
    assert {type(e).__name__ for e in events} >= {
        "CallQueued",
        "AgentRinging",
        "CallAnswered",
        "CallTransferred",
        "CallEnded",
        "AgentStateChanged",
        "AgentQueuesChanged",
        "QueueStatsChanged",
    }
    for event in events:
        assert from_json(to_json(event)) == event
    with pytest.raises(ValueError, match="unknown CTI event type"):
        from_json('{"type": "Nope", "at": 1}')


async def test_redis_bus_between_two_nodes(nodes: tuple[RedisBus, RedisBus]) -> None:
    events = await scenario_events()
    a, b = nodes
    on_a, on_b = a.subscribe(), b.subscribe()
    for event in events:
        await a.publish(event)
    got_b = [await asyncio.wait_for(on_b.get(), DEADLINE) for _ in events]
    got_a = [await asyncio.wait_for(on_a.get(), DEADLINE) for _ in events]
    # the same dataclasses, in order, on the other node and on the publisher itself
    assert got_b == events and got_a == events
    assert all(type(x) is type(y) for x, y in zip(got_b, events, strict=True))
    ended = next(e for e in got_b if isinstance(e, CallEnded))
    assert isinstance(ended.agent, AgentRef) and ended.agent.id == "agent1"


async def test_redis_bus_drops_garbage_and_goes_on(nodes: tuple[RedisBus, RedisBus]) -> None:
    a, b = nodes
    sub = b.subscribe()
    other = aioredis.from_url(a.url)  # someone else on the channel
    await other.publish(a.channel, b"not json")
    await other.publish(a.channel, b'{"type": "CallEnded", "at": 1}')  # fields missing
    await other.aclose()
    stats = QueueStatsChanged(
        at=1.0,
        queue="population-fr",
        waiting=1,
        longest_waiting_since=0.5,
        members=2,
        available=1,
        on_call=1,
        paused=0,
    )
    await a.publish(stats)
    assert await asyncio.wait_for(sub.get(), DEADLINE) == stats
    assert b.bad_messages == 2


async def test_local_bus_slow_consumer_loses_oldest_not_the_cti() -> None:
    bus = LocalBus()
    fast, slow = bus.subscribe(), bus.subscribe(maxsize=2)
    stats = [
        QueueStatsChanged(
            at=float(i),
            queue="q",
            waiting=i,
            longest_waiting_since=None,
            members=0,
            available=0,
            on_call=0,
            paused=0,
        )
        for i in range(5)
    ]
    for event in stats:
        await bus.publish(event)
    assert [await fast.get() for _ in stats] == stats
    assert [await slow.get() for _ in range(2)] == stats[3:]
    assert slow.dropped == 3
    slow.close()
    await bus.publish(stats[0])
    assert slow.closed and fast.pending() == [stats[0]]
    with pytest.raises(SubscriptionClosed):
        await slow.get()
    async with bus.subscribe() as third:
        await bus.publish(stats[1])
        assert await third.get() == stats[1]
    await bus.close()
    assert set(EVENT_TYPES) >= {"CallQueued", "RingWithdrawn", "AgentStateChanged"}
