"""`guichet demo`: the seed is idempotent and stores only hashes; the demo PBX, against a real
`Guichet` (FastAGI, AMI client, CTI bridge, console over real sockets), places scripted
citizen calls whose pops reach the logged-in demo agents with the right cases; it refuses to
run where a real Asterisk is configured."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from ami_peer import recording
from conftest import OPEN, SAMPLE_FLOW
from console_fixtures import FAST_HASHER, serve_app
from cti_harness import config_for
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from typer.testing import CliRunner

from crm_bridge.case_models import KnowledgeArticle, QueueRecord, User
from crm_bridge.db import init_db, make_engine, session_factory
from crm_bridge.models import Citizen
from crm_bridge.users import UserService
from cti.ami import AmiClient
from cti.bridge import CtiBridge
from cti.bus import LocalBus
from cti.events import SpyStarted, SpyStopped
from cti.pbx import Pbx
from guichet.asterisk_render import flow_queues, load_flows
from guichet.demo.cli import demo_app
from guichet.demo.pbx import (
    DEMO_BANNER,
    DemoPbx,
    DemoRefused,
    demo_ivr_time,
    refuse_real_asterisk,
    start_demo_pbx,
)
from guichet.demo.seed import DEMO_ARTICLES, DEMO_USERS, seed_demo
from guichet.replay.ami_server import Block, Script
from guichet.runtime import Guichet
from guichet.settings import Settings
from ivr.flow_model import HoursNode
from ivr.hours import open_state
from ivr.loader import load_flow

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
DEADLINE = 15.0  # seconds: "promptly", generously; never a timing assertion


async def _counts(engine: AsyncEngine) -> list[int]:
    counts = []
    async with session_factory(engine)() as session:
        for model in (User, Citizen, KnowledgeArticle, QueueRecord):
            counts.append(len((await session.exec(select(model))).all()))
    return counts


async def test_seed_twice_changes_nothing_and_keeps_only_hashes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/seed.db")
    try:
        await init_db(engine)
        users = UserService(engine, hasher=FAST_HASHER)
        first = await seed_demo(engine, flows_dir=FLOWS, users=users)
        assert set(first.passwords) == {u.username for u in DEMO_USERS}
        assert first.citizens.inserted == 5 and first.citizens.ok
        assert first.articles_written == [a.slug for a in DEMO_ARTICLES]
        assert first.queues_added == flow_queues(load_flows(FLOWS))
        after_first = await _counts(engine)

        async with session_factory(engine)() as session:
            stored = {u.username: u for u in (await session.exec(select(User))).all()}
        for username, password in first.passwords.items():
            assert stored[username].password_hash.startswith("$argon2")
            assert password not in stored[username].password_hash
            assert await users.authenticate(username, password) is not None
        agent1, agent2 = await users.get("agent1"), await users.get("agent2")
        assert agent1 is not None and (agent1.interface, agent1.ui_language) == (
            "PJSIP/agent1",
            "fr",
        )
        assert agent2 is not None and (agent2.interface, agent2.ui_language) == (
            "PJSIP/agent2",
            "nl",
        )

        second = await seed_demo(engine, flows_dir=FLOWS, users=users)
        assert second.passwords == {}  # shown once: nothing to show again
        assert sorted(second.users_kept) == sorted(first.passwords)
        assert (second.citizens.inserted, second.citizens.updated) == (0, 0)
        assert second.articles_written == [] and second.queues_added == []
        assert await _counts(engine) == after_first
        for username, password in first.passwords.items():  # the first passwords still work
            assert await users.authenticate(username, password) is not None

        reset = await seed_demo(engine, flows_dir=FLOWS, users=users, reset_passwords=True)
        assert set(reset.passwords) == set(first.passwords)
        assert await users.authenticate("agent1", first.passwords["agent1"]) is None
        assert await users.authenticate("agent1", reset.passwords["agent1"]) is not None
        assert await _counts(engine) == after_first
    finally:
        await engine.dispose()


def test_seed_command_prints_new_passwords_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    first = CliRunner().invoke(demo_app, ["seed", "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "shown ONCE" in first.output and "agent1" in first.output
    second = CliRunner().invoke(demo_app, ["seed", "--database-url", url])
    assert second.exit_code == 0, second.output
    assert "shown ONCE" not in second.output and "passwords unchanged" in second.output


async def test_demo_refuses_a_configured_asterisk() -> None:
    with pytest.raises(DemoRefused):
        await start_demo_pbx(Settings(ami_host="pbx.commune.example", ami_port=5038))
    with pytest.raises(DemoRefused):  # a real Asterisk on this machine
        await start_demo_pbx(Settings(ami_host="127.0.0.1", ami_port=5038))
    with pytest.raises(DemoRefused):  # `guichet demo pbx` beside it, on another port
        refuse_real_asterisk(Settings(ami_host="127.0.0.1", ami_port=5038), demo_port=5039)
    # Guichet pointed at the standalone demo PBX itself is what `guichet demo pbx` is for
    refuse_real_asterisk(Settings(ami_host="127.0.0.1", ami_port=5039), demo_port=5039)


async def test_the_demo_pbx_says_it_is_one() -> None:
    pbx = await start_demo_pbx(Settings(ami_host=None, ami_secret="s3cret-demo"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", pbx.port)
        assert await asyncio.wait_for(reader.readline(), DEADLINE) == DEMO_BANNER
        writer.write(b"Action: Login\r\nActionID: 1\r\nUsername: guichet\r\nSecret: no\r\n\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert b"Response: Error" in answer and b"Authentication failed" in answer
        writer.close()
    finally:
        await pbx.stop()


@pytest.mark.parametrize(
    "moment",
    [
        "2026-11-22T19:16:00+01:00",  # a Sunday evening
        "2026-11-23T07:00:00+01:00",  # Monday before the desks open
        "2026-11-23T12:45:00+01:00",  # Monday lunch break
        "2026-11-12T07:30:00+01:00",  # the day after Armistice Day (a public holiday)
        "2027-01-01T15:00:00+01:00",  # New Year's Day
    ],
)
def test_demo_calls_find_the_sample_flows_desks_open(moment: str) -> None:
    hours = load_flow(SAMPLE_FLOW).flow.nodes["opening_hours"]
    assert isinstance(hours, HoursNode)
    at = datetime.fromisoformat(moment)
    assert not open_state(hours, at).open
    assert open_state(hours, demo_ivr_time(at)).open
    assert demo_ivr_time(OPEN) == OPEN  # a working morning stays as it is


# --- the demo PBX against a real Guichet ----------------------------------------------------


async def token(base_url: str, username: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/auth/token", json={"username": username, "password": password}
        )
        response.raise_for_status()
        return str(response.json()["token"])


async def pops_until(ws: Any, references: set[str]) -> dict[str, dict[str, Any]]:
    """`screen_pop` data by case reference, until every one of `references` has come."""
    pops: dict[str, dict[str, Any]] = {}
    while not references <= set(pops):
        message = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
        if message.get("type") == "screen_pop":
            pops[message["data"]["case"]["reference"]] = message["data"]
    return pops


@pytest.fixture
async def demo_pbx() -> AsyncIterator[DemoPbx]:
    # As `guichet serve` wires it: no GUICHET_AMI_HOST, so the demo PBX starts on its own port.
    pbx = await start_demo_pbx(
        Settings(ami_host=None, ami_secret="demo-secret"), interval=0, pace=0
    )
    try:
        yield pbx
    finally:
        await pbx.stop()


async def test_demo_calls_pop_on_the_logged_in_demo_agents(
    tmp_path: Path, demo_pbx: DemoPbx
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/g.db",
        case_spool=tmp_path / "cases.spool",
        agi_port=0,
        ami_host="127.0.0.1",  # what the runtime does with the demo PBX it started
        ami_port=demo_pbx.port,
        ami_secret="demo-secret",
        secret_key="demo-secret-key-0123456789abcdef0123456789",
        reload_interval=0,
    )
    guichet = Guichet(settings, clock=lambda: OPEN)
    await guichet.start()
    try:
        guichet.users.hasher = FAST_HASHER
        seeded = await seed_demo(guichet.store.engine, flows_dir=FLOWS, users=guichet.users)
        async with serve_app(guichet.app) as base_url:
            ws_url = base_url.replace("http://", "ws://") + "/ws"
            one_token = await token(base_url, "agent1", seeded.passwords["agent1"])
            two_token = await token(base_url, "agent2", seeded.passwords["agent2"])
            async with (
                websockets.connect(f"{ws_url}?token={one_token}") as one,
                websockets.connect(f"{ws_url}?token={two_token}") as two,
            ):
                for ws in (one, two):
                    await ws.send(json.dumps({"type": "hello", "last_seq": None}))
                    while json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["type"] != (
                        "ready"
                    ):
                        pass
                assert guichet.ami is not None
                await asyncio.wait_for(guichet.ami.wait_ready(), DEADLINE)

                demo_pbx.start_calls("127.0.0.1", guichet.agi.port, calls=2)
                await asyncio.wait_for(demo_pbx.finished.wait(), DEADLINE)
                first, second = demo_pbx.calls
                # call 0: Sofie, in Dutch, population, answered: Agent Two (Dutch console)
                # rings; call 1: Jean, in French, civil status, ring-no-answer: Agent One
                # rings unanswered, then Agent Two
                assert (first.citizen, first.scenario, first.first_agent) == (
                    "Sofie",
                    "inbound-answered",
                    "agent2",
                )
                assert (second.citizen, second.scenario, second.first_agent) == (
                    "Jean",
                    "ring-no-answer",
                    "agent1",
                )
                assert first.reference and second.reference
                assert first.reference != second.reference
                assert first.call_id != second.call_id

                to_two = await pops_until(two, {first.reference, second.reference})
                to_one = await pops_until(one, {second.reference})
        pop = to_two[first.reference]
        assert pop["call_id"] == first.call_id
        assert (pop["case"]["language"], pop["case"]["category"]) == ("nl", "population")
        assert pop["citizen"]["last_name"] == "Peeters"
        assert pop["ivr_path"][:3] == ["welcome", "opening_hours", "language"]
        assert "household-composition" in [a["slug"] for a in pop["articles"]]
        for pop in (to_one[second.reference], to_two[second.reference]):
            assert pop["call_id"] == second.call_id
            assert (pop["case"]["language"], pop["case"]["category"]) == ("fr", "civil-status")
            assert pop["citizen"]["last_name"] == "Dupont"
            assert pop["case"]["queue"] == second.queue == "civil-status-fr"
        assert first.reference not in to_one  # agent1 never rang for the Dutch call
    finally:
        await guichet.stop()


async def test_the_demo_pbx_lets_a_supervisor_listen_in(demo_pbx: DemoPbx) -> None:
    """The demo answers live coaching as Asterisk did in the supervisor-spy recording: a
    spy on Agent One's live call starts (ChanSpyStart on the member leg), switches mode and
    stops — through Guichet's real AMI client and CTI state."""
    client = AmiClient(config_for(demo_pbx.port, secret="demo-secret"))
    bus = LocalBus()
    events = bus.subscribe()
    bridge = CtiBridge(client, bus)
    await bridge.start()
    try:
        await asyncio.wait_for(client.connect(), DEADLINE)
        await asyncio.wait_for(bridge.resynced.wait(), DEADLINE)
        # the recorded call, up to Agent One talking to the citizen
        for item in Script.load(recording("inbound-answered")).until(14.0).items:
            if isinstance(item, Block) and item.raw.startswith(b"Event: "):
                await demo_pbx._emit(item.raw)
        pbx = Pbx(client)
        result = await pbx.spy("PJSIP/sup1", "Local/agent1@agents", "listen", switchable=True)
        assert result.channel.startswith("PJSIP/sup1-")
        started = await asyncio.wait_for(_next(events, SpyStarted), DEADLINE)
        assert started.call_id == "1795370006.1" and started.spied_channel.startswith(
            "Local/agent1@agents-"
        )
        await pbx.spy_mode(result.channel, "whisper")  # acknowledged like Asterisk
        await pbx.hangup(result.channel)
        stopped = await asyncio.wait_for(_next(events, SpyStopped), DEADLINE)
        assert stopped.spy_channel == result.channel
    finally:
        await client.close()
        await bridge.stop()


async def _next(sub: Any, kind: type[Any]) -> Any:
    while True:
        event = await sub.get()
        if isinstance(event, kind):
            return event
