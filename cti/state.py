"""Call, queue and agent state from AMI events: `apply(headers, at) -> [domain events]`.

Pure: no I/O, no clock of its own (`at` comes with each event), so a recording replays the
same way every time. Facts it relies on (shared/asterisk/README.md, Asterisk 22):

* The citizen's channel (`Channel:` of every Queue*/Agent* event) is the only one carrying
  GUICHET_* values; the call id is its GUICHET_CALL_ID, else its Uniqueid. Agent legs are
  correlated through `DestUniqueid`, never through variables.
* `QueueCallerLeave` comes *before* `AgentConnect`: a leave is only "unanswered" when no
  member leg had answered (`DialEnd DialStatus: ANSWER` from the citizen's channel).
* On abandon the ringing leg is hung up *before* `QueueCallerAbandon`: a ring ends when the
  queue says why (AgentRingNoAnswer, QueueCallerAbandon, AgentConnect of another member, an
  unanswered leave), not when its leg hangs up.
* `RingTime` is milliseconds in AgentRingNoAnswer and seconds in AgentConnect.
* An agent is on a queue call from our own AgentConnect until AgentComplete: with
  `Local/` members whose state interface is the softphone, Asterisk shows `Status: 1`
  (not in use) and counts the agent as available during the call. The phone's device state
  only says something when no queue call explains it (click-to-dial, a direct call); when
  the state interface is the member's own Local channel it mirrors our call and is ignored.
* Wrap-up (queues.conf `wrapuptime`) has no end event: `tick(now)` ends it.
* ChanSpy (supervisor-spy): `ChanSpyStart`/`ChanSpyStop` carry `Spyer*` and `Spyee*`
  headers; `SpyeeUniqueid` is the agent's member leg (AgentConnect's `DestUniqueid`), which
  ties the spy to the queue call. ChanSpyStop comes before the spyer's Hangup; a Hangup of
  a spyer without ChanSpyStop still ends the spy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cti.events import (
    AgentQueuesChanged,
    AgentRef,
    AgentRinging,
    AgentStateChanged,
    AgentStatus,
    CallAnswered,
    CallEnded,
    CallEndReason,
    CallHoldChanged,
    CallQueued,
    CallTransferred,
    Event,
    QueueStatsChanged,
    RingEndReason,
    RingWithdrawn,
    SpyStarted,
    SpyStopped,
)
from cti.snapshot import SnapChannel, Snapshot, chanvars, flag, interface_of, number, text
from ivr.variables import EXPORTED, channel_variable

# Device states in QueueMemberStatus/QueueMember `Status` (enum ast_device_state).
NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD = 1, 2, 3, 4, 5, 6, 7, 8
_BUSY_DEVICE = frozenset({INUSE, BUSY, RINGINUSE, ONHOLD})

# Events the state reads; VarSet only matters for GUICHET_* variables.
EVENTS = (
    "Newchannel",
    "Newstate",
    "Hangup",
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "AgentCalled",
    "AgentRingNoAnswer",
    "AgentConnect",
    "AgentComplete",
    "DialEnd",
    "BridgeEnter",
    "BridgeLeave",
    "BlindTransfer",
    "AttendedTransfer",
    "MusicOnHoldStart",
    "MusicOnHoldStop",
    "QueueMemberStatus",
    "QueueMemberPause",
    "QueueMemberAdded",
    "QueueMemberRemoved",
    "QueueMemberPenalty",
    "ChanSpyStart",
    "ChanSpyStop",
)
# The channel variables Guichet sets (ivr.variables: one list for the AGI leg, manager.conf
# channelvars and us); only the citizen's channel carries values.
CALL_ID, CASE_ID, LANG, REQUEST_TYPE, QUEUE = (
    EXPORTED[k] for k in ("call_id", "case_id", "lang", "request_type", "queue")
)
PREFIX = channel_variable("")  # "GUICHET_", the prefix of every flow variable
VARSET_FILTER = f"\r\nVariable: {PREFIX}"


def _timestamp(headers: Mapping[str, Any], default: float) -> float:
    """`Timestamp:` (manager.conf timestampevents=yes) when Asterisk sends it."""
    try:
        return float(text(headers, "Timestamp"))
    except ValueError:
        return default


@dataclass
class Channel:
    uniqueid: str
    name: str
    linkedid: str
    state: str = ""
    vars: dict[str, str] = field(default_factory=dict)
    bridge: str | None = None


@dataclass
class Ring:
    agent: str  # member interface
    channel: str  # the member leg
    uniqueid: str
    queue: str
    since: float


@dataclass
class Call:
    """A citizen call that reached a queue; keyed by its channel's Uniqueid."""

    uniqueid: str
    channel: str
    linked_id: str
    vars: dict[str, str] = field(default_factory=dict)
    caller_number: str | None = None
    caller_name: str | None = None
    queue: str | None = None
    in_queue: bool = False
    queued_at: float | None = None
    rings: dict[str, Ring] = field(default_factory=dict)  # by member leg Uniqueid
    answering: str | None = None  # member leg whose DialEnd said ANSWER
    agent: str | None = None  # member interface while connected
    agent_channel: str | None = None
    agent_uniqueid: str | None = None
    answered: bool = False
    abandoned: bool = False
    held: bool = False
    last_agent: str | None = None
    ended_by: str | None = None
    hold_time: float | None = None
    talk_time: float | None = None

    @property
    def call_id(self) -> str:
        return self.vars.get(CALL_ID) or self.uniqueid


