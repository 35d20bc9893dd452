"""State rebuilt after a reconnect from CoreShowChannels, QueueStatus and QueueSummary, so
calls that started, were answered or ended while Guichet was away are not lost.

The second connection's lists are Asterisk's own answers recorded in agent-pause while the
citizen talked to Agent One (csc-live, qs-live-all, qsum-live).
"""

from __future__ import annotations

from ami_peer import AmiPeer, Script, recorded_answer, recording
from cti_harness import running

from cti.ami import ConnectionState
from cti.events import AgentStateChanged, CallAnswered, CallEnded, CallQueued, QueueStatsChanged

PAUSE = recording("agent-pause")
LIVE_LISTS = {
    "CoreShowChannels": recorded_answer(PAUSE, "csc-live"),
    "QueueStatus": recorded_answer(PAUSE, "qs-live-all"),
    "QueueSummary": recorded_answer(PAUSE, "qsum-live"),
}


async def test_call_answered_while_disconnected_is_rebuilt_and_ends_normally() -> None:
    full = Script.load(PAUSE)
    idle = full.after(1e9)  # login only: the PBX is idle
    rest = full.after(16.0)  # the end of the call, after the lists and pauses
    async with AmiPeer([idle, rest]) as peer, running(peer) as cti:
        assert cti.bridge.resyncs == 1 and not cti.drain()
        peer.lists = {k.lower(): v for k, v in LIVE_LISTS.items()}
        peer.drop()  # meanwhile the citizen called, and Agent One answered
        answered = await cti.next(CallAnswered)
        ended = await cti.next(CallEnded)
        await cti.close()
    assert len(peer.sessions) == 2
    # rebuilt from the lists: the ids come from the citizen channel's ChanVariables
    assert answered.resync
    assert (answered.call_id, answered.linked_id, answered.case_id, answered.lang) == (
        "1795370228.1",
        "1795370228.0",
        "case-1001",
        "nl",
    )
    assert answered.queue == "population-nl"
    assert answered.agent.interface == "Local/agent1@agents"
    assert answered.agent.name == "Agent One"
    assert answered.agent.state_interface == "PJSIP/agent1"
    assert answered.agent_channel == "Local/agent1@agents-00000001;1"
    # then the live end of the same call
    assert not ended.resync
    assert (ended.call_id, ended.reason, ended.ended_by) == ("1795370228.1", "completed", "caller")
    assert ended.agent is not None and ended.agent.id == "agent1"
    # QueueSummary says Available 2 and QueueMember Status 1, but Agent One is on the call
    one = [
        e
        for e in cti.of(AgentStateChanged)
        if isinstance(e, AgentStateChanged) and e.agent.id == "agent1"
    ]
    assert [(e.state, e.resync, e.call_id) for e in one] == [
        ("on_call", True, "1795370228.1"),
        ("ready", False, None),
    ]
    assert one[0].queues == ("population-fr", "population-nl")
    two = [
        e
        for e in cti.of(AgentStateChanged)
        if isinstance(e, AgentStateChanged) and e.agent.id == "agent2"
    ]
    assert [(e.state, e.resync) for e in two] == [("ready", True)]
    nl = [
        e
        for e in cti.of(QueueStatsChanged)
        if isinstance(e, QueueStatsChanged) and e.queue == "population-nl"
    ]
    assert (nl[0].members, nl[0].on_call, nl[0].available, nl[0].resync) == (2, 1, 1, True)


async def test_call_ended_while_disconnected_is_closed() -> None:
    script = Script.load(recording("inbound-answered"))
    talking = script.until(13.95)  # up to AgentConnect and the bridge
    async with AmiPeer([talking, script.after(1e9)]) as peer, running(peer) as cti:
        answered = await cti.next(CallAnswered)
        await peer.shutdown()  # Asterisk restarts: the call is gone, the lists know no channel
        ended = await cti.next(CallEnded)
        await cti.close()
    assert not answered.resync and ended.resync
    assert (ended.call_id, ended.reason, ended.case_id) == (
        "1795370006.1",
        "completed",
        "case-1001",
    )
    assert cti.bridge.resyncs == 2
    lost = [d for s, d in cti.states if s is ConnectionState.DISCONNECTED]
    assert lost and lost[0].startswith("Asterisk shut down to restart")


async def test_waiting_call_survives_a_reconnect_without_duplicates() -> None:
    waiting = recorded_answer(PAUSE, "qs-while-waiting")  # a QueueEntry for 1795370228.1
    script = Script.load(PAUSE)
    async with AmiPeer([script.until(11.9385), script.after(1e9)]) as peer, running(peer) as cti:
        queued = await cti.next(CallQueued)
        peer.lists = {"queuestatus": waiting}
        peer.drop()
        await cti.rebuilt(2)
        await cti.close()
    assert not queued.resync and queued.call_id == "1795370228.1"
    # still waiting in the same queue: no second CallQueued, no CallEnded
    assert len(cti.of(CallQueued)) == 1 and not cti.of(CallEnded)
    nl = [
        e
        for e in cti.of(QueueStatsChanged)
        if isinstance(e, QueueStatsChanged) and e.queue == "population-nl"
    ]
    assert nl[-1].waiting == 1
