"""CtiState is pure: the recorded messages in, domain events out, with the recording's own
clock. What the socket scenarios cannot show: wrap-up (the recordings ran with
wrapuptime 0), Asterisk's `Timestamp:` header, a join missed while away, and the bridge's
wrap-up timer over a real connection."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from ami_peer import AmiPeer, Block, Script, recording
from cti_harness import running

from cti.ami import parse_message
from cti.events import AgentStateChanged, CallAnswered, CallEnded, Event
from cti.state import EVENTS, CtiState

T0 = 1795370000.0


def recorded(scenario: str) -> Iterator[tuple[float, dict[str, Any]]]:
    """(time, headers) of every event the state reads, as recorded on c1."""
    for item in Script.load(recording(scenario)).items:
        if isinstance(item, Block) and item.raw.startswith(b"Event: "):
            headers = parse_message(item.raw.decode()[:-4]).headers
            if headers["Event"] in EVENTS or headers["Event"] == "VarSet":
                yield T0 + item.t, headers


def replay(state: CtiState, scenario: str, skip: Collection[str] = ()) -> list[Event]:
    out: list[Event] = []
    for at, headers in recorded(scenario):
        if headers["Event"] not in skip:
            out.extend(state.apply(headers, at))
    return out


def agent_states(events: list[Event], agent: str) -> list[tuple[str, float]]:
    return [
        (e.state, round(e.at - T0, 1))
        for e in events
        if isinstance(e, AgentStateChanged) and e.agent.id == agent
    ]


def test_wrap_up_ends_on_tick_not_on_an_event() -> None:
    state = CtiState(wrapuptime={"population-nl": 10.0})
    events = replay(state, "inbound-answered")
    assert agent_states(events, "agent1") == [
        ("ringing", 11.9),
        ("on_call", 13.9),
        ("wrap_up", 17.2),  # AgentComplete; Asterisk sends nothing when wrap-up ends
    ]
    due = state.next_wakeup()
    assert due is not None and round(due - T0, 1) == 27.2
    assert state.tick(due - 1.0) == []
    (ready,) = [e for e in state.tick(due) if isinstance(e, AgentStateChanged)]
    assert (ready.state, ready.previous) == ("ready", "wrap_up")
    assert state.next_wakeup() is None


def test_member_wrapuptime_overrides_the_queue() -> None:
    state = CtiState(wrapuptime=10.0)
    member = {
        "Event": "QueueMemberStatus",
        "Queue": "population-nl",
        "MemberName": "Agent One",
        "Interface": "Local/agent1@agents",
        "StateInterface": "PJSIP/agent1",
        "Paused": "0",
        "PausedReason": "",
        "Status": "1",
        "Wrapuptime": "3",
    }
    state.apply(member, T0)
    events = replay(state, "inbound-answered")
    assert agent_states(events, "agent1")[-1] == ("wrap_up", 17.2)
    assert round((state.next_wakeup() or 0) - T0, 1) == 20.2


def test_asterisk_timestamp_header_wins() -> None:
    state = CtiState()
    at, join = next(
        (t, h) for t, h in recorded("inbound-answered") if h["Event"] == "QueueCallerJoin"
    )
    (queued, *_) = state.apply({**join, "Timestamp": "1795370017.250000"}, at)
    assert queued.at == 1795370017.25


def test_a_missed_join_still_gives_answer_and_end() -> None:
    state = CtiState()
    events = replay(state, "inbound-answered", skip={"QueueCallerJoin"})
    kinds = [
        type(e).__name__ for e in events if not type(e).__name__.startswith(("Queue", "Agent"))
    ]
    assert kinds == ["CallAnswered", "CallEnded"]
    answered = next(e for e in events if isinstance(e, CallAnswered))
    assert (answered.call_id, answered.queue, answered.case_id) == (
        "1795370006.1",
        "population-nl",
        "case-1001",
    )


def test_replaying_twice_gives_the_same_events() -> None:
    first, second = CtiState(), CtiState()
    assert replay(first, "blind-transfer") == replay(second, "blind-transfer")
    assert first.calls == {} and not any(a.call or a.rings for a in first.agents.values())


async def test_bridge_ends_wrap_up_by_itself() -> None:
    state = CtiState(wrapuptime=0.05)
    async with (
        AmiPeer([Script.load(recording("inbound-answered"))]) as peer,
        running(peer, state=state) as cti,
    ):
        await cti.next(CallEnded)
        ready = await cti.next(AgentStateChanged, state="ready")
        await cti.close()
    assert ready.previous == "wrap_up"
    assert cti.agent_states("agent1") == ["ringing", "on_call", "wrap_up", "ready"]