@dataclass
class Spy:
    """A running ChanSpy, keyed by the spyer channel's Uniqueid."""

    uniqueid: str
    channel: str  # the supervisor's leg
    spied_channel: str
    spied_uniqueid: str
    agent: str | None  # member interface of the spied leg
    # the queue call the spied leg talks to, kept: a spy may stop after the call ended
    call_id: str | None = None
    linked_id: str | None = None
    case_id: str | None = None


@dataclass
class Membership:
    paused: bool = False
    reason: str = ""
    penalty: int = 0  # skill penalty: members with a lower one are rung first
    wrapuptime: int | None = None  # the member's own, 0/None: the queue's


@dataclass
class Agent:
    interface: str
    name: str
    state_interface: str | None = None
    queues: dict[str, Membership] = field(default_factory=dict)
    rings: dict[str, str] = field(default_factory=dict)  # member leg Uniqueid -> call Uniqueid
    call: str | None = None  # Uniqueid of the connected queue call
    wrap_up_until: float | None = None
    device: int | None = None
    shown: tuple[AgentStatus, str | None, str | None] | None = None
    shown_queues: dict[str, int] | None = None  # queue -> penalty, as last announced

    def ref(self) -> AgentRef:
        return AgentRef(
            interface=self.interface, name=self.name, state_interface=self.state_interface
        )


