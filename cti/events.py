"""Typed domain events of the CTI: what the console, reports and other nodes consume.

Events are values (frozen dataclasses) carrying the ids needed to correlate them without
asking Asterisk again: the call id (GUICHET_CALL_ID, i.e. the Uniqueid of the citizen's
channel), its Linkedid, the case id, the queue and the agent (queue member interface, member
name and the phone behind it). `at` is Unix time in seconds: when Guichet saw the AMI event
(Asterisk sends no timestamp unless `timestampevents=yes`, which we then prefer).

`to_json`/`from_json` turn an event into JSON and back into the same dataclass, for the Redis
bus between Guichet nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias

from pydantic import TypeAdapter

AgentStatus: TypeAlias = Literal[
    "ready", "ringing", "on_call", "wrap_up", "paused", "unavailable", "logged_out"
]
# Why an agent stopped being rung for a call.
RingEndReason: TypeAlias = Literal[
    "no_answer",  # AgentRingNoAnswer: the ring timeout, a busy or rejecting phone
    "caller_abandoned",  # the citizen hung up while waiting (QueueCallerAbandon)
    "answered_elsewhere",  # another member took the call (AgentConnect of someone else)
    "caller_left",  # the call left the queue unanswered (timeout, empty queue) or vanished
]
# How a queued call ended, decided when the citizen's channel hangs up.
CallEndReason: TypeAlias = Literal[
    "completed",  # an agent answered (and possibly transferred) it
    "abandoned",  # the citizen hung up while waiting
    "unanswered",  # it left the queue without an answer (Queue() timeout, overflow)
    "lost",  # it vanished while Guichet was disconnected from Asterisk
]
TransferKind: TypeAlias = Literal["blind", "attended"]


@dataclass(frozen=True, kw_only=True)
class AgentRef:
    """A queue member: `interface` is what Asterisk dials (Local/agent1@agents), `name` the
    member name, `state_interface` the phone whose device state Asterisk watches."""

    interface: str
    name: str
    state_interface: str | None = None

    @property
    def id(self) -> str:
        """The site's agent id: `Local/agent1@agents` and `PJSIP/agent1` both give `agent1`."""
        return agent_id(self.interface)


def agent_id(interface: str) -> str:
    tech, _, rest = interface.partition("/")
    if not rest:
        return interface
    return rest.split("@", 1)[0] if tech.lower() == "local" else rest


@dataclass(frozen=True, kw_only=True)
class Event:
    at: float
    resync: bool = False  # derived from a state rebuild after (re)connecting, not a live event


@dataclass(frozen=True, kw_only=True)
class CallEvent(Event):
    """About one citizen call; every call event carries the same correlation ids."""

    call_id: str
    linked_id: str
    channel: str  # the citizen's channel, e.g. Local/022791111@from-citizen-00000000;2
    case_id: str | None = None
    lang: str | None = None
    request_type: str | None = None
    queue: str | None = None


@dataclass(frozen=True, kw_only=True)
class CallQueued(CallEvent):
    position: int | None = None
    caller_number: str | None = None
    caller_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class AgentRinging(CallEvent):
    agent: AgentRef
    agent_channel: str  # the member leg, e.g. Local/agent1@agents-00000001;1


@dataclass(frozen=True, kw_only=True)
class RingWithdrawn(CallEvent):
    agent: AgentRef
    agent_channel: str
    reason: RingEndReason
    ring_time: float | None = None  # seconds (AgentRingNoAnswer gives milliseconds)


@dataclass(frozen=True, kw_only=True)
class CallAnswered(CallEvent):
    agent: AgentRef
    agent_channel: str
    hold_time: float | None = None  # seconds waited in this queue
    ring_time: float | None = None  # seconds the answering agent's phone rang


@dataclass(frozen=True, kw_only=True)
class CallHoldChanged(CallEvent):
    """Hold music started or stopped for an answered citizen (the agent's phone put it on
    hold, or an attended transfer is consulting)."""

    held: bool


