"""The AMI client on the wire: what panoramisk gets wrong (see cti/ami.py) and how we behave
instead, against AmiPeer playing Asterisk 22's recorded bytes over real TCP.

No timing is asserted; short intervals only make the tests quick.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from ami_peer import Action as PeerAction
from ami_peer import AmiPeer, Drop, Script, Session, recording
from cti_harness import DEADLINE, config_for, running
from panoramisk.message import Message

from cti.ami import (
    ActionNotConfirmed,
    AmiClient,
    AmiLoginError,
    AmiMessage,
    AmiNotConnected,
    ConnectionState,
    DuplicateAction,
)
from cti.events import CallAnswered
from cti.pbx import ActionFailed, Pbx

FAMILIES = {
    "AgentCalled": ["ChanVariable", "DestChanVariable"],
    "BlindTransfer": ["TransfererChanVariable", "TransfereeChanVariable"],
    "AttendedTransfer": [
        "OrigTransfererChanVariable",
        "SecondTransfererChanVariable",
        "TransfereeChanVariable",
        "TransferTargetChanVariable",
    ],
    "ChanSpyStart": ["SpyerChanVariable", "SpyeeChanVariable"],
    "LocalBridge": ["LocalOneChanVariable", "LocalTwoChanVariable"],
    "OriginateResponse": ["ChanVariable"],  # sent as `ChanVariable(<channel>): ...`
}


@asynccontextmanager
async def client_for(peer: AmiPeer, **overrides: Any) -> AsyncIterator[AmiClient]:
    client = AmiClient(config_for(peer.port, **overrides))
    try:
        yield client
    finally:
        await client.close()


async def until(predicate: Any, timeout: float = DEADLINE) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110  (any condition, no event to wait on)
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


# --- parsing --------------------------------------------------------------------------------


async def test_every_chanvariable_family_is_a_dict() -> None:
    seen: dict[str, AmiMessage] = {}

    def keep(message: AmiMessage) -> None:
        seen.setdefault(message.name, message)

    for scenario in ("blind-transfer", "attended-transfer", "supervisor-spy"):
        peer = AmiPeer([Script.load(recording(scenario))])
        async with peer, running(peer, connect=False) as cti:
            cti.client.subscribe(keep, FAMILIES)
            await cti.client.connect()
            answered = await cti.next(CallAnswered)
            if scenario == "blind-transfer":
                await cti.pbx.blind_transfer(
                    answered.agent_channel, "population-fr", "transfer-targets"
                )
            elif scenario == "attended-transfer":
                await cti.pbx.attended_transfer(answered.agent_channel, "2000", "transfer-targets")
            else:
                await cti.pbx.spy(
                    "PJSIP/sup1", "Local/agent1@agents", caller_id='"Supervisor" <sup1>'
                )
                await until(lambda: "ChanSpyStart" in seen)
            await cti.close()
    assert set(seen) == set(FAMILIES)
    for name, families in FAMILIES.items():
        for family in families:
            value = seen[name].headers[family]
            assert isinstance(value, dict), (name, family, value)
            assert list(value)[:2] == ["GUICHET_CALL_ID", "GUICHET_CASE_ID"], (name, family)
    assert seen["AttendedTransfer"].chanvars("TransfereeChanVariable")["GUICHET_LANG"] == "nl"
    # panoramisk's Message API still works on our messages
    assert seen["AgentCalled"]["membername"] == "Agent One" and seen["AgentCalled"].success


async def test_a_single_chanvariable_is_a_dict_too() -> None:
    raw = (
        b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/agent1-00000007\r\n"
        b"Uniqueid: 1795370300.7\r\nLinkedid: 1795370300.7\r\n"
        b"ChanVariable: GUICHET_CALL_ID=1795370300.7\r\n\r\n"
    )
    # what panoramisk makes of it: a str, which its own getdict() refuses
    theirs = Message.from_line(raw.decode().strip())
    assert theirs["ChanVariable"] == "GUICHET_CALL_ID=1795370300.7"
    with pytest.raises(TypeError):
        theirs.getdict("chanvariable")
    got: list[AmiMessage] = []
    async with AmiPeer([Script.login_only()]) as peer, client_for(peer) as client:
        client.subscribe(got.append, ["Newchannel"])
        await client.connect()
        peer.current.write(raw)
        await until(lambda: got)
    assert got[0].headers["ChanVariable"] == {"GUICHET_CALL_ID": "1795370300.7"}


async def test_utf8_split_across_tcp_segments_survives() -> None:
    event = "Event: NewCallerid\r\nChannel: PJSIP/trunk-00000001\r\nCallerIDName: Françoise Dubois\r\n\r\n".encode()
    cut = event.index("ç".encode()) + 1  # in the middle of the two bytes of ç
    got: list[AmiMessage] = []
    async with AmiPeer([Script.login_only()]) as peer, client_for(peer) as client:
        client.subscribe(got.append, ["NewCallerid"])
        await client.connect()
        session = peer.current
        session.write(event[:cut])
        await session.writer.drain()
        await asyncio.sleep(0.05)  # a separate segment
        session.write(event[cut:])
        await until(lambda: got)
    assert got[0].headers["CallerIDName"] == "Françoise Dubois"


# --- login ----------------------------------------------------------------------------------


async def test_refused_login_is_a_clear_error_not_a_reconnect_storm() -> None:
    # c2 of ami-login-failure: Login, `Authentication failed` 1 s later (here 1/20), closed
    script = Script.load(recording("ami-login-failure"), "c2")
    async with (
        AmiPeer([script], speed=20) as peer,
        client_for(peer, secret="wrong-secret") as client,
    ):
        with pytest.raises(AmiLoginError, match="Authentication failed") as refused:
            await asyncio.wait_for(client.connect(), DEADLINE)
        assert client.state is ConnectionState.FAILED
        await asyncio.sleep(0.3)  # ten times the first backoff: no new connection
        assert len(peer.sessions) == 1
        assert [a.name for a in peer.actions] == ["login"]
        with pytest.raises(AmiLoginError):  # later waiters hear it too
            await client.wait_ready()
    assert "manager.conf" in str(refused.value)


async def test_wrong_secret_against_the_live_script() -> None:
    async with AmiPeer([Script.login_only()]) as peer, client_for(peer, secret="nope") as client:
        with pytest.raises(AmiLoginError):
            await asyncio.wait_for(client.connect(), DEADLINE)
        assert len(peer.sessions) == 1


async def test_not_an_ami_server_is_retried_with_a_reason() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    states: list[str] = []
    client = AmiClient(config_for(port))
    client.on_state(lambda s, d: states.append(d))
    client.start()
    try:
        await until(lambda: any("not an AMI server" in d for d in states))
        assert client.state is not ConnectionState.FAILED  # a wrong port may be fixed
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


# --- restart, half-open sockets -------------------------------------------------------------


async def test_asterisk_restart_reconnect_and_rebuild() -> None:
    path = recording("ami-reconnect")
    scripts = [Script.load(path, c) for c in ("c1", "c2", "c3")]  # Shutdown; reset; back up
    async with AmiPeer(scripts) as peer, running(peer, connect=False) as cti:
        cti.client.start()
        await peer.wait_sessions(3)
        await asyncio.wait_for(cti.client.wait_ready(), DEADLINE)
        await until(lambda: cti.bridge.resyncs == 2)
    details = [d for s, d in cti.states if s is ConnectionState.DISCONNECTED]
    assert "Asterisk shut down to restart" in details[0]
    assert any("reset" in d.lower() or "closed" in d.lower() for d in details[1:])
    ready = [s for s, _ in cti.states if s is ConnectionState.READY]
    assert len(ready) == 2
    logins = [s for s in peer.sessions if any(a.name == "login" for a in s.actions)]
    assert len(logins) == 2  # the reset connection never got a banner, so no Login
    for session in logins:  # state queried again after each login
        names = [a.name for a in session.actions]
        assert {"coreshowchannels", "queuestatus", "queuesummary"} <= set(names)


async def test_half_open_connection_is_detected_and_replaced() -> None:
    states: list[tuple[ConnectionState, str]] = []
    async with (
        AmiPeer([Script.login_only()]) as peer,
        client_for(peer, ping_interval=0.05, ping_timeout=0.2) as client,
    ):
        client.on_state(lambda s, d: states.append((s, d)))
        await client.connect()
        await until(lambda: any(a.name == "ping" for a in peer.actions))  # Pongs come back
        assert client.ready
        peer.mute()  # the host freezes: no FIN, no RST, no Pong
        await peer.wait_sessions(2)
        await asyncio.wait_for(client.wait_ready(), DEADLINE)
        first = peer.sessions[0]
        assert sum(a.name == "ping" for a in first.actions) >= 2
    lost = [d for s, d in states if s is ConnectionState.DISCONNECTED]
    assert lost and "no Pong" in lost[0] and "half-open" in lost[0]


# --- actions --------------------------------------------------------------------------------


def swallow(name: str, session_index: int, peer: AmiPeer) -> Any:
    """A hook that leaves `name` unanswered on one session."""

    def hook(session: Session, action: PeerAction) -> bytes | None:
        if action.name == name and peer.sessions.index(session) == session_index:
            return b""
        return None

    return hook


async def test_originate_is_never_sent_twice_across_a_reconnect() -> None:
    async with AmiPeer([Script.login_only()]) as peer, client_for(peer) as client:
        pbx = Pbx(client)

        def drop_on_originate(session: Session, action: PeerAction) -> Drop | None:
            return Drop() if action.name == "originate" and len(peer.sessions) == 1 else None

        peer.hooks += [swallow("queuestatus", 0, peer), drop_on_originate]
        await client.connect()
        status = asyncio.create_task(client.send_action({"Action": "QueueStatus"}))
        await until(lambda: peer.sent("QueueStatus"))
        with pytest.raises(ActionNotConfirmed, match="not re-sent") as lost:
            await pbx.originate(
                "PJSIP/agent1", exten="0470123456", context="click-to-dial", key="click-42"
            )
        assert not lost.value.queued
        # the read-only QueueStatus that was in flight is asked again on the new connection
        answer = await asyncio.wait_for(status, DEADLINE)
        assert isinstance(answer, list) and answer[-1].name == "QueueStatusComplete"
        await asyncio.wait_for(client.wait_ready(), DEADLINE)
        assert len(peer.sessions) == 2
        # a retried request with the same key is refused, not dialled again
        with pytest.raises(DuplicateAction):
            await pbx.originate(
                "PJSIP/agent1", exten="0470123456", context="click-to-dial", key="click-42"
            )
        await client.send_action({"Action": "Ping"})  # the link works
    assert len(peer.sent("Originate")) == 1
    first, second = peer.sent("QueueStatus")
    assert first.action_id != second.action_id
    assert peer.sessions.index(next(s for s in peer.sessions if second in s.actions)) == 1


async def test_originate_queued_then_lost_says_so() -> None:
    async with AmiPeer([Script.login_only()]) as peer, client_for(peer) as client:

        def queued_then_drop(session: Session, action: PeerAction) -> bytes | None:
            if action.name != "originate":
                return None
            session.write(
                f"Response: Success\r\nActionID: {action.action_id}\r\n"
                "Message: Originate successfully queued\r\n\r\n".encode()
            )
            asyncio.get_running_loop().call_later(0.05, session.reset)
            return b""

        peer.hooks.append(queued_then_drop)
        await client.connect()
        with pytest.raises(ActionNotConfirmed) as lost:
            await Pbx(client).originate("PJSIP/agent1", exten="0470123456", context="click-to-dial")
        assert lost.value.queued and "acknowledged" in str(lost.value)
        await asyncio.wait_for(client.wait_ready(), DEADLINE)
    assert len(peer.sent("Originate")) == 1


async def test_pbx_actions_and_answers_panoramisk_chokes_on() -> None:
    answers = {
        "queueadd": "Added interface to queue",  # panoramisk: never completes
        "queueremove": "Removed interface from queue",
        "queuepenalty": "Interface penalty set successfully",
        "pjsipnotify": "NOTIFY sent",
    }

    def hook(session: Session, action: PeerAction) -> bytes | None:
        if action.name in answers:
            return f"Response: Success\r\nActionID: {{id}}\r\nMessage: {answers[action.name]}\r\n\r\n".encode()
        if action.name == "hangup":
            return b"Response: Error\r\nActionID: {id}\r\nMessage: No such channel\r\n\r\n"
        return None

    async with AmiPeer([Script.login_only()]) as peer, client_for(peer) as client:
        peer.hooks.append(hook)
        await client.connect()
        pbx = Pbx(client)
        await pbx.queue_add(
            "population-fr",
            "Local/agent3@agents",
            member_name="Agent Three",
            state_interface="PJSIP/agent3",
            paused=True,
            reason="training",
        )
        await pbx.queue_penalty("Local/agent3@agents", 2, queue="population-fr")
        await pbx.queue_remove("population-fr", "Local/agent3@agents")
        with pytest.raises(ActionFailed, match="No such channel"):
            await pbx.hangup("PJSIP/agent1-000000ff")
        with pytest.raises(ValueError, match="Async"):
            await client.send_action(
                {"Action": "Originate", "Channel": "PJSIP/a", "Async": "false"}
            )
        with pytest.raises(ValueError, match="inject"):
            await pbx.blind_transfer("Local/x\r\nAction: Command", "1", "c")
        # hold is phone-side: a NOTIFY to the agent's phone, the citizen stays in Queue()
        await pbx.hold("PJSIP/agent1")  # the member's state interface
        await pbx.unhold("agent1")
        with pytest.raises(ValueError, match="PJSIP"):
            await pbx.hold("Local/agent1@agents")
    (add,) = peer.sent("QueueAdd")
    assert (add.get("Paused"), add.get("Reason"), add.get("StateInterface")) == (
        "true",
        "training",
        "PJSIP/agent3",
    )
    assert not peer.sent("BlindTransfer") and len(peer.sent("Originate")) == 0
    hold, talk = peer.sent("PJSIPNotify")
    assert (hold.get("Endpoint"), hold.all("Variable")) == ("agent1", ["Event=hold"])
    assert (talk.get("Endpoint"), talk.all("Variable")) == ("agent1", ["Event=talk"])
    assert not peer.sent("Redirect")


async def test_actions_before_login_are_not_sent() -> None:
    async with AmiPeer([Script.login_only()]) as peer:
        client = AmiClient(config_for(peer.port))
        with pytest.raises(AmiNotConnected):
            await Pbx(client).hangup("PJSIP/agent1-00000001")
        with pytest.raises(AmiNotConnected):  # read-only: waits for the link, then gives up
            await client.send_action({"Action": "QueueStatus"}, timeout=0.05)
        await client.close()
    assert peer.sessions == []