class CtiState:
    """The live picture; `apply()` and `reconcile()` return the events describing changes."""

    def __init__(self, *, wrapuptime: float | Mapping[str, float] = 0.0) -> None:
        # queues.conf wrapuptime: one value, or per queue (QueueParams does not say it)
        self._wrapuptime = wrapuptime
        self.channels: dict[str, Channel] = {}
        self.calls: dict[str, Call] = {}
        self.agents: dict[str, Agent] = {}
        self._legs: dict[str, str] = {}  # member leg Uniqueid -> agent interface
        self.spies: dict[str, Spy] = {}  # spyer channel Uniqueid -> the spy
        self._queue_shown: dict[str, tuple[int, float | None, int, int, int, int]] = {}
        self._handlers = {
            "Newchannel": self._channel,
            "Newstate": self._channel,
            "VarSet": self._varset,
            "Hangup": self._hangup,
            "QueueCallerJoin": self._join,
            "QueueCallerLeave": self._leave,
            "QueueCallerAbandon": self._abandon,
            "AgentCalled": self._called,
            "AgentRingNoAnswer": self._no_answer,
            "AgentConnect": self._connect,
            "AgentComplete": self._complete,
            "DialEnd": self._dial_end,
            "BridgeEnter": self._bridge,
            "BridgeLeave": self._bridge,
            "BlindTransfer": self._blind_transfer,
            "AttendedTransfer": self._attended_transfer,
            "MusicOnHoldStart": self._moh,
            "MusicOnHoldStop": self._moh,
            "QueueMemberStatus": self._member,
            "QueueMemberPause": self._member,
            "QueueMemberAdded": self._member,
            "QueueMemberPenalty": self._member,
            "QueueMemberRemoved": self._member_removed,
            "ChanSpyStart": self._spy_start,
            "ChanSpyStop": self._spy_stop,
        }
        # per apply()
        self._out: list[Event] = []
        self._touched: set[str] = set()
        self._queues_touched: set[str] = set()

    # --- entry points ---

    def apply(self, headers: Mapping[str, Any], at: float) -> list[Event]:
        handler = self._handlers.get(text(headers, "Event"))
        if handler is None:
            return []
        when = _timestamp(headers, at)
        self._out = []
        handler(headers, when)
        return self._flush(when, resync=False)

    def tick(self, now: float) -> list[Event]:
        """End the wrap-ups that are over."""
        self._out = []
        for agent in self.agents.values():
            if agent.wrap_up_until is not None and agent.wrap_up_until <= now:
                agent.wrap_up_until = None
                self._touch(agent)
        return self._flush(now, resync=False)

    def next_wakeup(self) -> float | None:
        ends = [a.wrap_up_until for a in self.agents.values() if a.wrap_up_until is not None]
        return min(ends) if ends else None

    def call_by_id(self, call_id: str) -> Call | None:
        for call in self.calls.values():
            if call.call_id == call_id:
                return call
        return None

    # --- helpers ---

    def _touch(self, agent: Agent) -> None:
        self._touched.add(agent.interface)
        self._queues_touched.update(agent.queues)

    def _agent(self, interface: str, name: str = "", queue: str | None = None) -> Agent:
        agent = self.agents.get(interface)
        if agent is None:
            agent = self.agents[interface] = Agent(interface, name or interface)
        elif name:
            agent.name = name
        if queue and queue not in agent.queues:
            agent.queues[queue] = Membership()
        self._touch(agent)
        return agent

    def _call(self, h: Mapping[str, Any], *, create: bool = False) -> Call | None:
        """The call of the citizen channel an event is about (`Channel`/`Uniqueid`)."""
        uid = text(h, "Uniqueid")
        call = self.calls.get(uid)
        if call is None and create and uid:
            call = self.calls[uid] = Call(
                uniqueid=uid, channel=text(h, "Channel"), linked_id=text(h, "Linkedid")
            )
        if call is not None:
            found = chanvars(h)
            if found:
                call.vars.update(found)
            call.caller_number = text(h, "CallerIDNum") or call.caller_number
            call.caller_name = text(h, "CallerIDName") or call.caller_name
        return call

    def _ids(self, call: Call) -> dict[str, Any]:
        v = call.vars
        return {
            "call_id": call.call_id,
            "linked_id": call.linked_id,
            "channel": call.channel,
            "case_id": v.get(CASE_ID) or None,
            "lang": v.get(LANG) or None,
            "request_type": v.get(REQUEST_TYPE) or None,
            "queue": call.queue,
        }

    def _withdraw(self, call: Call, reason: RingEndReason, at: float, resync: bool = False) -> None:
        for leg, ring in list(call.rings.items()):
            del call.rings[leg]
            agent = self.agents.get(ring.agent)
            if agent is not None:
                agent.rings.pop(leg, None)
                self._touch(agent)
            self._out.append(
                RingWithdrawn(
                    at=at,
                    resync=resync,
                    **self._ids(call),
                    agent=agent.ref() if agent else AgentRef(interface=ring.agent, name=ring.agent),
                    agent_channel=ring.channel,
                    reason=reason,
                )
            )

    def _wrapup_for(self, agent: Agent, queue: str | None) -> float:
        member = agent.queues.get(queue or "")
        if member is not None and member.wrapuptime:
            return float(member.wrapuptime)
        if isinstance(self._wrapuptime, Mapping):
            return float(self._wrapuptime.get(queue or "", 0.0))
        return float(self._wrapuptime)

    # --- channels ---

    def _channel(self, h: Mapping[str, Any], at: float) -> None:
        uid = text(h, "Uniqueid")
        chan = self.channels.get(uid)
        if chan is None:
            chan = self.channels[uid] = Channel(uid, text(h, "Channel"), text(h, "Linkedid"))
        chan.state = text(h, "ChannelStateDesc")
        chan.vars.update(chanvars(h))

    def _varset(self, h: Mapping[str, Any], at: float) -> None:
        if not text(h, "Variable").startswith(PREFIX):
            return
        chan = self.channels.get(text(h, "Uniqueid"))
        if chan is not None:
            chan.vars.update(chanvars(h))
        self._call(h)  # refreshes the call's variables (GUICHET_QUEUE after a transfer...)

    def _bridge(self, h: Mapping[str, Any], at: float) -> None:
        chan = self.channels.get(text(h, "Uniqueid"))
        if chan is not None:
            chan.bridge = text(h, "BridgeUniqueid") if text(h, "Event") == "BridgeEnter" else None

    def _hangup(self, h: Mapping[str, Any], at: float) -> None:
        uid = text(h, "Uniqueid")
        spy = self.spies.pop(uid, None)
        if spy is not None:  # the spyer hung up without a ChanSpyStop
            self._out.append(self._spy_event(SpyStopped, spy, at))
        self.channels.pop(uid, None)
        self._legs.pop(uid, None)
        call = self.calls.pop(uid, None)
        if call is None:
            return
        self._withdraw(call, "caller_left", at)
        self._end(call, at, cause=number(h, "Cause"), cause_text=text(h, "Cause-txt") or None)

    def _end(
        self,
        call: Call,
        at: float,
        *,
        cause: int | None = None,
        cause_text: str | None = None,
        resync: bool = False,
    ) -> None:
        if call.agent is not None:  # AgentComplete never came
            agent = self.agents.get(call.agent)
            if agent is not None and agent.call == call.uniqueid:
                agent.call = None
                self._touch(agent)
            call.last_agent = call.last_agent or call.agent
        reason: CallEndReason
        if call.answered:
            reason = "completed"
        elif call.abandoned:
            reason = "abandoned"
        else:
            reason = "lost" if resync else "unanswered"
        last = self.agents.get(call.last_agent or "")
        if call.queue:
            self._queues_touched.add(call.queue)
        self._out.append(
            CallEnded(
                at=at,
                resync=resync,
                **self._ids(call),
                reason=reason,
                agent=last.ref() if last else None,
                ended_by=call.ended_by,
                hold_time=call.hold_time,
                talk_time=call.talk_time,
                cause=cause,
                cause_text=cause_text,
            )
        )

    # --- queue calls ---

    def _join(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h, create=True)
        assert call is not None
        queue = text(h, "Queue")
        if call.agent is not None or (call.in_queue and call.queue == queue):
            return  # stale (replayed after a rebuild) or already known
        call.queue, call.in_queue, call.queued_at = queue, True, at
        call.abandoned, call.answering = False, None
        self._queues_touched.add(queue)
        self._out.append(
            CallQueued(
                at=at,
                **self._ids(call),
                position=number(h, "Position"),
                caller_number=call.caller_number,
                caller_name=call.caller_name,
            )
        )

    def _called(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h, create=True)  # created here if its join was missed
        leg = text(h, "DestUniqueid")
        if call is None or call.agent is not None or leg in call.rings:
            return
        queue = text(h, "Queue")
        call.queue = call.queue or queue
        agent = self._agent(text(h, "Interface"), text(h, "MemberName"), queue)
        ring = Ring(agent.interface, text(h, "DestChannel"), leg, queue, at)
        call.rings[leg] = ring
        agent.rings[leg] = call.uniqueid
        self._legs[leg] = agent.interface
        self._out.append(
            AgentRinging(at=at, **self._ids(call), agent=agent.ref(), agent_channel=ring.channel)
        )

    def _no_answer(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h)
        leg = text(h, "DestUniqueid")
        if call is None or leg not in call.rings:
            return
        ring = call.rings.pop(leg)
        agent = self._agent(ring.agent, text(h, "MemberName"))
        agent.rings.pop(leg, None)
        ms = number(h, "RingTime")  # milliseconds here, seconds in AgentConnect
        self._out.append(
            RingWithdrawn(
                at=at,
                **self._ids(call),
                agent=agent.ref(),
                agent_channel=ring.channel,
                reason="no_answer",
                ring_time=ms / 1000.0 if ms is not None else None,
            )
        )

    def _dial_end(self, h: Mapping[str, Any], at: float) -> None:
        call = self.calls.get(text(h, "Uniqueid"))
        leg = text(h, "DestUniqueid")
        if call is not None and leg in call.rings and text(h, "DialStatus") == "ANSWER":
            call.answering = leg

    def _leave(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h)
        if call is None or not call.in_queue:
            return
        call.in_queue = False
        if call.queue:
            self._queues_touched.add(call.queue)
        if call.answering is None and not call.abandoned:
            self._withdraw(call, "caller_left", at)  # Queue() timed out or gave up

    def _abandon(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h)
        if call is None:
            return
        call.abandoned = True
        hold = number(h, "HoldTime")
        call.hold_time = float(hold) if hold is not None else call.hold_time
        self._withdraw(call, "caller_abandoned", at)

    def _connect(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h, create=True)
        leg = text(h, "DestUniqueid")
        if call is None or call.agent_uniqueid == leg:
            return
        call.queue = call.queue or text(h, "Queue")
        agent = self._agent(text(h, "Interface"), text(h, "MemberName"), text(h, "Queue"))
        call.rings.pop(leg, None)
        agent.rings.pop(leg, None)
        self._legs[leg] = agent.interface
        call.agent, call.agent_channel, call.agent_uniqueid = (
            agent.interface,
            text(h, "DestChannel"),
            leg,
        )
        call.answered, call.in_queue, call.answering, call.held = True, False, None, False
        agent.call = call.uniqueid
        agent.wrap_up_until = None
        hold, ring = number(h, "HoldTime"), number(h, "RingTime")
        call.hold_time = float(hold) if hold is not None else None
        self._out.append(
            CallAnswered(
                at=at,
                **self._ids(call),
                agent=agent.ref(),
                agent_channel=call.agent_channel,
                hold_time=call.hold_time,
                ring_time=float(ring) if ring is not None else None,  # seconds here
            )
        )
        self._withdraw(call, "answered_elsewhere", at)

    def _complete(self, h: Mapping[str, Any], at: float) -> None:
        call = self._call(h)
        agent = self._agent(text(h, "Interface"), text(h, "MemberName"))
        queue = text(h, "Queue")
        if agent.call is not None and (call is None or agent.call == call.uniqueid):
            agent.call = None
            wrap = self._wrapup_for(agent, queue)
            agent.wrap_up_until = at + wrap if wrap > 0 else None
            if agent.state_interface and agent.state_interface != agent.interface:
                agent.device = None  # the phone's busy state was this call; fresh news follow
        if call is None or call.agent != agent.interface:
            return
        talk = number(h, "TalkTime")
        call.talk_time = float(talk) if talk is not None else None
        call.ended_by = text(h, "Reason") or None
        call.last_agent, call.agent, call.agent_channel, call.agent_uniqueid = (
            agent.interface,
            None,
            None,
            None,
        )
        if call.held:
            call.held = False

    def _moh(self, h: Mapping[str, Any], at: float) -> None:
        call = self.calls.get(text(h, "Uniqueid"))
        if call is None or call.agent is None:  # queue music while waiting is not a hold
            return
        held = text(h, "Event") == "MusicOnHoldStart"
        if held != call.held:
            call.held = held
            self._out.append(CallHoldChanged(at=at, **self._ids(call), held=held))

    # --- transfers ---

    def _transfer_parties(
        self, h: Mapping[str, Any], roles: Iterable[str]
    ) -> tuple[Call | None, Agent | None, str | None]:
        call: Call | None = None
        agent: Agent | None = None
        transferer: str | None = None
        for role in roles:
            uid = text(h, f"{role}Uniqueid")
            if call is None and uid in self.calls:
                call = self.calls[uid]
                found = chanvars(h, f"{role}ChanVariable")
                if found:
                    call.vars.update(found)
            elif agent is None and uid in self._legs:
                agent = self.agents.get(self._legs[uid])
                transferer = text(h, f"{role}Channel") or None
        return call, agent, transferer

    def _blind_transfer(self, h: Mapping[str, Any], at: float) -> None:
        call, agent, transferer = self._transfer_parties(h, ("Transferee", "Transferer"))
        if call is None:
            return
        self._out.append(
            CallTransferred(
                at=at,
                **self._ids(call),
                kind="blind",
                success=text(h, "Result") == "Success",
                agent=agent.ref() if agent else None,
                transferer_channel=transferer or text(h, "TransfererChannel") or None,
                target=f"{text(h, 'Extension')}@{text(h, 'Context')}",
            )
        )

    def _attended_transfer(self, h: Mapping[str, Any], at: float) -> None:
        roles = ("Transferee", "TransferTarget", "OrigTransferer", "SecondTransferer")
        call, agent, transferer = self._transfer_parties(h, roles)
        if call is None:
            return
        exten, context = text(h, "TransferTargetExten"), text(h, "TransferTargetContext")
        target = f"{exten}@{context}" if exten and context else text(h, "TransferTargetChannel")
        self._out.append(
            CallTransferred(
                at=at,
                **self._ids(call),
                kind="attended",
                success=text(h, "Result") == "Success",
                agent=agent.ref() if agent else None,
                transferer_channel=transferer or text(h, "OrigTransfererChannel") or None,
                target=target or None,
            )
        )

    # --- supervisors' ChanSpy ---

    def _spy_start(self, h: Mapping[str, Any], at: float) -> None:
        spy = self._spy_from(h)
        if spy.uniqueid:
            self.spies[spy.uniqueid] = spy
        self._out.append(self._spy_event(SpyStarted, spy, at))

    def _spy_stop(self, h: Mapping[str, Any], at: float) -> None:
        # unknown when it started before we connected
        spy = self.spies.pop(text(h, "SpyerUniqueid"), None) or self._spy_from(h)
        self._out.append(self._spy_event(SpyStopped, spy, at))

    def _spy_from(self, h: Mapping[str, Any]) -> Spy:
        spied = text(h, "SpyeeUniqueid")
        call = next((c for c in self.calls.values() if c.agent_uniqueid == spied), None)
        return Spy(
            uniqueid=text(h, "SpyerUniqueid"),
            channel=text(h, "SpyerChannel"),
            spied_channel=text(h, "SpyeeChannel"),
            spied_uniqueid=spied,
            agent=call.agent if call else self._legs.get(spied),
            call_id=call.call_id if call else None,
            linked_id=call.linked_id if call else None,
            case_id=(call.vars.get(CASE_ID) or None) if call else None,
        )

    def _spy_event(
        self,
        kind: type[SpyStarted] | type[SpyStopped],
        spy: Spy,
        at: float,
        *,
        resync: bool = False,
    ) -> SpyStarted | SpyStopped:
        agent = self.agents.get(spy.agent or "")
        return kind(
            at=at,
            resync=resync,
            spy_channel=spy.channel,
            spy_uniqueid=spy.uniqueid or None,
            spied_channel=spy.spied_channel,
            spied_uniqueid=spy.spied_uniqueid or None,
            call_id=spy.call_id,
            linked_id=spy.linked_id,
            case_id=spy.case_id,
            agent=agent.ref() if agent else None,
        )

    # --- members ---

    def _member(self, h: Mapping[str, Any], at: float) -> None:
        queue = text(h, "Queue")
        agent = self._agent(text(h, "Interface"), text(h, "MemberName"), queue)
        member = agent.queues[queue]
        agent.state_interface = text(h, "StateInterface") or agent.state_interface
        if "Paused" in h:
            member.paused = flag(h, "Paused")
            member.reason = text(h, "PausedReason") if member.paused else ""
        wrap = number(h, "Wrapuptime")
        member.wrapuptime = wrap if wrap is not None else member.wrapuptime
        penalty = number(h, "Penalty")
        member.penalty = penalty if penalty is not None else member.penalty
        status = number(h, "Status")
        if status is not None and agent.state_interface != agent.interface:
            agent.device = status

    def _member_removed(self, h: Mapping[str, Any], at: float) -> None:
        agent = self._agent(text(h, "Interface"), text(h, "MemberName"))
        queue = text(h, "Queue")
        agent.queues.pop(queue, None)
        self._queues_touched.add(queue)

    # --- derived states ---

    def agent_status(self, agent: Agent, now: float) -> tuple[AgentStatus, str | None, str | None]:
        """(state, pause reason, call id) by precedence: what Asterisk cannot see first."""
        if not agent.queues:
            return "logged_out", None, None
        if agent.call is not None:
            call = self.calls.get(agent.call)
            return "on_call", None, call.call_id if call else None
        if agent.rings:
            call = self.calls.get(next(iter(agent.rings.values())))
            return "ringing", None, call.call_id if call else None
        if agent.wrap_up_until is not None and agent.wrap_up_until > now:
            return "wrap_up", None, None
        if agent.device in _BUSY_DEVICE:
            return "on_call", None, None  # a call outside the queues (click-to-dial, direct)
        if agent.device == RINGING:
            return "ringing", None, None
        if all(m.paused for m in agent.queues.values()):
            reasons = [m.reason for m in agent.queues.values() if m.reason]
            return "paused", reasons[0] if reasons else None, None
        if agent.device in (UNAVAILABLE, INVALID):
            return "unavailable", None, None
        return "ready", None, None

    def _flush(self, at: float, *, resync: bool) -> list[Event]:
        out = self._out
        for interface in sorted(self._touched):
            agent = self.agents.get(interface)
            if agent is None:
                continue
            shown = self.agent_status(agent, at)
            if shown != agent.shown:
                previous = agent.shown[0] if agent.shown else None
                agent.shown = shown
                out.append(
                    AgentStateChanged(
                        at=at,
                        resync=resync,
                        agent=agent.ref(),
                        state=shown[0],
                        previous=previous,
                        pause_reason=shown[1],
                        call_id=shown[2],
                        queues=tuple(sorted(agent.queues)),
                    )
                )
            queues = {q: m.penalty for q, m in sorted(agent.queues.items())}
            if queues != agent.shown_queues:
                agent.shown_queues = queues
                out.append(
                    AgentQueuesChanged(at=at, resync=resync, agent=agent.ref(), penalties=queues)
                )
        for queue in sorted(self._queues_touched):
            stats = self.queue_stats(queue)
            if stats != self._queue_shown.get(queue):
                self._queue_shown[queue] = stats
                waiting, since, members, available, on_call, paused = stats
                out.append(
                    QueueStatsChanged(
                        at=at,
                        resync=resync,
                        queue=queue,
                        waiting=waiting,
                        longest_waiting_since=since,
                        members=members,
                        available=available,
                        on_call=on_call,
                        paused=paused,
                    )
                )
        self._touched.clear()
        self._queues_touched.clear()
        self._out = []
        return out

    def queue_stats(self, queue: str) -> tuple[int, float | None, int, int, int, int]:
        waits = [c.queued_at or 0.0 for c in self.calls.values() if c.in_queue and c.queue == queue]
        members = [a for a in self.agents.values() if queue in a.queues]
        shown = [a.shown[0] if a.shown else "ready" for a in members]
        available = sum(
            1
            for a, s in zip(members, shown, strict=True)
            if s == "ready" and not a.queues[queue].paused
        )
        return (
            len(waits),
            min(waits) if waits else None,
            len(members),
            available,
            shown.count("on_call"),
            sum(1 for a in members if a.queues[queue].paused),
        )

    # --- rebuild after (re)connecting ---

    def reconcile(self, snap: Snapshot, at: float) -> list[Event]:
        """Replace what we believed by what Asterisk lists, and say what changed (events
        flagged `resync`): calls that started, were answered or ended while we were away."""
        self._out = []
        self.channels = {
            c.uniqueid: Channel(
                c.uniqueid, c.name, c.linkedid, c.state, dict(c.vars), c.bridge_id or None
            )
            for c in snap.channels
        }
        self._reconcile_members(snap)
        by_uid = {c.uniqueid: c for c in snap.channels}
        for uid, spy in list(self.spies.items()):
            if uid not in by_uid:  # the spy ended while we were away
                del self.spies[uid]
                self._out.append(self._spy_event(SpyStopped, spy, at, resync=True))
        self._legs = {uid: agent for uid, agent in self._legs.items() if uid in by_uid}
        queued = {e.uniqueid: e for e in snap.entries}
        # calls waiting in a queue
        for entry in snap.entries:
            chan = by_uid.get(entry.uniqueid)
            call = self._snap_call(entry.uniqueid, entry.channel, chan)
            if call.agent is not None:
                self._drop_agent(call, at)
            if not (call.in_queue and call.queue == entry.queue):
                call.queue, call.in_queue, call.queued_at = entry.queue, True, at - entry.wait
                call.abandoned = False
                self._out.append(
                    CallQueued(
                        at=at,
                        resync=True,
                        **self._ids(call),
                        position=entry.position,
                        caller_number=call.caller_number,
                        caller_name=call.caller_name,
                    )
                )
            self._queues_touched.add(entry.queue)
        # calls talking to a member: the citizen in Queue(), a member leg in its bridge
        connected: set[str] = set()
        for chan in snap.channels:
            if chan.application != "Queue" or chan.uniqueid in queued or not chan.bridge_id:
                continue
            leg = next(
                (
                    o
                    for o in snap.channels
                    if o.bridge_id == chan.bridge_id
                    and o.uniqueid != chan.uniqueid
                    and interface_of(o.name) in self.agents
                ),
                None,
            )
            if leg is None:
                continue
            connected.add(chan.uniqueid)
            call = self._snap_call(chan.uniqueid, chan.name, chan)
            call.queue = chan.vars.get(QUEUE) or chan.app_data.split(",")[0] or call.queue
            if call.agent_uniqueid != leg.uniqueid:
                self._resync_answer(call, leg.uniqueid, leg.name, at)
        # calls that went on without us
        for uid, call in list(self.calls.items()):
            if uid not in by_uid and uid not in queued:
                del self.calls[uid]
                self._withdraw(call, "caller_left", at, resync=True)
                self._end(call, at, resync=True)
            elif call.agent is not None and uid not in connected:
                self._drop_agent(call, at)
            if uid not in queued and call.in_queue:
                call.in_queue = False
                if call.queue:
                    self._queues_touched.add(call.queue)
        self._reconcile_rings(snap, at)
        for agent in self.agents.values():
            if agent.call is not None and agent.call not in connected:
                agent.call = None
            self._touch(agent)
        self._queues_touched.update(snap.queues)
        return self._flush(at, resync=True)

    def _reconcile_members(self, snap: Snapshot) -> None:
        seen: set[tuple[str, str]] = set()
        for m in snap.members:
            agent = self._agent(m.interface, m.name, m.queue)
            agent.state_interface = m.state_interface or agent.state_interface
            member = agent.queues[m.queue]
            member.paused, member.reason = m.paused, m.paused_reason if m.paused else ""
            member.wrapuptime = m.wrapuptime
            member.penalty = m.penalty
            if m.status is not None and agent.state_interface != agent.interface:
                agent.device = m.status
            seen.add((m.interface, m.queue))
        for agent in self.agents.values():
            for queue in [q for q in agent.queues if (agent.interface, q) not in seen]:
                del agent.queues[queue]
                self._queues_touched.add(queue)

    def _snap_call(self, uid: str, name: str, chan: SnapChannel | None) -> Call:
        call = self.calls.get(uid)
        if call is None:
            linked = chan.linkedid if chan is not None else uid
            call = self.calls[uid] = Call(uniqueid=uid, channel=name, linked_id=linked)
        if chan is not None:
            call.vars.update(chan.vars)
            call.caller_number = chan.caller_number or call.caller_number
            call.caller_name = chan.caller_name or call.caller_name
        return call

    def _drop_agent(self, call: Call, at: float) -> None:
        agent = self.agents.get(call.agent or "")
        if agent is not None and agent.call == call.uniqueid:
            agent.call = None
            self._touch(agent)
        call.last_agent, call.agent, call.agent_channel, call.agent_uniqueid = (
            call.agent,
            None,
            None,
            None,
        )

    def _resync_answer(self, call: Call, leg_uid: str, leg_name: str, at: float) -> None:
        if call.agent is not None:
            self._drop_agent(call, at)
        agent = self._agent(interface_of(leg_name))
        if call.queue:
            agent.queues.setdefault(call.queue, Membership())
        self._withdraw(call, "answered_elsewhere", at, resync=True)
        call.agent, call.agent_channel, call.agent_uniqueid = agent.interface, leg_name, leg_uid
        call.answered, call.in_queue = True, False
        agent.call = call.uniqueid
        agent.rings = {k: v for k, v in agent.rings.items() if v != call.uniqueid}
        self._legs[leg_uid] = agent.interface
        self._out.append(
            CallAnswered(
                at=at, resync=True, **self._ids(call), agent=agent.ref(), agent_channel=leg_name
            )
        )

    def _reconcile_rings(self, snap: Snapshot, at: float) -> None:
        """Member legs still ringing: `AppQueue` channels not up, tied by Linkedid."""
        waiting = {c.linked_id: c for c in self.calls.values() if c.in_queue}
        live: dict[str, set[str]] = {uid: set() for uid in self.calls}
        for chan in snap.channels:
            call = waiting.get(chan.linkedid)
            interface = interface_of(chan.name)
            if (
                call is None
                or chan.application != "AppQueue"
                or chan.state == "Up"
                or interface not in self.agents
            ):
                continue
            live[call.uniqueid].add(chan.uniqueid)
            if chan.uniqueid not in call.rings:
                agent = self._agent(interface)
                call.rings[chan.uniqueid] = Ring(
                    interface, chan.name, chan.uniqueid, call.queue or "", at
                )
                agent.rings[chan.uniqueid] = call.uniqueid
                self._legs[chan.uniqueid] = interface
                self._out.append(
                    AgentRinging(
                        at=at,
                        resync=True,
                        **self._ids(call),
                        agent=agent.ref(),
                        agent_channel=chan.name,
                    )
                )
        for call in self.calls.values():
            gone = {
                leg: r for leg, r in call.rings.items() if leg not in live.get(call.uniqueid, set())
            }
            if gone:
                kept = {leg: r for leg, r in call.rings.items() if leg not in gone}
                call.rings = gone
                self._withdraw(call, "caller_left", at, resync=True)
                call.rings = kept
