"""The whole call path over real sockets: a citizen's FastAGI call creates the case, Asterisk's
recorded AMI stream (inbound-answered) rings Agent One, and the pop reaches that agent's
websocket — with the case, the identified citizen and the IVR path — before AgentConnect;
another agent's console receives nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from agi_peer import Press, ScriptedPeer
from ami_peer import AmiPeer, Script, recording
from conftest import NN_1985, OPEN, add_citizen
from console_fixtures import FAST_HASHER, guichet_settings, serve_app

from crm_bridge.knowledge import KnowledgeBase
from guichet.runtime import Guichet

PASSWORD = "correct horse battery staple"
DEADLINE = 15.0


async def token(base_url: str, username: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/auth/token", json={"username": username, "password": PASSWORD}
        )
        response.raise_for_status()
        return str(response.json()["token"])


async def messages_until(ws: Any, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
        seen.append(message)
        if message.get("type") == kind:
            return seen


@pytest.fixture
async def peer() -> AsyncIterator[AmiPeer]:
    ami = AmiPeer([Script.load(recording("inbound-answered"))], settle=3)
    ami.gate = asyncio.Event()
    await ami.start()
    try:
        yield ami
    finally:
        await ami.close()


async def test_case_before_ring_and_pop_only_on_the_ringing_agent(
    tmp_path: Path, peer: AmiPeer
) -> None:
    settings = guichet_settings(tmp_path, peer.port)
    guichet = Guichet(settings, clock=lambda: OPEN)
    await guichet.start()
    try:
        guichet.users.hasher = FAST_HASHER
        citizen = await add_citizen(guichet.store)
        await KnowledgeBase(guichet.store.engine).upsert(
            "household-certificate",
            "population",
            titles={"nl": "Attest gezinssamenstelling"},
            bodies={"nl": "Downloaden via IRISbox."},
        )
        await guichet.users.create_user(
            "agent1", PASSWORD, interface="PJSIP/agent1", ui_language="nl"
        )
        await guichet.users.create_user("agent2", PASSWORD, interface="PJSIP/agent2")
        async with serve_app(guichet.app) as base_url:
            ws_url = base_url.replace("http://", "ws://") + "/ws"
            async with (
                websockets.connect(f"{ws_url}?token={await token(base_url, 'agent1')}") as one,
                websockets.connect(f"{ws_url}?token={await token(base_url, 'agent2')}") as two,
            ):
                for ws in (one, two):
                    await ws.send(json.dumps({"type": "hello", "last_seq": None}))
                    await messages_until(ws, "ready")

                # 1. the citizen calls: the IVR identifies them and hands the call to the queue
                caller = ScriptedPeer([Press("2"), Press("1"), Press("1"), Press(f"{NN_1985}#")])
                await caller.run("127.0.0.1", guichet.agi.port)
                reference = caller.variables["GUICHET_CASE_ID"]
                assert (
                    reference.startswith("C-")
                    and caller.variables["GUICHET_QUEUE"] == "population-nl"
                )
                await guichet.outbox.flush()
                case = await guichet.cases.get_case(reference)
                assert case is not None and case.citizen_id == citizen.id  # before any ring

                # 2. Asterisk queues the call and rings Agent One (the recorded AMI stream)
                peer.rewrites[b"case-1001"] = reference.encode()  # the recorded throwaway id
                assert guichet.ami is not None
                await asyncio.wait_for(guichet.ami.wait_ready(), DEADLINE)
                assert peer.gate is not None
                peer.gate.set()
                seen = await messages_until(one, "screen_pop")
                pop = seen[-1]["data"]
                assert pop["call_id"] == "1795370006.1"
                assert pop["case"]["reference"] == reference
                assert (pop["case"]["language"], pop["case"]["category"]) == ("nl", "population")
                assert (
                    pop["citizen"]["id"] == citizen.id and pop["citizen"]["last_name"] == "Peeters"
                )
                assert pop["ivr_path"][:3] == ["welcome", "opening_hours", "language"]
                assert [a["slug"] for a in pop["articles"]] == ["household-certificate"]
                assert not any(m.get("type") == "call_answered" for m in seen)  # pop before connect
                answered = await messages_until(one, "call_answered")
                assert answered[-1]["data"]["case_reference"] == reference
                await messages_until(one, "call_ended")

                # the other agent got no pop (only what the hub sends everyone, if anything)
                with pytest.raises(TimeoutError):
                    while True:
                        message = json.loads(await asyncio.wait_for(two.recv(), 0.5))
                        assert message.get("type") not in {"screen_pop", "call_answered"}
        await guichet.pop.drain()  # the assignment is written off the pop's path
        case = await guichet.cases.get_case(reference)
        assert case is not None and case.status == "in_progress"
        user = await guichet.users.get("agent1")
        assert user is not None and case.assigned_agent_id == user.id
    finally:
        await guichet.stop()
