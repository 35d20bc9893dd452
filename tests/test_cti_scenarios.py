"""Each recorded Asterisk 22 scenario, replayed byte for byte over TCP by AmiPeer, through the
real AMI client, CTI state and bus: the domain events that come out, and their key fields.

Actions the recording client sent (BlindTransfer, Atxfer, QueuePause, Originate...) are
sent here by `Pbx`; the peer only goes on with the recording once it received the same
action, headers and all. No timing is asserted.
"""

from __future__ import annotations

from ami_peer import AmiPeer, Script, recording
from cti_harness import running

from cti.events import (
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallHoldChanged,
    CallQueued,
    CallTransferred,
    QueueStatsChanged,
    RingWithdrawn,
)


def peer_for(scenario: str) -> AmiPeer:
    return AmiPeer([Script.load(recording(scenario))])


async def test_inbound_answered() -> None:
    async with peer_for("inbound-answered") as peer, running(peer) as cti:
        await cti.close()
    call = "1795370006.1"  # GUICHET_CALL_ID = Uniqueid of the citizen's ;2 channel
    assert cti.calls() == [
        ("CallQueued", call, "population-nl"),
        ("AgentRinging", call, "population-nl", "agent1"),
        ("CallAnswered", call, "population-nl", "agent1"),
        ("CallEnded", call, "population-nl", "agent1", "completed"),
    ]
    queued, answered, ended = (cti.of(t)[0] for t in (CallQueued, CallAnswered, CallEnded))
    assert isinstance(queued, CallQueued) and isinstance(answered, CallAnswered)
    assert isinstance(ended, CallEnded)
    # the GUICHET_* values ride on the citizen's channel only, and every event carries them
    for event in (queued, answered, ended):
        assert (event.linked_id, event.case_id, event.lang, event.request_type) == (
            "1795370006.0",
            "case-1001",
            "nl",
            "population",
        )
        assert event.channel == "Local/022791111@from-citizen-00000000;2"
    assert (queued.position, queued.caller_number) == (1, "0470123456")
    assert answered.agent.interface == "Local/agent1@agents"
    assert answered.agent.name == "Agent One"
    assert answered.agent_channel == "Local/agent1@agents-00000001;1"
    assert (answered.hold_time, answered.ring_time) == (2.0, 2.0)  # RingTime in seconds here
    assert (ended.ended_by, ended.talk_time, ended.hold_time, ended.cause) == (
        "caller",
        3.0,
        2.0,
        16,
    )
    assert cti.agent_states("agent1") == ["ringing", "on_call", "ready"]
    ringing = cti.of(AgentStateChanged)[0]
    assert isinstance(ringing, AgentStateChanged) and ringing.call_id == call
    assert not any(e.resync for e in cti.events)


async def test_inbound_abandoned() -> None:
    async with peer_for("inbound-abandoned") as peer, running(peer) as cti:
        await cti.close()
    call = "1795370029.1"
    # the member leg is hung up before QueueCallerAbandon: the ring ends for that reason
    assert cti.calls() == [
        ("CallQueued", call, "population-fr"),
        ("AgentRinging", call, "population-fr", "agent1"),
        ("RingWithdrawn", call, "population-fr", "agent1", "caller_abandoned"),
        ("CallEnded", call, "population-fr", "abandoned"),
    ]
    ended = cti.of(CallEnded)[0]
    assert isinstance(ended, CallEnded)
    assert (ended.lang, ended.hold_time, ended.agent, ended.talk_time) == ("fr", 8.0, None, None)
    assert cti.agent_states("agent1") == ["ringing", "ready"]
    waiting = [e.waiting for e in cti.of(QueueStatsChanged) if isinstance(e, QueueStatsChanged)]
    assert waiting[0] == 1 and waiting[-1] == 0


async def test_ring_no_answer_then_second_agent() -> None:
    async with peer_for("ring-no-answer") as peer, running(peer) as cti:
        await cti.close()
    call = "1795370055.1"
    assert cti.calls() == [
        ("CallQueued", call, "population-fr"),
        ("AgentRinging", call, "population-fr", "agent1"),
        ("RingWithdrawn", call, "population-fr", "agent1", "no_answer"),
        ("AgentRinging", call, "population-fr", "agent2"),
        ("CallAnswered", call, "population-fr", "agent2"),
        ("CallEnded", call, "population-fr", "agent2", "completed"),
    ]
    withdrawn, answered = cti.of(RingWithdrawn)[0], cti.of(CallAnswered)[0]
    assert isinstance(withdrawn, RingWithdrawn) and isinstance(answered, CallAnswered)
    assert withdrawn.ring_time == 15.0  # AgentRingNoAnswer says 15000 (ms)
    assert answered.ring_time == 2.0  # AgentConnect says 2 (s)
    assert answered.hold_time == 19.0
    assert cti.agent_states("agent1") == ["ringing", "ready"]
    # Agent Two's state interface is its own Local channel: its QueueMemberStatus INUSE
    # while ringing mirrors our call and must not turn "ringing" into "on_call"
    assert cti.agent_states("agent2") == ["ringing", "on_call", "ready"]


