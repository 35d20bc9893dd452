"""Live coaching over the wire: a real console (uvicorn, SQLite, argon2 users, websockets) with
the real AMI client, CTI state, bus and `Pbx` in front of the AMI peer replaying the
supervisor-spy recording.

The recording's first spy leg is Guichet's: the peer goes on with Asterisk's recorded bytes
only once the console sent the same Originate (with option ``d`` added: the recipe letters
first), and the Hangup of the recorded spyer channel. What is checked is what leaves
Guichet: the AMI actions at the peer, the HTTP answers per role, the pushes on each user's
websocket and the audit rows. The CTI part is also replayed through `CtiState` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from ami_peer import AmiPeer, Expect, Hook, Item, Script, Session, recording
from console_fixtures import FAST_HASHER, PASSWORDS, SECRET, create_people, serve_app
from cti_harness import DEADLINE, Cti, running
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from test_agent_api import recorded as recorded_reply
from test_cti_state import T0, recorded
from websockets.asyncio.client import ClientConnection, connect

from console.coaching import MESSAGE_SENT, SPY_ENDED, SPY_MODE_CHANGED, Coaching
from console.deps import ConsoleConfig
from console.factory import create_console_app
from console.push import PushHub
from console.routers import supervision
from console.routers.agent import agent_routers
from crm_bridge.audit import CALL_SPIED, AuditLog
from crm_bridge.coaching_store import CoachingStore
from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserService, UserView
from cti.events import CallAnswered, SpyStarted, SpyStopped, from_json, to_json
from cti.state import CtiState

CALL = "1795370193.1"  # GUICHET_CALL_ID of the recorded call, answered by Agent One
SPYER = "PJSIP/sup1-00000000"  # the recorded first spy leg
AGENT_LEG = "Local/agent1@agents-00000001;1"
# What Guichet sends for "listen" (the recording sent `qbES` and `"Supervisor" <sup1>`).
SENT = {"Data": "Local/agent1@agents,qbESd", "CallerID": '"Guichet" <agent1>'}
# res/res_manager... manager.c action_playdtmf: astman_send_ack(s, m, "DTMF successfully queued")
PLAYDTMF_ANSWER = (
    b"Response: Success\r\nActionID: {id}\r\nMessage: DTMF successfully queued\r\n\r\n"
)


def spy_script(keep: Callable[[Item], bool] = lambda item: True) -> Script:
    """The supervisor-spy recording with its first Originate as Guichet words it."""
    script = Script.load(recording("supervisor-spy"))
    items: list[Item] = []
    for item in script.items:
        if isinstance(item, Expect) and item.action_id == "spy-qbES":
            item = replace(item, headers=tuple((k, SENT.get(k, v)) for k, v in item.headers))
        if keep(item):
            items.append(item)
    return Script(script.banner, tuple(items))


def answer_playdtmf(_session: Session, action: Any) -> bytes | None:
    return PLAYDTMF_ANSWER if action.name == "playdtmf" else None


@dataclass
class Room:
    base_url: str
    app: FastAPI
    engine: AsyncEngine
    people: dict[str, UserView]
    audit: AuditLog
    coaching: Coaching
    peer: AmiPeer
    cti: Cti

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, follow_redirects=False, trust_env=False, **kwargs
        )

    @contextlib.asynccontextmanager
    async def signed_in(self, username: str) -> AsyncIterator[httpx.AsyncClient]:
        async with self.client(headers={"Origin": self.base_url}) as client:
            response = await client.post(
                "/login", data={"username": username, "password": PASSWORDS[username]}
            )
            assert response.status_code == 303, response.text
            yield client

    @contextlib.asynccontextmanager
    async def socket(self, username: str, *topics: str) -> AsyncIterator[ClientConnection]:
        """A websocket with a bearer token, past its ``ready``."""
        async with self.client() as client:
            response = await client.post(
                "/api/auth/token", json={"username": username, "password": PASSWORDS[username]}
            )
        token = response.json()["token"]
        url = self.base_url.replace("http://", "ws://") + "/ws"
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(url, additional_headers=headers, proxy=None) as ws:
            hello = {"type": "hello", "last_seq": None, "topics": dict.fromkeys(topics)}
            await ws.send(json.dumps(hello))
            while json.loads(await ws.recv())["type"] != "ready":
                pass
            yield ws


@contextlib.asynccontextmanager
async def coaching_room(tmp_path: Path, script: Script, hooks: Iterable[Hook] = ()) -> Any:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'coaching.db'}")
    await init_db(engine)
    users = UserService(engine, hasher=FAST_HASHER)
    hub = PushHub()
    app = create_console_app(
        engine=engine,
        users=users,
        hub=hub,
        extra_routers=[*agent_routers(), supervision.router, supervision.me_router],
        config=ConsoleConfig(secret_key=SECRET, ws_revalidate_interval=3600),
    )
    audit = AuditLog(engine)
    try:
        async with contextlib.AsyncExitStack() as stack:
            people = await create_people(users)
            people["sophie"] = await users.update("sophie", interface="PJSIP/sup1")
            peer = await stack.enter_async_context(AmiPeer([script]))
            peer.hooks.extend(hooks)
            cti = await stack.enter_async_context(running(peer))
            coaching = Coaching(
                hub=hub,
                store=CoachingStore(engine),
                audit=audit,
                users=users,
                pbx=cti.pbx,
                cti=cti.bridge.state,
            )
            await coaching.start(cti.bus)
            stack.push_async_callback(coaching.stop)
            state = app.state
            state.audit, state.users, state.crm_engine, state.hub = audit, users, engine, hub
            state.pbx, state.cti_state, state.coaching = cti.pbx, cti.bridge.state, coaching
            base_url = await stack.enter_async_context(serve_app(app))
            yield Room(base_url, app, engine, people, audit, coaching, peer, cti)
    finally:
        await engine.dispose()


async def next_push(
    ws: ClientConnection, kind: str, **match: Any
) -> tuple[dict[str, Any], list[str]]:
    """The next push of ``kind`` whose data has ``match``; and the types seen before it.
    (`DEADLINE` only keeps a broken test from hanging.)"""
    seen: list[str] = []

    async def find() -> dict[str, Any]:
        while True:
            frame = json.loads(await ws.recv())
            data = frame.get("data") or {}
            if frame["type"] == kind and all(data.get(k) == v for k, v in match.items()):
                return dict(data)
            seen.append(frame["type"])

    return await asyncio.wait_for(find(), DEADLINE), seen


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


# --- the recording, through the console ------------------------------------------------------


async def test_a_supervisor_listens_whispers_and_stops_and_it_is_all_audited(
    tmp_path: Path,
) -> None:
    script = spy_script(lambda item: item.t <= 19.0)  # the first spy leg; then the line idles
    async with coaching_room(tmp_path, script, [answer_playdtmf]) as room:
        await room.cti.next(CallAnswered, call_id=CALL)
        async with (
            room.signed_in("alice") as alice,
            room.signed_in("bob") as bob,
            room.signed_in("sophie") as sophie,
            room.signed_in("nora") as nora,
            room.socket("sophie", "role:supervisor") as sophie_ws,
            room.socket("alice") as alice_ws,
            room.socket("bob") as bob_ws,
        ):
            # Agents may not spy: refused before anything reaches Asterisk.
            refused = await alice.post("/api/supervision/spy", json={"call_id": CALL})
            assert refused.status_code == 403
            assert (await alice.get("/api/supervision/hands")).status_code == 403
            assert (await alice.get("/api/supervision/spy")).status_code == 403
            message = {"agent": "agent2", "text": "hello"}
            assert (await alice.post("/api/supervision/messages", json=message)).status_code == 403
            assert room.peer.sent("Originate") == []

            # The agent page has the coaching panel.
            page = await alice.get("/agent")
            assert 'id="hand-button"' in page.text and 'id="private-messages"' in page.text

            # Alice raises her hand about her call; Bob has no call to raise one about.
            raised = await alice.post("/api/me/hand", json={"raised": True})
            assert raised.status_code == 200, raised.text
            assert (raised.json()["call_id"], raised.json()["raised"]) == (CALL, True)
            no_call = await bob.post("/api/me/hand", json={"raised": True})
            assert no_call.status_code == 409 and code(no_call) == "not_on_call"
            hand, _ = await next_push(sophie_ws, "hand")
            assert hand["agent"] == "agent1" and hand["display_name"] == "Alice Dupont"
            assert (hand["call_id"], hand["raised"], hand["user_id"]) == (
                CALL,
                True,
                room.people["alice"].id,
            )
            listed = (await sophie.get("/api/supervision/hands")).json()
            assert [(h["agent"], h["raised"]) for h in listed] == [("agent1", True)]

            # A private message reaches Alice's socket only.
            sent = await sophie.post(
                "/api/supervision/messages",
                json={"agent": "agent1", "text": "Propose un rappel mardi.", "call_id": CALL},
            )
            assert sent.status_code == 201, sent.text
            to_bob = await sophie.post(
                "/api/supervision/messages",
                json={"user_id": room.people["bob"].id, "text": "Pauze om 11u?"},
            )
            assert to_bob.status_code == 201
            got, _ = await next_push(alice_ws, "private_message")
            assert (got["from"], got["text"], got["call_id"]) == (
                "Sophie Martin",
                "Propose un rappel mardi.",
                CALL,
            )
            bobs, _ = await next_push(bob_ws, "private_message")
            assert bobs["text"] == "Pauze om 11u?"  # his own, not Alice's
            both = await sophie.post(
                "/api/supervision/messages",
                json={"agent": "agent1", "user_id": room.people["bob"].id, "text": "x"},
            )
            assert both.status_code == 422
            nobody = await sophie.post(
                "/api/supervision/messages", json={"agent": "agent9", "text": "x"}
            )
            assert nobody.status_code == 404

            # Sophie listens: her phone is rung to run ChanSpy on Agent One's leg.
            started = await sophie.post(
                "/api/supervision/spy",
                json={"call_id": CALL, "mode": "listen", "reason": "quality check"},
            )
            assert started.status_code == 201, started.text
            session = started.json()
            assert (session["state"], session["mode"], session["agent"]) == (
                "starting",
                "listen",
                "agent1",
            )
            lowered, before = await next_push(sophie_ws, "hand")  # she joins: hand lowered
            assert (lowered["agent"], lowered["raised"]) == ("agent1", False)
            assert "private_message" not in before  # messages went to the agents only
            live, _ = await next_push(sophie_ws, "spy_session", id=session["id"], state="live")
            assert live["supervisor"] == "sophie"
            (originate,) = room.peer.sent("Originate")
            assert originate.get("Channel") == "PJSIP/sup1"
            assert (originate.get("Application"), originate.get("Data")) == (
                "ChanSpy",
                "Local/agent1@agents,qbESd",
            )
            assert originate.get("Async") == "true"

            again = await sophie.post("/api/supervision/spy", json={"call_id": CALL})
            assert again.status_code == 409 and code(again) == "already_spying"
            running_now = (await sophie.get("/api/supervision/spy")).json()
            assert [(s["id"], s["state"]) for s in running_now] == [(session["id"], "live")]

            # Whisper: DTMF 5 received on her spy leg (ChanSpy's `d` option).
            path = f"/api/supervision/spy/{session['id']}"
            whisper = await sophie.patch(path, json={"mode": "whisper"})
            assert whisper.status_code == 200, whisper.text
            assert whisper.json()["mode"] == "whisper"
            (dtmf,) = room.peer.sent("PlayDTMF")
            assert (dtmf.get("Channel"), dtmf.get("Digit"), dtmf.get("Receive")) == (
                SPYER,
                "5",
                "true",
            )
            assert (await sophie.patch(path, json={"mode": "shout"})).status_code == 422

            # Stop: the spy leg is hung up, as recorded (then ChanSpyStop, Hangup).
            stopped = await sophie.delete(path)
            assert stopped.status_code == 204, stopped.text
            (hangup,) = room.peer.sent("Hangup")
            assert hangup.get("Channel") == SPYER
            ended, _ = await next_push(sophie_ws, "spy_session", id=session["id"], state="ended")
            assert (ended["mode"], ended["end_reason"]) == ("whisper", "stopped")
            stop_event = await room.cti.next(SpyStopped)
            assert (stop_event.spy_channel, stop_event.call_id) == (SPYER, CALL)
            assert (await sophie.delete(path)).status_code == 404
            assert (await sophie.get("/api/supervision/spy")).json() == []

            # The trail: for admins only.
            for user in (alice, sophie):
                assert (await user.get("/api/audit")).status_code == 403
                assert (await user.get("/api/supervision/spy-sessions")).status_code == 403
            trail = await nora.get(
                "/api/audit", params={"subject_type": "call", "subject_id": CALL}
            )
            assert trail.status_code == 200, trail.text
            rows = [(r["action"], r["actor"], r["reason"]) for r in trail.json()]
            assert rows == [
                (SPY_ENDED, "sophie", "stopped"),
                (SPY_MODE_CHANGED, "sophie", "listen->whisper"),
                (CALL_SPIED, "sophie", "quality check"),
            ]
            messages = (await nora.get("/api/audit", params={"action": MESSAGE_SENT})).json()
            assert sorted((r["subject_id"], r["reason"]) for r in messages) == sorted(
                [
                    (str(room.people["alice"].id), "Propose un rappel mardi."),
                    (str(room.people["bob"].id), "Pauze om 11u?"),
                ]
            )
            half = await nora.get("/api/audit", params={"subject_type": "call"})
            assert half.status_code == 422
            sessions = (await nora.get("/api/supervision/spy-sessions")).json()
            assert [(s["call_id"], s["modes"], s["spy_channel"]) for s in sessions] == [
                (CALL, ["listen", "whisper"], SPYER)
            ]
            assert sessions[0]["ended_at"] is not None
            assert sessions[0]["reason"] == "quality check"


async def test_a_session_ends_with_the_call_and_a_raised_hand_with_the_join(
    tmp_path: Path,
) -> None:
    # Nobody stops the first spy leg: the recording goes on to the citizen's hang-up.
    script = spy_script(lambda item: not 18.0 < item.t < 29.0)
    async with coaching_room(tmp_path, script) as room:
        await room.cti.next(CallAnswered, call_id=CALL)
        async with (
            room.signed_in("alice") as alice,
            room.signed_in("sophie") as sophie,
            room.socket("sophie", "role:supervisor") as sophie_ws,
            room.socket("alice") as alice_ws,
        ):
            assert (await alice.post("/api/me/hand", json={"raised": True})).status_code == 200
            await next_push(alice_ws, "hand", raised=True)
            early = await sophie.patch("/api/supervision/spy/999", json={"mode": "barge"})
            assert early.status_code == 404
            started = await sophie.post("/api/supervision/spy", json={"call_id": CALL})
            assert started.status_code == 201, started.text
            assert started.json()["reason"] == "coaching"  # the default purpose
            session = started.json()["id"]
            lowered, _ = await next_push(alice_ws, "hand")  # her own tab hears it too
            assert lowered["raised"] is False
            ended, seen = await next_push(sophie_ws, "spy_session", id=session, state="ended")
            assert ended["end_reason"] == "call_ended"
            assert "spy_session" in seen  # starting, then live, before ended
        rows = await room.audit.entries(action=SPY_ENDED)
        assert [(r.actor, r.reason) for r in rows] == [("sophie", "call_ended")]
        assert room.coaching.hands() == []


async def test_a_phone_that_never_answers_ends_the_session(tmp_path: Path) -> None:
    script = spy_script(lambda item: item.t <= 14.0)  # connected; no spy leg recorded
    # Asterisk's answer to an Originate whose phone did not answer (OriginateResponse
    # Failure, Reason 0), as recorded for another phone.
    failure = recorded_reply("originate-click-to-dial", "c2d-0002")

    def no_answer(_session: Session, action: Any) -> bytes | None:
        return failure if action.name == "originate" else None

    async with coaching_room(tmp_path, script, [no_answer]) as room:
        await room.cti.next(CallAnswered, call_id=CALL)
        async with (
            room.signed_in("sophie") as sophie,
            room.socket("sophie", "role:supervisor") as sophie_ws,
        ):
            started = await sophie.post("/api/supervision/spy", json={"call_id": CALL})
            assert started.status_code == 201, started.text
            session = started.json()["id"]
            ended, _ = await next_push(sophie_ws, "spy_session", id=session, state="ended")
            assert ended["end_reason"] == "no_answer"
            assert (await sophie.get("/api/supervision/spy")).json() == []
            again = await sophie.post("/api/supervision/spy", json={"call_id": CALL})
            assert again.status_code == 201  # the ended session no longer blocks her
        assert len(room.peer.sent("Originate")) == 2
        ends = await room.audit.entries(action=SPY_ENDED)
        assert ends and {row.reason for row in ends} == {"no_answer"}


async def test_spying_needs_a_phone_and_a_connected_call(tmp_path: Path) -> None:
    script = spy_script(lambda item: item.t <= 14.0)  # connected; no spy leg recorded
    async with coaching_room(tmp_path, script) as room:
        await room.cti.next(CallAnswered, call_id=CALL)
        async with room.signed_in("nora") as nora:  # an admin, with no phone
            no_phone = await nora.post("/api/supervision/spy", json={"call_id": CALL})
            assert no_phone.status_code == 409 and code(no_phone) == "no_phone"
        async with room.signed_in("sophie") as sophie:
            unknown = await sophie.post("/api/supervision/spy", json={"call_id": "1795370193.9"})
            assert unknown.status_code == 404 and code(unknown) == "call_not_found"
        assert room.peer.sent("Originate") == []
        assert await room.audit.entries(action=CALL_SPIED) == []  # refused: nothing to trace
        assert await room.coaching.store.spy_sessions() == []


# --- the CTI alone ----------------------------------------------------------------------------


def test_chanspy_becomes_spy_started_and_stopped_with_the_call_ids() -> None:
    state = CtiState()
    events = [e for at, h in recorded("supervisor-spy") for e in state.apply(h, at)]
    spies = [e for e in events if isinstance(e, SpyStarted | SpyStopped)]
    assert [(type(e).__name__, e.spy_channel, round(e.at - T0, 1)) for e in spies] == [
        ("SpyStarted", "PJSIP/sup1-00000000", 15.0),
        ("SpyStopped", "PJSIP/sup1-00000000", 18.1),
        ("SpyStarted", "PJSIP/sup1-00000001", 19.3),
        ("SpyStopped", "PJSIP/sup1-00000001", 22.3),
        ("SpyStarted", "PJSIP/sup1-00000002", 23.5),
        ("SpyStopped", "PJSIP/sup1-00000002", 26.5),
    ]
    for event in spies:
        assert (event.call_id, event.linked_id, event.case_id) == (
            CALL,
            "1795370193.0",
            "case-1001",
        )
        assert (event.spied_channel, event.spied_uniqueid) == (AGENT_LEG, "1795370205.2")
        assert event.agent is not None and event.agent.id == "agent1"
        assert from_json(to_json(event)) == event  # the Redis bus round trip
    assert spies[0].spy_uniqueid == "1795370208.4"
    assert state.spies == {}


def test_a_spyer_hanging_up_without_chanspystop_still_stops() -> None:
    state = CtiState()
    events = [
        e
        for at, h in recorded("supervisor-spy")
        if h["Event"] != "ChanSpyStop"
        for e in state.apply(h, at)
    ]
    stops = [e for e in events if isinstance(e, SpyStopped)]
    assert [(e.spy_channel, e.call_id) for e in stops] == [
        ("PJSIP/sup1-00000000", CALL),
        ("PJSIP/sup1-00000001", CALL),
        ("PJSIP/sup1-00000002", CALL),
    ]
