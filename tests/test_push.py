"""The push hub on its own: numbering, fan-out, replay, resync, slow consumers, topics.

No sockets here (tests/test_ws_protocol.py has the wire); subscriptions are drained the way
the websocket router drains them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from console.push import (
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNAUTHENTICATED,
    PushHub,
    Subscription,
    SubscriptionClosed,
    refused_topics,
)

ALICE, BOB = 1, 2


def drain(subscription: Subscription) -> list[dict[str, Any]]:
    """Every frame queued right now, decoded (without waiting)."""
    frames = []
    while subscription.pending:
        frames.append(json.loads(subscription._frames[0]))
        subscription._frames.popleft()
        if subscription._backlog:
            subscription._backlog -= 1
    return frames


async def take(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    return [json.loads(await subscription.next_frame()) for _ in range(count)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_each_user_has_their_own_increasing_numbering() -> None:
    hub = PushHub()
    assert [hub.publish(ALICE, "call.offered", {"n": n}).seq for n in range(3)] == [1, 2, 3]
    assert hub.publish(BOB, "call.offered").seq == 1
    assert hub.publish(ALICE, "call.answered").seq == 4
    assert (hub.last_seq(ALICE), hub.last_seq(BOB), hub.last_seq(99)) == (4, 1, 0)


async def test_the_envelope_carries_type_stream_seq_time_and_data() -> None:
    hub = PushHub()
    sub = hub.subscribe(ALICE, last_seq=0, epoch=hub.epoch)
    assert [f["type"] for f in await take(sub, 1)] == ["ready"]
    hub.publish(
        ALICE,
        "citizen.found",
        {"name": "Søren Van den Broeck", "when": datetime(2026, 11, 23, 9, 0, tzinfo=UTC)},
    )
    raw = await sub.next_frame()
    assert "Søren" in raw  # UTF-8 kept, not \\u escapes
    frame = json.loads(raw)
    assert set(frame) == {"type", "stream", "seq", "at", "data"}
    assert (frame["type"], frame["stream"], frame["seq"]) == ("citizen.found", "user", 1)
    assert frame["data"] == {"name": "Søren Van den Broeck", "when": "2026-11-23T09:00:00+00:00"}
    assert frame["at"].endswith("Z") and datetime.fromisoformat(frame["at"])


async def test_dataclass_events_are_sent_as_objects() -> None:
    @dataclass(frozen=True)
    class AgentRinging:
        call_id: str
        queue: str

    hub = PushHub()
    sub = hub.subscribe(ALICE, last_seq=0)
    hub.publish(ALICE, "agent.ringing", AgentRinging("1700000000.42", "population-fr"))
    frames = drain(sub)
    assert frames[-1]["data"] == {"call_id": "1700000000.42", "queue": "population-fr"}


async def test_bad_messages_are_refused_and_use_no_sequence_number() -> None:
    hub = PushHub()
    for reserved in ("hello", "ready", "resync", "pong", "error", "", "Has Spaces"):
        with pytest.raises(ValueError):
            hub.publish(ALICE, reserved)
    with pytest.raises(TypeError):
        hub.publish(ALICE, "call.offered", {"oops": object()})
    assert hub.publish(ALICE, "call.offered").seq == 1  # no hole in the numbering


async def test_every_tab_of_a_user_gets_each_message_and_other_users_none() -> None:
    hub = PushHub()
    tab1 = hub.subscribe(ALICE, last_seq=None)
    tab2 = hub.subscribe(ALICE, last_seq=None)
    other = hub.subscribe(BOB, last_seq=None)
    assert hub.connections(ALICE) == 2
    for sub in (tab1, tab2, other):
        assert [f["type"] for f in drain(sub)] == ["resync", "ready"]
    hub.publish(ALICE, "call.offered", {"call": "A"})
    hub.publish(ALICE, "call.answered", {"call": "A"})
    for tab in (tab1, tab2):
        assert [(f["type"], f["seq"]) for f in drain(tab)] == [
            ("call.offered", 1),
            ("call.answered", 2),
        ]
    assert drain(other) == []


async def test_a_client_that_resumes_gets_exactly_what_it_missed_then_ready_then_live() -> None:
    hub = PushHub()
    for n in range(1, 8):
        hub.publish(ALICE, "queue.changed", {"n": n})
    sub = hub.subscribe(ALICE, last_seq=4, epoch=hub.epoch)
    hub.publish(ALICE, "queue.changed", {"n": 8})
    frames = await take(sub, 5)
    assert [f.get("seq") for f in frames] == [5, 6, 7, None, 8]
    ready = frames[3]
    assert ready["type"] == "ready"
    assert ready["data"] == {"epoch": hub.epoch, "streams": {"user": 7}, "replayed": 3}


async def test_a_client_that_is_up_to_date_gets_ready_only() -> None:
    hub = PushHub()
    hub.publish(ALICE, "queue.changed")
    sub = hub.subscribe(ALICE, last_seq=1, epoch=hub.epoch)
    assert [f["type"] for f in drain(sub)] == ["ready"]


@pytest.mark.parametrize(
    ("last_seq", "epoch", "reason"),
    [
        (None, None, "fresh"),
        (2, "another-server-life", "restart"),
        (50, None, "ahead"),
        (1, None, "gap"),  # buffer keeps 3..5
    ],
)
async def test_resync_when_the_missed_messages_cannot_be_replayed(
    last_seq: int | None, epoch: str | None, reason: str
) -> None:
    hub = PushHub(replay_size=3)
    for n in range(5):
        hub.publish(ALICE, "queue.changed", {"n": n})
    sub = hub.subscribe(ALICE, last_seq=last_seq, epoch=epoch)
    frames = drain(sub)
    assert [f["type"] for f in frames] == ["resync", "ready"]
    assert frames[0]["stream"] == "user"
    assert frames[0]["data"] == {"epoch": hub.epoch, "seq": 5, "reason": reason}


async def test_the_oldest_message_still_kept_can_be_resumed_from() -> None:
    hub = PushHub(replay_size=3)
    for n in range(5):
        hub.publish(ALICE, "queue.changed", {"n": n})
    sub = hub.subscribe(ALICE, last_seq=2, epoch=hub.epoch)  # 3, 4, 5 are kept
    assert [f.get("seq") for f in drain(sub)] == [3, 4, 5, None]


async def test_messages_older_than_the_replay_age_are_not_replayed() -> None:
    clock = Clock()
    hub = PushHub(replay_age=900, clock=clock)
    hub.publish(ALICE, "queue.changed", {"n": 1})
    clock.now += 600
    hub.publish(ALICE, "queue.changed", {"n": 2})
    clock.now += 600  # the first is 20 minutes old now, the second 10
    assert [f.get("seq") for f in drain(hub.subscribe(ALICE, last_seq=1))] == [2, None]
    resync = drain(hub.subscribe(ALICE, last_seq=0))[0]
    assert (resync["type"], resync["data"]["reason"]) == ("resync", "gap")


async def test_a_slow_consumer_is_cut_and_the_others_get_everything() -> None:
    hub = PushHub(queue_size=4)
    slow = hub.subscribe(ALICE, last_seq=None)
    fast = hub.subscribe(ALICE, last_seq=None)
    drain(fast)
    received = []
    for n in range(1, 11):
        hub.publish(ALICE, "queue.changed", {"n": n})  # returns at once: nothing waits for `slow`
        received += drain(fast)
    assert [f["seq"] for f in received] == list(range(1, 11))
    assert slow.closed is not None and slow.closed.code == CLOSE_SLOW_CONSUMER
    assert hub.slow_consumers_cut == 1
    assert hub.connections(ALICE) == 1
    with pytest.raises(SubscriptionClosed) as closed:
        await slow.next_frame()  # what was queued is dropped: the client resumes by seq
    assert closed.value.code == CLOSE_SLOW_CONSUMER
    resumed = hub.subscribe(ALICE, last_seq=4, epoch=hub.epoch)  # the slow tab reconnects
    assert [f.get("seq") for f in drain(resumed)] == [5, 6, 7, 8, 9, 10, None]


async def test_a_long_replay_does_not_count_as_slowness() -> None:
    hub = PushHub(queue_size=4)
    for n in range(50):
        hub.publish(ALICE, "queue.changed", {"n": n})
    sub = hub.subscribe(ALICE, last_seq=0, epoch=hub.epoch)
    for n in range(4):
        hub.publish(ALICE, "queue.changed", {"n": 50 + n})
    assert sub.closed is None
    assert [f.get("seq") for f in drain(sub)] == [*range(1, 51), None, 51, 52, 53, 54]


async def test_closing_a_user_closes_every_tab_with_the_code() -> None:
    hub = PushHub()
    tabs = [hub.subscribe(ALICE, last_seq=None) for _ in range(3)]
    other = hub.subscribe(BOB, last_seq=None)
    assert hub.close_user(ALICE, CLOSE_UNAUTHENTICATED, "signed out") == 3
    for tab in tabs:
        assert (await tab.wait_closed()).code == CLOSE_UNAUTHENTICATED
    assert other.closed is None and hub.connections(ALICE) == 0
    hub.publish(ALICE, "queue.changed")  # publishing to nobody is fine


async def test_role_topics_have_their_own_numbering_and_readers() -> None:
    hub = PushHub()
    wallboard = hub.subscribe(3, last_seq=None, topics={"role:supervisor": None})
    agent = hub.subscribe(ALICE, last_seq=None)
    drain(wallboard)
    drain(agent)
    hub.publish(ALICE, "call.offered")
    first = hub.publish_role("supervisor", "queue.stats", {"waiting": 4})
    hub.publish_role("supervisor", "queue.stats", {"waiting": 5})
    assert first.seq == 1 and first.stream == "role:supervisor"
    assert [(f["stream"], f["seq"]) for f in drain(wallboard)] == [
        ("role:supervisor", 1),
        ("role:supervisor", 2),
    ]
    assert [f["type"] for f in drain(agent)] == ["call.offered"]
    resumed = hub.subscribe(3, last_seq=0, epoch=hub.epoch, topics={"role:supervisor": 1})
    frames = drain(resumed)
    assert [(f["type"], f.get("seq")) for f in frames] == [("queue.stats", 2), ("ready", None)]
    assert frames[-1]["data"]["streams"] == {"user": 0, "role:supervisor": 2}
    with pytest.raises(ValueError):
        hub.publish_topic("no-kind", "queue.stats")


def test_only_role_topics_within_the_users_role_are_readable() -> None:
    ranks = {"agent": 0, "supervisor": 1, "admin": 2}

    def supervisor_may(role: str) -> bool:
        return role in ranks and ranks[role] <= ranks["supervisor"]

    assert refused_topics(["role:agent", "role:supervisor"], supervisor_may) == []
    assert refused_topics(["role:admin", "queue:x", "role:nobody"], supervisor_may) == [
        "role:admin",
        "queue:x",
        "role:nobody",
    ]