async def test_blind_transfer_requeues_the_same_call() -> None:
    async with peer_for("blind-transfer") as peer, running(peer) as cti:
        answered = await cti.next(CallAnswered)
        await cti.pbx.blind_transfer(answered.agent_channel, "population-fr", "transfer-targets")
        await cti.close()
    (sent,) = peer.sent("BlindTransfer")
    assert sent.get("Channel") == "Local/agent1@agents-00000001;1"
    call = "1795370095.1"
    assert cti.calls() == [
        ("CallQueued", call, "population-nl"),
        ("AgentRinging", call, "population-nl", "agent1"),
        ("CallAnswered", call, "population-nl", "agent1"),
        ("CallTransferred", call, "population-nl", "agent1", "blind"),
        ("CallQueued", call, "population-fr"),  # GUICHET_QUEUE followed the transfer
        ("AgentRinging", call, "population-fr", "agent1"),
        ("CallAnswered", call, "population-fr", "agent1"),
        ("CallEnded", call, "population-fr", "agent1", "completed"),
    ]
    transfer = cti.of(CallTransferred)[0]
    assert isinstance(transfer, CallTransferred)
    assert transfer.success and transfer.target == "population-fr@transfer-targets"
    assert transfer.transferer_channel == "Local/agent1@agents-00000001;1"
    second = cti.of(CallAnswered)[1]
    assert isinstance(second, CallAnswered)
    assert second.agent_channel == "Local/agent1@agents-00000002;1"
    assert cti.agent_states("agent1") == [
        "ringing",
        "on_call",
        "ready",
        "ringing",
        "on_call",
        "ready",
    ]


async def test_attended_transfer_with_queue_option_t() -> None:
    async with peer_for("attended-transfer") as peer, running(peer) as cti:
        answered = await cti.next(CallAnswered)
        await cti.pbx.attended_transfer(answered.agent_channel, "2000", "transfer-targets")
        await cti.close()
    call = "1795370122.1"
    assert cti.calls() == [
        ("CallQueued", call, "population-nl"),
        ("AgentRinging", call, "population-nl", "agent1"),
        ("CallAnswered", call, "population-nl", "agent1"),
        ("CallHoldChanged", call, "population-nl"),
        ("CallHoldChanged", call, "population-nl"),
        ("CallTransferred", call, "population-nl", "agent1", "attended"),
        ("CallEnded", call, "population-nl", "agent1", "completed"),
    ]
    held = [e.held for e in cti.of(CallHoldChanged) if isinstance(e, CallHoldChanged)]
    assert held == [True, False]  # consultation: the citizen hears music, then 2000
    transfer = cti.of(CallTransferred)[0]
    assert isinstance(transfer, CallTransferred)
    assert transfer.success and transfer.target == "2000@transfer-targets"
    ended = cti.of(CallEnded)[0]
    assert isinstance(ended, CallEnded) and ended.ended_by == "transfer"


async def test_attended_transfer_without_t_does_nothing_despite_success() -> None:
    async with peer_for("attended-transfer-no-t-option") as peer, running(peer) as cti:
        answered = await cti.next(CallAnswered)
        # Asterisk answers "Atxfer successfully queued" (and panoramisk would crash on it)
        await cti.pbx.attended_transfer(answered.agent_channel, "2000", "transfer-targets")
        await cti.close()
    assert not cti.of(CallTransferred, CallHoldChanged)
    ended = cti.of(CallEnded)[0]
    assert isinstance(ended, CallEnded)
    assert (ended.reason, ended.ended_by, ended.talk_time) == ("completed", "caller", 6.0)


