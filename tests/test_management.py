"""A supervisor steers the floor from the wallboard: the AMI actions reach Asterisk's side of
the wire exactly, the change comes back through the CTI, and every action is audited.

The recorded `inbound-answered` call is held while it waits in population-nl (Agent One's
phone ringing), so there is a waiting call to reassign and a member to change. Asterisk's
answers to QueueAdd / QueueRemove / QueuePenalty / Redirect are not in the recordings: the
hooks answer with app_queue.c's and manager.c's own acknowledgement texts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ami_peer import Script, recording
from test_agent_api import AgentDesk, agent_desk, answer_as_recorded, detail

from console.routers import management
from crm_bridge.audit import Subject
from cti.events import AgentQueuesChanged

CALL = "1795370006.1"
CITIZEN_CHANNEL = "Local/022791111@from-citizen-00000000;2"
WAITING = 12.0  # AgentCalled at 11.94 s; the call waits in the queue from here on

ACKS = {
    "queueadd": "Added interface to queue",
    "queueremove": "Removed interface from queue",
    "queuepenalty": "Interface penalty set successfully",
    "redirect": "Redirect successful",
}


# What app_queue.c then tells every AMI session, as the member events of agent-pause look.
MEMBER_EVENT = (
    "Event: {event}\r\nPrivilege: agent,all\r\nQueue: {queue}\r\nMemberName: Alice Dupont\r\n"
    "Interface: {interface}\r\nStateInterface: PJSIP/agent1\r\nMembership: dynamic\r\n"
    "Penalty: {penalty}\r\nCallsTaken: 0\r\nLastCall: 0\r\nLastPause: 0\r\n"
    "LoginTime: 1795370227\r\nInCall: 0\r\nStatus: 1\r\nPaused: 0\r\nPausedReason: \r\n"
    "Ringinuse: 1\r\nWrapuptime: 0\r\n\r\n"
)
MEMBER_EVENTS = {
    "queueadd": "QueueMemberAdded",
    "queuepenalty": "QueueMemberPenalty",
    "queueremove": "QueueMemberRemoved",
}


def acknowledge(_session: Any, action: Any) -> bytes | None:
    """Asterisk's acknowledgement, then (for the queue actions) the member event it sends."""
    message = ACKS.get(action.name)
    if message is None:
        return None
    answer = f"Response: Success\r\nActionID: {{id}}\r\nMessage: {message}\r\n\r\n"
    if action.name in MEMBER_EVENTS:
        answer += MEMBER_EVENT.format(
            event=MEMBER_EVENTS[action.name],
            queue=action.get("Queue"),
            interface=action.get("Interface"),
            penalty=action.get("Penalty") or "0",
        )
    return answer.encode()


async def _desk(tmp_path: Path) -> Any:
    return agent_desk(
        tmp_path,
        script=Script.load(recording("inbound-answered")).until(WAITING),
        hooks=[acknowledge, answer_as_recorded("QueuePause")],
        routers=[management.router],
    )


async def _waiting(desk: AgentDesk) -> None:
    assert desk.cti is not None
    for _ in range(200):
        call = desk.cti.bridge.state.call_by_id(CALL)
        if call is not None and call.in_queue and call.rings:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the recorded call never waited in the queue")


def sent(desk: AgentDesk, name: str) -> list[dict[str, str]]:
    assert desk.peer is not None
    return [{k: v for k, v in a.headers if k != "ActionID"} for a in desk.peer.sent(name.lower())]


async def test_pause_unpause_and_log_out_an_agent_with_a_reason(tmp_path: Path) -> None:
    async with await _desk(tmp_path) as desk:
        await _waiting(desk)
        async with desk.signed_in("sophie") as sophie:
            paused = await sophie.post(
                "/api/supervision/agents/agent2/presence",
                json={"state": "paused", "reason": "lunch"},
            )
            assert paused.status_code == 200, paused.text
            assert paused.json()["interfaces"] == ["Local/agent2@agents"]
            ready = await sophie.post(
                "/api/supervision/agents/agent2/presence",
                json={"state": "ready", "reason": "back from lunch"},
            )
            assert ready.status_code == 200, ready.text
            out = await sophie.post(
                "/api/supervision/agents/agent1/presence",
                json={"state": "logged_out", "reason": "sent home ill"},
            )
            assert out.status_code == 200, out.text
        pauses = sent(desk, "QueuePause")
        assert pauses == [
            {
                "Action": "QueuePause",
                "Interface": "Local/agent2@agents",
                "Paused": "true",
                "Reason": "lunch",
            },
            {"Action": "QueuePause", "Interface": "Local/agent2@agents", "Paused": "false"},
        ]
        assert sent(desk, "QueueRemove") == [
            {"Action": "QueueRemove", "Queue": "population-nl", "Interface": "Local/agent1@agents"}
        ]
        trail = await desk.audit.entries(subject=Subject("agent", "agent2"))
        assert [(e.action, e.actor, e.reason) for e in reversed(trail)] == [
            (management.AGENT_PAUSED, "sophie", "lunch"),
            (management.AGENT_UNPAUSED, "sophie", "back from lunch"),
        ]
        (logout,) = await desk.audit.entries(subject=Subject("agent", "agent1"))
        assert (logout.action, logout.reason) == (management.AGENT_LOGGED_OUT, "sent home ill")


