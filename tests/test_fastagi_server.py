"""The FastAGI server end to end: real sockets, the real engine and flows, journeys in SQLite.

Peers stand in for Asterisk (tests/agi_peer.py); recordings come from Asterisk 22.10.
No timing is asserted: "promptly" means "before a generous deadline".
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import pytest
from agi_fixtures import HOST, open_clock, transcript
from agi_peer import (
    DEAD_CHANNEL_ANSWER,
    MEDIA,
    AsteriskPeer,
    HangUp,
    Press,
    ScriptedPeer,
    TranscriptPeer,
    verb_of,
)

from crm_bridge.ports import CallbackRequest, CallJourney, CitizenSummary
from crm_bridge.store import SqlCrm
from ivr.fastagi import FastAgiServer
from ivr.flow_model import MenuNode
from ivr.registry import FlowRegistry

NRN = "85073003328"
HAPPY = [Press("2"), Press("1"), Press("1"), Press(NRN + "#")]
DEADLINE = 10.0  # seconds: "promptly", generously


async def call(server: FastAgiServer, peer: AsteriskPeer, *, settle: bool = True) -> AsteriskPeer:
    """Run one session; with `settle`, also wait until the server has stored its journey
    (a queued call is released to the dialplan before its journey is written)."""
    await peer.run(HOST, server.port, deadline=DEADLINE)
    assert peer.closed_by_server, "the server must close the socket: Asterisk never does"
    assert peer.partial == b"" and peer.unanswered == []
    if settle:
        await asyncio.wait_for(server.wait_idle(), DEADLINE)
    return peer


def file_of(command: str) -> str:
    """`STREAM FILE guichet/nl/faq_options "..."` -> `faq_options` (also GET DATA)."""
    return command.split()[2].rsplit("/", 1)[-1]


# --- the sample flow ---------------------------------------------------------------------


async def test_sample_flow_end_to_end(
    agi_server: FastAgiServer, crm: SqlCrm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="guichet")
    peer = await call(agi_server, ScriptedPeer(HAPPY, uniqueid="1795370006.1"))
    commands = peer.commands
    assert "SET VARIABLE CHANNEL(language) nl" in commands
    assert "GET DATA guichet/nl/national_number_request 7000 12" in commands
    for expected in ('SET VARIABLE GUICHET_LANG "nl"',
                     'SET VARIABLE GUICHET_REQUEST_TYPE "population"',
                     'SET VARIABLE GUICHET_QUEUE "population-nl"',
                     'SET VARIABLE GUICHET_OUTCOME "queued"'):
        assert expected in commands
    assert peer.variables["GUICHET_CALL_ID"] == "1795370006.1"
    assert "HANGUP" not in commands  # queued: the dialplan goes on to Queue() once we close
    assert NRN not in " ".join(commands)  # the national number never goes back to Asterisk

    journey = await crm.get_journey("1795370006.1")
    assert journey is not None
    assert (journey.outcome, journey.lang, journey.request_type, journey.queue, journey.leg) == (
        "queued", "nl", "population", "population-nl", "agi",
    )
    assert journey.caller == "0470123456"
    assert [s.node for s in journey.steps][:5] == [
        "welcome", "opening_hours", "language", "request_type", "faq_population",
    ]
    assert NRN not in repr(journey)
    # Guichet's own logs never carry it (aiosqlite's DEBUG log of SQL parameters does:
    # that is for the handler-level NationalNumberFilter)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("guichet")]
    assert ours and not any(NRN in message for message in ours)


async def test_script_arguments_route_and_preset(agi_server: FastAgiServer, crm: SqlCrm) -> None:
    """`AGI(agi://host/commune?lang=fr)`: the flow is found and `lang` preset."""
    peer = await call(agi_server, ScriptedPeer(
        [Press("1"), Press("1"), Press("1"), Press("#")],
        script="commune?lang=fr", uniqueid="1795370029.1",
    ))
    assert peer.commands[0] == "SET VARIABLE CHANNEL(language) fr"
    assert peer.commands[1] == 'STREAM FILE guichet/fr/welcome "0123456789*#"'
    assert not any("guichet/nl/welcome" in c for c in peer.commands)  # French only
    journey = await crm.get_journey("1795370029.1")
    assert journey is not None and journey.lang == "fr"


async def test_unknown_flow_is_logged_and_closed(
    agi_server: FastAgiServer, caplog: pytest.LogCaptureFixture
) -> None:
    peer = await call(agi_server, ScriptedPeer(script="nowhere", uniqueid="1795370055.1"))
    assert peer.commands == []
    assert any(r.levelno == logging.ERROR and "1795370055.1" in r.getMessage()
               and "nowhere" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("sent", [b"", b"agi_network: yes\nagi_network_script: com",
                                  b"GET / HTTP/1.1\r\nHost: guichet\r\n\r\n"])
async def test_broken_clients_are_closed_and_serving_goes_on(
    agi_server: FastAgiServer, crm: SqlCrm, sent: bytes
) -> None:
    reader, writer = await asyncio.open_connection(HOST, agi_server.port)
    writer.write(sent)
    if not sent.startswith(b"GET"):
        writer.write_eof()  # EOF before or inside the environment
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), DEADLINE) == b""  # the server closed
    writer.close()
    await call(agi_server, ScriptedPeer(HAPPY, uniqueid="1795370095.1"))
    journey = await crm.get_journey("1795370095.1")
    assert journey is not None and journey.outcome == "queued"
    assert agi_server.active_calls == 0


async def test_silent_client_is_dropped_after_the_environment_timeout(
    flow_registry: FlowRegistry, crm: SqlCrm
) -> None:
    server = FastAgiServer(flow_registry, crm, host=HOST, port=0, sounds_prefix="guichet",
                           env_timeout=0.2)
    async with server:
        sock = socket.create_connection((HOST, server.port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(sock, 10), DEADLINE) == b""
        sock.close()


# --- recordings replayed -------------------------------------------------------------------


def media_files(commands: list[str]) -> list[str]:
    """(verb, file) of the commands that touch the channel, as in the recordings."""
    out = []
    for command in commands:
        verb = verb_of(command)
        if verb in MEDIA:
            out.append(f"{verb} {file_of(command)}")
        elif verb == "HANGUP":
            out.append(verb)
    return out


async def test_replay_hangup_midflow(agi_server: FastAgiServer, crm: SqlCrm) -> None:
    """`200 result=-1`, then `HANGUP` after our next command: no desync, prompt close."""
    recording = transcript("ivr-hangup-midflow")
    peer = await call(agi_server, TranscriptPeer(recording, script="replay"))
    hung_up = peer.commands.index("GET DATA guichet/en/vm-enter-num-to-call 5000 12")
    assert peer.answers[hung_up] == [b"200 result=-1\n"]
    # `result=-1` is also what a missing prompt file gives: one probe, refused as dead.
    assert peer.commands[hung_up + 1] == "WAIT FOR DIGIT 1"
    assert peer.wire[2 * hung_up + 2: 2 * hung_up + 5] == [
        ("<<", b"WAIT FOR DIGIT 1\n"), (">>", b"HANGUP\n"), (">>", DEAD_CHANNEL_ANSWER),
    ]
    after = peer.commands[hung_up + 2:]
    assert after and all(c.startswith("SET VARIABLE ") for c in after)  # nothing but variables
    assert len(peer.answers) == len(peer.commands)  # every command got its own answer
    assert 'SET VARIABLE GUICHET_OUTCOME "hangup"' in after
    # up to the hang-up, the same commands as the recorded server
    recorded = [e.command for e in recording.exchanges[: (recording.hangup_at or 0) + 1]]
    assert media_files(peer.commands[: hung_up + 1]) == media_files(recorded)
    journey = await crm.get_journey("1795370350.1")
    assert journey is not None and journey.outcome == "hangup"
    assert journey.steps[-1].node == "national_number"


async def test_replay_bad_input(agi_server: FastAgiServer, crm: SqlCrm) -> None:
    """10 digits, re-ask, silence, goodbye, our HANGUP: same commands as the recording."""
    recording = transcript("ivr-bad-input")
    peer = await call(agi_server, TranscriptPeer(recording, script="replay"))
    assert media_files(peer.commands) == media_files([e.command for e in recording.exchanges])
    assert peer.commands[-1] == "HANGUP"
    assert peer.answers[-1] == [b"200 result=1\n"]
    journey = await crm.get_journey("1795370369.1")
    assert journey is not None and journey.outcome == "hangup"
    nrn_step = next(s for s in journey.steps if s.node == "national_number")
    assert nrn_step.digits is not None and "8507300332" not in nrn_step.digits


async def test_replay_inbound_answered(agi_server: FastAgiServer, crm: SqlCrm) -> None:
    recording = transcript("inbound-answered")
    peer = await call(agi_server, TranscriptPeer(recording, script="replay", uniqueid="r.1"))
    assert media_files(peer.commands) == media_files([e.command for e in recording.exchanges])
    assert peer.variables["GUICHET_QUEUE"] == "population-nl"
    journey = await crm.get_journey("r.1")
    assert journey is not None and journey.outcome == "queued"


# --- hang-up at every step -----------------------------------------------------------------


def expected_outcome(happy: list[str], k: int, registry: FlowRegistry) -> str:
    """The outcome when the caller hangs up during happy-path command `k`.

    The engine learns of it at the first channel command from `k` on (the `-1`, or the 511
    after a `HANGUP` line); if none is left the call was already handed to the queue.
    That command belongs to the node playing its prompt; its `hangup_outcome` applies
    (`faq_options` is shared by both FAQ menus, which agree).
    """
    flow = registry.get("commune")
    assert flow is not None
    noticed = next((j for j in range(k, len(happy)) if verb_of(happy[j]) in MEDIA), None)
    if noticed is None:
        return "queued"
    key = next(file_of(happy[j]) for j in range(noticed, -1, -1)
               if verb_of(happy[j]) in {"STREAM FILE", "GET DATA"})
    outcomes = {node.hangup_outcome or "hangup" for node in flow.flow.nodes.values()
                if key in [ref.partition("@")[0] for ref in getattr(node, "prompt", [])]}
    assert len(outcomes) == 1, key
    return outcomes.pop()


async def test_hangup_at_every_step(
    agi_server: FastAgiServer, crm: SqlCrm, flow_registry: FlowRegistry
) -> None:
    happy = (await call(agi_server, ScriptedPeer(HAPPY, uniqueid="happy.0"))).commands
    peers = [ScriptedPeer([*HAPPY, HangUp(at_command=k)], uniqueid=f"hangup.{k}")
             for k in range(len(happy))]
    await asyncio.gather(*(call(agi_server, peer) for peer in peers))
    outcomes = set()
    for k, peer in enumerate(peers):
        assert peer.commands[: k + 1] == [
            c.replace("happy.0", f"hangup.{k}") for c in happy[: k + 1]
        ]
        after = peer.commands[k + 1:]
        if after[:1] == ["WAIT FOR DIGIT 1"]:  # the missing-file probe after `result=-1`
            after = after[1:]
        if peer.dead_since is not None and verb_of(peer.commands[k]) in MEDIA:
            assert all(verb_of(c) == "SET VARIABLE" for c in after), (k, after)
        assert len(peer.answers) == len(peer.commands)
        journey = await crm.get_journey(f"hangup.{k}")
        assert journey is not None, k
        expected = expected_outcome(happy, k, flow_registry)
        assert journey.outcome == expected, (k, happy[k])
        assert peer.variables.get("GUICHET_OUTCOME") == expected
        outcomes.add(expected)
    assert outcomes == {"hangup", "deflected", "queued"}
    faq = flow_registry.get("commune")
    assert faq is not None and isinstance(faq.node("faq_population"), MenuNode)


# --- load and lifecycle -------------------------------------------------------------------


async def test_many_concurrent_calls(agi_server: FastAgiServer, crm: SqlCrm) -> None:
    rng = random.Random(7)

    def jitter(index: int, verb: str) -> float:
        return rng.uniform(0, 0.003)

    peers = [ScriptedPeer(HAPPY, uniqueid=f"load.{n}", delay=jitter) for n in range(200)]
    await asyncio.gather(*(call(agi_server, peer) for peer in peers))
    reference = [c.replace("load.0", "{id}") for c in peers[0].commands]
    for n, peer in enumerate(peers):
        assert [c.replace(f"load.{n}", "{id}") for c in peer.commands] == reference
        assert peer.variables["GUICHET_CALL_ID"] == f"load.{n}"
        journey = await crm.get_journey(f"load.{n}")
        assert journey is not None and journey.outcome == "queued"
    assert agi_server.active_calls == 0


async def test_stop_cuts_running_calls_and_closes_their_sockets(
    flow_registry: FlowRegistry, crm: SqlCrm
) -> None:
    server = FastAgiServer(flow_registry, crm, host=HOST, port=0, sounds_prefix="guichet")
    await server.start()
    third_command = asyncio.Event()

    def delay(index: int, verb: str) -> float:
        if index < 2:
            return 0.0
        third_command.set()
        return 60.0  # a very long prompt

    slow = ScriptedPeer(HAPPY, uniqueid="slow.1", delay=delay)
    running = asyncio.create_task(slow.run(HOST, server.port, deadline=DEADLINE))
    await asyncio.wait_for(third_command.wait(), DEADLINE)
    await server.stop(grace=0.05)
    await running
    assert slow.closed_by_server
    assert server.active_calls == 0


class HeldSaves:
    """The real store behind the `CrmPort` protocol, with journey writes held by the test."""

    def __init__(self, crm: SqlCrm) -> None:
        self.crm = crm
        self.saving = asyncio.Event()
        self.release = asyncio.Event()

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None:
        return await self.crm.find_citizen_by_national_number(number)

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None:
        return await self.crm.find_citizen_by_phone(phone)

    async def record_callback(self, request: CallbackRequest) -> None:
        await self.crm.record_callback(request)

    async def save_journey(self, journey: CallJourney) -> None:
        self.saving.set()
        await self.release.wait()
        await self.crm.save_journey(journey)


async def test_queued_caller_does_not_wait_for_the_journey_write(
    flow_registry: FlowRegistry, crm: SqlCrm
) -> None:
    """The dialplan's Queue() runs once we close: that happens before the journey is stored."""
    held = HeldSaves(crm)
    server = FastAgiServer(flow_registry, held, host=HOST, port=0, clock=open_clock,
                           sounds_prefix="guichet")
    async with server:
        peer = await call(server, ScriptedPeer(HAPPY, uniqueid="held.1"), settle=False)
        assert held.saving.is_set()
        assert await crm.get_journey("held.1") is None  # closed while the write is held
        held.release.set()
        await asyncio.wait_for(server.wait_idle(), DEADLINE)
        journey = await crm.get_journey("held.1")
    assert journey is not None and journey.outcome == "queued"
    assert peer.variables["GUICHET_OUTCOME"] == "queued"