@dataclass(frozen=True, kw_only=True)
class CallTransferred(CallEvent):
    kind: TransferKind
    success: bool
    agent: AgentRef | None = None  # the transferring agent, when it was a queue member leg
    transferer_channel: str | None = None
    target: str | None = None  # `exten@context` (blind) or the target's channel (attended)


@dataclass(frozen=True, kw_only=True)
class CallEnded(CallEvent):
    reason: CallEndReason
    agent: AgentRef | None = None  # the last agent who talked to the citizen
    ended_by: str | None = None  # AgentComplete's Reason: caller, agent or transfer
    hold_time: float | None = None
    talk_time: float | None = None
    cause: int | None = None  # Q.850 cause of the citizen's hangup
    cause_text: str | None = None


@dataclass(frozen=True, kw_only=True)
class AgentStateChanged(Event):
    """The agent's state as Guichet derives it; `previous` is None the first time."""

    agent: AgentRef
    state: AgentStatus
    previous: AgentStatus | None = None
    pause_reason: str | None = None
    call_id: str | None = None  # the call it rings for or talks to, when there is one
    queues: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AgentQueuesChanged(Event):
    """The queues an agent is a member of, with their skill penalty (lower is rung first):
    after QueueAdd / QueueRemove / QueuePenalty, or what a rebuild found."""

    agent: AgentRef
    penalties: dict[str, int] = field(default_factory=dict)  # queue -> penalty


@dataclass(frozen=True, kw_only=True)
class QueueStatsChanged(Event):
    """Counts for a wallboard, from Guichet's own call and agent tracking (QueueSummary's
    `Available` counts an agent on a Local-channel call as available)."""

    queue: str
    waiting: int
    longest_waiting_since: float | None
    members: int
    available: int
    on_call: int
    paused: int


@dataclass(frozen=True, kw_only=True)
class SpyEvent(Event):
    """A supervisor's ChanSpy leg on an agent's channel. `spy_channel` is the supervisor's
    channel (PJSIP/sup1-00000000: what to hang up to stop), `spied_channel` the agent's
    member leg. The call ids are those of the queue call that leg is connected to, when the
    CTI knows one (None for a spied channel outside the queues)."""

    spy_channel: str
    spy_uniqueid: str | None = None
    spied_channel: str
    spied_uniqueid: str | None = None
    call_id: str | None = None
    linked_id: str | None = None
    case_id: str | None = None
    agent: AgentRef | None = None


@dataclass(frozen=True, kw_only=True)
class SpyStarted(SpyEvent):
    """ChanSpyStart: the supervisor hears the call (and maybe talks, per the spy mode)."""


@dataclass(frozen=True, kw_only=True)
class SpyStopped(SpyEvent):
    """ChanSpyStop, or the spy leg hung up (or vanished while Guichet was away)."""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        CallQueued,
        AgentRinging,
        RingWithdrawn,
        CallAnswered,
        CallHoldChanged,
        CallTransferred,
        CallEnded,
        AgentStateChanged,
        AgentQueuesChanged,
        QueueStatsChanged,
        SpyStarted,
        SpyStopped,
    )
}


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(cls: type[Event]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls.__name__)
    if adapter is None:
        adapter = _ADAPTERS[cls.__name__] = TypeAdapter(cls)
    return adapter


def to_dict(event: Event) -> dict[str, Any]:
    """`{"type": "CallQueued", ...fields}`: JSON-ready, nested AgentRef as an object."""
    data: dict[str, Any] = _adapter(type(event)).dump_python(event, mode="json")
    return {"type": type(event).__name__, **data}


def to_json(event: Event) -> str:
    return json.dumps(to_dict(event), separators=(",", ":"))


def from_dict(data: dict[str, Any]) -> Event:
    """The inverse of `to_dict`; unknown event types or fields are a ValueError."""
    body = dict(data)
    name = body.pop("type", None)
    cls = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown CTI event type {name!r}")
    known = {f.name for f in fields(cls)}
    extra = set(body) - known
    if extra:
        raise ValueError(f"{name}: unknown fields {sorted(extra)}")
    event: Event = _adapter(cls).validate_python(body)
    return event


def from_json(text: str | bytes) -> Event:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("a CTI event is a JSON object")
    return from_dict(data)