async def test_queues_and_penalties_follow_membership(tmp_path: Path) -> None:
    async with await _desk(tmp_path) as desk:
        await _waiting(desk)
        async with desk.signed_in("sophie") as sophie:
            added = await sophie.put(
                "/api/supervision/agents/agent1/queues/population-fr", json={"penalty": 2}
            )
            assert added.status_code == 200, added.text
            changed = await sophie.put(
                "/api/supervision/agents/agent1/queues/population-nl", json={"penalty": 3}
            )
            assert changed.status_code == 200, changed.text
            removed = await sophie.delete("/api/supervision/agents/agent1/queues/population-nl")
            assert removed.status_code == 204, removed.text
            unknown = await sophie.put(
                "/api/supervision/agents/agent9/queues/population-nl", json={"penalty": 0}
            )
            assert unknown.status_code == 404 and detail(unknown)["code"] == "agent_not_found"
        assert desk.cti is not None  # the change came back from Asterisk, as the CTI sees it
        await desk.cti.next(AgentQueuesChanged, penalties={"population-fr": 2})
        member = desk.cti.bridge.state.agents["Local/agent1@agents"]
        assert {q: m.penalty for q, m in member.queues.items()} == {"population-fr": 2}
        changes = desk.cti.of(AgentQueuesChanged)
        assert [e.penalties for e in changes if e.agent.id == "agent1"][-3:] == [
            {"population-fr": 2, "population-nl": 0},
            {"population-fr": 2, "population-nl": 3},
            {"population-fr": 2},
        ]
        assert sent(desk, "QueueAdd") == [
            {
                "Action": "QueueAdd",
                "Queue": "population-fr",
                "Interface": "Local/agent1@agents",
                "Penalty": "2",
                "Paused": "false",
                "MemberName": "Alice Dupont",
                "StateInterface": "PJSIP/agent1",
            }
        ]
        assert sent(desk, "QueuePenalty") == [
            {
                "Action": "QueuePenalty",
                "Interface": "Local/agent1@agents",
                "Penalty": "3",
                "Queue": "population-nl",
            }
        ]
        assert sent(desk, "QueueRemove") == [
            {"Action": "QueueRemove", "Queue": "population-nl", "Interface": "Local/agent1@agents"}
        ]
        rows = await desk.audit.entries(action=management.QUEUE_MEMBER_CHANGED)
        assert sorted(e.reason or "" for e in rows) == [
            "population-fr penalty 2",
            "population-nl penalty 3",
            "population-nl removed",
        ]


async def test_a_waiting_call_is_reassigned_to_a_chosen_agent(tmp_path: Path) -> None:
    async with await _desk(tmp_path) as desk:
        await _waiting(desk)
        async with desk.signed_in("sophie") as sophie:
            bad = await sophie.post(
                f"/api/supervision/calls/{CALL}/reassign",
                json={"agent": "agent2", "reason": "<script>"},
            )
            assert bad.status_code == 422 and detail(bad)["code"] == "bad_reason"
            moved = await sophie.post(
                f"/api/supervision/calls/{CALL}/reassign",
                json={"agent": "agent2", "reason": "speaks Dutch"},
            )
            assert moved.status_code == 200, moved.text
            missing = await sophie.post(
                "/api/supervision/calls/nope/reassign", json={"agent": "agent2", "reason": "x"}
            )
            assert missing.status_code == 404
        assert sent(desk, "Redirect") == [
            {
                "Action": "Redirect",
                "Channel": CITIZEN_CHANNEL,
                "Exten": "agent2",
                "Context": "agents",
                "Priority": "1",
            }
        ]
        (row,) = await desk.audit.entries(action=management.CALL_REASSIGNED)
        assert (row.subject, row.reason) == (Subject.call(CALL), "to agent2: speaks Dutch")


async def test_agents_cannot_steer_the_floor(tmp_path: Path) -> None:
    async with await _desk(tmp_path) as desk:
        await _waiting(desk)
        async with desk.signed_in("alice") as alice:
            attempts = [
                await alice.post(
                    "/api/supervision/agents/agent2/presence",
                    json={"state": "paused", "reason": "lunch"},
                ),
                await alice.put(
                    "/api/supervision/agents/agent1/queues/population-fr", json={"penalty": 0}
                ),
                await alice.delete("/api/supervision/agents/agent1/queues/population-nl"),
                await alice.post(
                    f"/api/supervision/calls/{CALL}/reassign",
                    json={"agent": "agent1", "reason": "mine"},
                ),
                await alice.get("/api/wallboard"),
            ]
        assert [r.status_code for r in attempts[:4]] == [403] * 4
        assert attempts[4].status_code in (403, 404)  # the wallboard is not mounted here
        for name in ("QueuePause", "QueueAdd", "QueueRemove", "Redirect"):
            assert sent(desk, name) == [], name
        assert await desk.audit.entries(action=management.AGENT_PAUSED) == []