async def test_agent_pause_and_queue_lists() -> None:
    async with peer_for("agent-pause") as peer, running(peer) as cti:
        pbx, client = cti.pbx, cti.client
        await cti.next(CallQueued)
        waiting = await pbx.queue_status("population-nl")
        assert [m.name for m in waiting] == [
            "QueueParams",
            "QueueMember",
            "QueueMember",
            "QueueEntry",
        ]
        assert waiting[3].text("Uniqueid") == "1795370228.1"
        await cti.next(CallAnswered)
        everything = await client.send_action({"Action": "QueueStatus"})
        summary = await client.send_action({"Action": "QueueSummary"})
        channels = await client.send_action({"Action": "CoreShowChannels"})
        await client.send_action({"Action": "Status"})
        citizen = await client.send_action(
            {
                "Action": "Status",
                "Channel": "Local/022791111@from-citizen-00000000;2",
                "Variables": "GUICHET_CASE_ID,GUICHET_QUEUE,QUEUENAME",
            }
        )
        await pbx.pause("Local/agent2@agents", "lunch")
        member = await pbx.queue_status("population-nl", member="Local/agent2@agents")
        await pbx.unpause("Local/agent2@agents")
        await cti.close()
    assert isinstance(everything, list) and isinstance(summary, list)
    assert isinstance(channels, list) and isinstance(citizen, list)
    # the lists end with their Complete event; QueueSummary is fooled by the Local member
    assert everything[-1].name == "QueueStatusComplete" and len(everything) == 8
    nl = next(m for m in summary if m.text("Queue") == "population-nl")
    assert nl.text("Available") == "2"
    in_call = [
        m
        for m in everything
        if m.text("Name") == "Agent One" and m.text("Queue") == "population-nl"
    ]
    assert in_call[0].text("InCall") == "1" and in_call[0].text("Status") == "1"
    assert channels[1].chanvars()["GUICHET_CASE_ID"] == "case-1001"
    assert citizen[1].headers["Variable"] == [
        "GUICHET_CASE_ID=case-1001",
        "GUICHET_QUEUE=population-nl",
        "QUEUENAME=(null)",
    ]
    assert [
        (m.text("Paused"), m.text("PausedReason")) for m in member if m.name == "QueueMember"
    ] == [("1", "lunch")]
    (pause, unpause) = peer.sent("QueuePause")
    assert (pause.get("Paused"), pause.get("Reason"), pause.get("Queue", "-")) == (
        "true",
        "lunch",
        "-",
    )
    assert unpause.get("Paused") == "false"
    # our state is not fooled: Agent One is on the call while Asterisk says "available"
    assert cti.agent_states("agent1") == ["ringing", "on_call", "ready"]
    paused = [
        e
        for e in cti.of(AgentStateChanged)
        if isinstance(e, AgentStateChanged) and e.agent.id == "agent2"
    ]
    assert [(e.state, e.pause_reason) for e in paused] == [("paused", "lunch"), ("ready", None)]
    assert paused[0].queues == ("population-fr",)  # then nl: paused everywhere, no new event
    assert [e.reason for e in cti.of(CallEnded) if isinstance(e, CallEnded)] == ["completed"]


async def test_click_to_dial_and_unknown_phone() -> None:
    async with peer_for("originate-click-to-dial") as peer, running(peer) as cti:
        dialled = await cti.pbx.click_to_dial(
            "PJSIP/agent1",
            "0470123456",
            context="click-to-dial",
            call_id="c2d-0001",
            case_id="case-4242",
            caller_id='"Guichet" <022791111>',
        )
        failed = await cti.pbx.originate(
            "PJSIP/agent9", exten="0470123456", context="click-to-dial", timeout=20
        )
        await cti.close()
    first, second = peer.sent("Originate")
    assert first.get("Async") == "true" and second.get("Async") == "true"
    assert first.all("Variable") == ["GUICHET_CASE_ID=case-4242", "GUICHET_CALL_ID=c2d-0001"]
    # the OriginateResponse is correlated by our ActionID, not by the recorder's
    assert (dialled.success, dialled.reason, dialled.channel) == (True, 4, "PJSIP/agent1-00000000")
    assert dialled.uniqueid == "1795370253.0"
    assert (failed.success, failed.reason, failed.uniqueid) == (False, 0, None)
    assert failed.reason_text.startswith("failed")
    # the phone is Agent One's state interface: its device states tell an outbound call
    assert cti.agent_states("agent1") == ["ringing", "on_call", "ready"]
    assert not cti.of(CallQueued)


async def test_supervisor_spy_listen_whisper_barge() -> None:
    async with peer_for("supervisor-spy") as peer, running(peer) as cti:
        answered = await cti.next(CallAnswered)
        channels = []
        for mode in ("listen", "whisper", "barge"):
            spy = await cti.pbx.spy(
                "PJSIP/sup1", "Local/agent1@agents", mode, caller_id='"Supervisor" <sup1>'
            )
            assert spy.success
            channels.append(spy.channel)
            await cti.pbx.hangup(spy.channel)
        await cti.close()
    assert [a.get("Data") for a in peer.sent("Originate")] == [
        "Local/agent1@agents,qbES",
        "Local/agent1@agents,qbEw",
        "Local/agent1@agents,qbEB",
    ]
    assert [a.get("Application") for a in peer.sent("Originate")] == ["ChanSpy"] * 3
    assert channels == ["PJSIP/sup1-00000000", "PJSIP/sup1-00000001", "PJSIP/sup1-00000002"]
    assert [a.get("Channel") for a in peer.sent("Hangup")] == channels
    assert answered.call_id == "1795370193.1"
    ended = cti.of(CallEnded)[0]
    assert isinstance(ended, CallEnded) and ended.talk_time == 16.0
    assert cti.agent_states("agent1") == ["ringing", "on_call", "ready"]  # spying is invisible


async def test_ivr_only_calls_make_no_queue_events() -> None:
    for scenario in ("ivr-hangup-midflow", "ivr-bad-input"):
        async with peer_for(scenario) as peer, running(peer) as cti:
            await cti.close()
        assert cti.events == [], scenario
        assert not cti.client.ready
