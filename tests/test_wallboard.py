"""The wallboard's figures from Asterisk's recorded event streams.

Pure part: the recordings go through `CtiState` into `WallboardModel`, and every figure is
checked against what the recording says (HoldTime, TalkTime, who answered). Socket part: a
whole Guichet over a replayed call pushes the rows to a supervisor's websocket while the
call moves (ringing, then on call, then answered counted), and the API is for supervisors.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from ami_peer import AmiPeer, Script, recording
from console_fixtures import FAST_HASHER, PASSWORDS, create_people, guichet_settings, serve_app
from test_cti_state import T0, recorded

from cti.events import Event
from cti.state import CtiState
from cti.wallboard import WallboardModel, split_queue
from guichet.runtime import Guichet

DEADLINE = 15.0
DAY = date(2026, 11, 22)


def fold(model: WallboardModel, state: CtiState, scenario: str) -> list[Event]:
    events: list[Event] = []
    for at, headers in recorded(scenario):
        for event in state.apply(headers, at):
            events.append(event)
            model.apply(event)
    return events


def test_answered_abandoned_and_no_answer_give_the_recorded_figures() -> None:
    model, state = WallboardModel(day=DAY), CtiState()
    fold(model, state, "inbound-answered")  # NL: answered after 2 s, talk 3 s (Agent One)
    fold(model, state, "inbound-abandoned")  # FR: hung up after 8 s of ringing
    fold(model, state, "ring-no-answer")  # FR: Agent One rings out, Agent Two after 19 s

    nl = model.row("queue", "population-nl")
    assert nl is not None
    assert (nl["offered"], nl["answered"], nl["abandoned"], nl["answered_in_sl"]) == (1, 1, 0, 1)
    assert (nl["asa"], nl["aht"], nl["service_level"], nl["abandon_rate"]) == (2.0, 3.0, 1.0, 0.0)
    assert (nl["service"], nl["lang"], nl["waiting"]) == ("population", "nl", 0)

    fr = model.row("queue", "population-fr")
    assert fr is not None
    assert (fr["offered"], fr["answered"], fr["abandoned"]) == (2, 1, 1)
    assert fr["answered_in_sl"] == 1  # 19 s <= 20 s
    assert (fr["service_level"], fr["abandon_rate"], fr["asa"], fr["aht"]) == (0.5, 0.5, 19.0, 3.0)

    one, two = model.row("agent", "agent1"), model.row("agent", "agent2")
    assert one is not None and two is not None
    assert (one["handled"], one["aht"], one["name"]) == (1, 3.0, "Agent One")
    assert (two["handled"], two["aht"]) == (1, 3.0)


def test_a_stricter_threshold_moves_the_19_second_answer_out_of_the_service_level() -> None:
    model, state = WallboardModel(day=DAY, threshold=15.0), CtiState()
    fold(model, state, "ring-no-answer")
    fr = model.row("queue", "population-fr")
    assert fr is not None and (fr["answered_in_sl"], fr["service_level"]) == (0, 0.0)


def test_agent_rows_are_live_during_the_call_not_after_it() -> None:
    model, state = WallboardModel(day=DAY), CtiState()
    seen: list[tuple[str, str | None, float | None]] = []
    for at, headers in recorded("inbound-answered"):
        for event in state.apply(headers, at):
            for kind, key in model.apply(event):
                row = model.row(kind, key)
                if kind == "agent" and key == "agent1" and row is not None:
                    seen.append((row["state"], row["caller"], row["since"]))
    states = [s for s, _, _ in seen]
    assert states.index("ringing") < states.index("on_call")
    on_call = next(item for item in seen if item[0] == "on_call")
    assert on_call[1] == "0470123456"  # the citizen, from QueueCallerJoin's CallerIDNum
    assert on_call[2] is not None and round(on_call[2] - T0, 1) == 13.9  # AgentConnect
    queue_waiting = []
    model2, state2 = WallboardModel(day=DAY), CtiState()
    for at, headers in recorded("inbound-answered"):
        for event in state2.apply(headers, at):
            for kind, key in model2.apply(event):
                row = model2.row(kind, key)
                if kind == "queue" and row is not None:
                    queue_waiting.append(row["waiting"])
    assert 1 in queue_waiting and queue_waiting[-1] == 0


def test_a_pause_shows_its_reason_and_since_when() -> None:
    model, state = WallboardModel(day=DAY), CtiState()
    paused: list[dict[str, Any]] = []
    for at, headers in recorded("agent-pause"):
        for event in state.apply(headers, at):
            for kind, key in model.apply(event):
                row = model.row(kind, key)
                if kind == "agent" and key == "agent2" and row and row["state"] == "paused":
                    paused.append(row)
    assert paused and paused[0]["pause_reason"] == "lunch"
    assert round(paused[0]["since"] - T0, 1) == 14.4
    final = model.row("agent", "agent2")
    assert final is not None and final["state"] == "ready" and final["pause_reason"] is None
    assert final["queues"] == ["population-fr", "population-nl"]  # from the member events
    assert final["penalties"] == {"population-fr": 0, "population-nl": 0}


def test_a_new_day_starts_the_counters_again_but_keeps_live_states() -> None:
    model, state = WallboardModel(day=DAY), CtiState()
    fold(model, state, "inbound-answered")
    model.sample(T0 + 60)
    assert model.roll(date(2026, 11, 23)) and not model.roll(date(2026, 11, 23))
    nl = model.row("queue", "population-nl")
    assert nl is not None and (nl["offered"], nl["answered"], nl["service_level"]) == (0, 0, None)
    one = model.row("agent", "agent1")
    assert one is not None and one["handled"] == 0 and one["state"] == "ready"
    assert model.series == []


def test_an_answer_replayed_after_a_reconnect_counts_once() -> None:
    model, state = WallboardModel(day=DAY), CtiState()
    events = fold(model, state, "inbound-answered")
    answered = [e for e in events if type(e).__name__ == "CallAnswered"]
    model.apply(answered[0])  # a second delivery of the same answer
    nl = model.row("queue", "population-nl")
    assert nl is not None and nl["answered"] == 1


def test_queue_names_split_into_service_and_language() -> None:
    assert split_queue("population-nl") == ("population", "nl")
    assert split_queue("civil-status-fr") == ("civil-status", "fr")
    assert split_queue("experts") == ("experts", None)
    assert split_queue("taxes-xx") == ("taxes-xx", None)


# --- over real sockets ---------------------------------------------------------------------


async def _token(base_url: str, username: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/auth/token", json={"username": username, "password": PASSWORDS[username]}
        )
        response.raise_for_status()
        return str(response.json()["token"])


async def _until(ws: Any, test: Any) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
        if test(message):
            return dict(message)


@pytest.fixture
async def peer() -> Any:
    ami = AmiPeer([Script.load(recording("inbound-answered"))], settle=3)
    ami.gate = asyncio.Event()
    await ami.start()
    try:
        yield ami
    finally:
        await ami.close()


async def test_a_supervisor_sees_the_call_move_on_the_wallboard(
    tmp_path: Path, peer: AmiPeer
) -> None:
    settings = guichet_settings(tmp_path, peer.port)
    guichet = Guichet(settings)
    await guichet.start()
    try:
        guichet.users.hasher = FAST_HASHER
        await create_people(guichet.users)
        await guichet.wallboard.refresh()  # learn the console users behind the agents
        async with serve_app(guichet.app) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                agent = {"Authorization": f"Bearer {await _token(base_url, 'alice')}"}
                assert (await http.get("/api/wallboard", headers=agent)).status_code == 403
                assert (await http.get("/supervisor", headers=agent)).status_code == 403
            ws_url = base_url.replace("http://", "ws://") + "/ws"
            token = await _token(base_url, "sophie")
            async with websockets.connect(f"{ws_url}?token={token}") as ws:
                hello = {"type": "hello", "last_seq": None, "topics": {"role:supervisor": None}}
                await ws.send(json.dumps(hello))
                await _until(ws, lambda m: m["type"] == "ready")
                assert guichet.ami is not None
                await asyncio.wait_for(guichet.ami.wait_ready(), DEADLINE)
                assert peer.gate is not None
                peer.gate.set()

                def agent1(state: str) -> Any:
                    return lambda m: (
                        m["type"] == "wallboard.agent"
                        and m["data"]["agent"] == "agent1"
                        and m["data"]["state"] == state
                    )

                ringing = await _until(ws, agent1("ringing"))
                assert ringing["stream"] == "role:supervisor"
                assert ringing["data"]["display_name"] == "Alice Dupont"
                on_call = await _until(ws, agent1("on_call"))
                assert on_call["data"]["caller"] == "0470123456"
                queue = await _until(
                    ws,
                    lambda m: m["type"] == "wallboard.queue" and m["data"]["answered"] == 1,
                )
                assert queue["data"]["queue"] == "population-nl"
                assert queue["data"]["service_level"] == 1.0
                done = await _until(
                    ws, lambda m: m["type"] == "wallboard.queue" and m["data"]["aht"] == 3.0
                )
                assert done["data"]["asa"] == 2.0

            async with httpx.AsyncClient(base_url=base_url) as http:
                sup = {"Authorization": f"Bearer {token}"}
                snapshot = (await http.get("/api/wallboard", headers=sup)).json()
                queues = {q["queue"]: q for q in snapshot["queues"]}
                assert queues["population-nl"]["answered"] == 1
                assert "agent1" in {a["agent"] for a in snapshot["agents"]}
                assert snapshot["waiting_calls"] == []
                page = await http.get("/supervisor", headers={**sup, "Accept": "text/html"})
                assert page.status_code == 200 and 'data-ws-topics="role:supervisor"' in page.text
    finally:
        await guichet.stop()

    # A restart keeps the day: the stored queue calls seed the figures and the charts.
    again = Guichet(settings.model_copy(update={"ami_host": None}))
    await again.start()
    try:
        snapshot = again.wallboard.snapshot()
        queues = {q["queue"]: q for q in snapshot["queues"]}
        nl = queues["population-nl"]
        assert (nl["answered"], nl["asa"], nl["aht"], nl["service_level"]) == (1, 2.0, 3.0, 1.0)
        agents = {a["agent"]: a for a in snapshot["agents"]}
        assert (agents["agent1"]["handled"], agents["agent1"]["aht"]) == (1, 3.0)
        assert snapshot["series"], "the charts start at once"
    finally:
        await again.stop()


def test_an_end_delivered_twice_counts_once() -> None:
    model, state = WallboardModel(day=DAY), CtiState()
    events = fold(model, state, "inbound-abandoned")
    ended = [e for e in events if type(e).__name__ == "CallEnded"]
    model.apply(ended[0])
    fr = model.row("queue", "population-fr")
    assert fr is not None and fr["abandoned"] == 1
