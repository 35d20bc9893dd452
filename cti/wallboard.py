"""The supervisor wallboard's figures, from CTI domain events.

Pure like `cti.state.CtiState`: no I/O and no clock of its own (`at` comes with each event),
so a recording replays to the same figures every time. `apply()` returns what changed, so
the console pushes only those rows.

Definitions (the reports in `crm_bridge.kpi` use the same ones):

* offered = answered + abandoned + unanswered (left the queue unanswered, or lost while
  Guichet was away); calls still waiting are not offered yet.
* service level = answered within the threshold (hold time <= threshold) / offered.
* abandon rate = abandoned / offered; ASA = mean hold time of answered calls; AHT = mean
  talk time of completed calls.
* "today" is the local day of `tz` (Europe/Brussels); `roll()` starts a new one.

A call answered by a queue counts once for that queue (an answer replayed after a reconnect
does not count twice); counters move when the answer or the end happens, so figures are
live, not computed after the fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from crm_bridge.kpi import rate
from cti.events import (
    AgentQueuesChanged,
    AgentRef,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallQueued,
    Event,
    QueueStatsChanged,
)

BRUSSELS = ZoneInfo("Europe/Brussels")
DEFAULT_THRESHOLD = 20.0  # seconds: "answered within 20 s" is the usual public-sector target
LANGS = ("fr", "nl", "en", "de")
ENDED_MEMORY = 10_000  # ended call ids kept, so a late duplicate answer is not counted
Row = tuple[Literal["queue", "agent"], str]


def split_queue(queue: str) -> tuple[str, str | None]:
    """``population-nl`` -> (``population``, ``nl``): Guichet's queues are
    ``<service>-<lang>`` (the flows' `{request_type}-{lang}`); others have no language."""
    service, _, lang = queue.rpartition("-")
    return (service, lang) if service and lang in LANGS else (queue, None)


@dataclass
class QueueFigures:
    queue: str
    waiting: int = 0
    longest_waiting_since: float | None = None
    members: int = 0
    available: int = 0
    on_call: int = 0
    paused: int = 0
    answered: int = 0
    abandoned: int = 0
    unanswered: int = 0
    answered_in_sl: int = 0
    hold_answered: float = 0.0  # seconds, summed over answered calls
    talk: float = 0.0  # seconds, summed over completed calls with a talk time
    talked: int = 0
    callbacks_pending: int = 0

    @property
    def offered(self) -> int:
        return self.answered + self.abandoned + self.unanswered

    def to_dict(self, threshold: float) -> dict[str, Any]:
        service, lang = split_queue(self.queue)
        return {
            "queue": self.queue,
            "service": service,
            "lang": lang,
            "waiting": self.waiting,
            "longest_waiting_since": self.longest_waiting_since,
            "members": self.members,
            "available": self.available,
            "on_call": self.on_call,
            "paused": self.paused,
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "unanswered": self.unanswered,
            "answered_in_sl": self.answered_in_sl,
            "service_level": rate(self.answered_in_sl, self.offered),
            "abandon_rate": rate(self.abandoned, self.offered),
            "asa": rate(self.hold_answered, self.answered),
            "aht": rate(self.talk, self.talked),
            "callbacks_pending": self.callbacks_pending,
            "threshold": threshold,
        }


@dataclass
class AgentFigures:
    agent: str  # the site's agent id (agent1)
    name: str
    interface: str
    state: str = "logged_out"
    since: float | None = None  # when the current state began
    pause_reason: str | None = None
    call_id: str | None = None
    caller: str | None = None  # the citizen's number while ringing or on a queue call
    call_queue: str | None = None
    queues: tuple[str, ...] = ()
    penalties: dict[str, int] = field(default_factory=dict)
    handled: int = 0
    talk: float = 0.0
    talked: int = 0

    def to_dict(self) -> dict[str, Any]:
        services = sorted({split_queue(q)[0] for q in self.queues})
        langs = sorted({lang for q in self.queues if (lang := split_queue(q)[1])})
        return {
            "agent": self.agent,
            "name": self.name,
            "interface": self.interface,
            "state": self.state,
            "since": self.since,
            "pause_reason": self.pause_reason,
            "call_id": self.call_id,
            "caller": self.caller,
            "call_queue": self.call_queue,
            "queues": list(self.queues),
            "penalties": dict(self.penalties),
            "services": services,
            "langs": langs,
            "handled": self.handled,
            "aht": rate(self.talk, self.talked),
        }


@dataclass
class _Call:
    queue: str | None
    caller: str | None
    queued_at: float
    answered_in: set[str] = field(default_factory=set)  # queues whose answer was counted


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the day's charts: calls waiting (the most seen since the last point) and
    the service level so far today."""

    at: float
    waiting: int
    service_level: float | None


class WallboardModel:
    def __init__(
        self, *, threshold: float = DEFAULT_THRESHOLD, tz: ZoneInfo = BRUSSELS, day: date
    ) -> None:
        self.threshold = threshold
        self.tz = tz
        self.day = day
        self.queues: dict[str, QueueFigures] = {}
        self.agents: dict[str, AgentFigures] = {}
        self.series: list[Sample] = []
        self._calls: dict[str, _Call] = {}
        self._ended_ids: dict[str, None] = {}  # insertion-ordered, bounded
        self._peak_waiting = 0

    # --- input ----------------------------------------------------------------------------

    def apply(self, event: Event) -> set[Row]:
        """Fold one CTI event in; the rows whose figures changed."""
        if isinstance(event, QueueStatsChanged):
            return self._queue_stats(event)
        if isinstance(event, AgentStateChanged):
            return self._agent_state(event)
        if isinstance(event, AgentQueuesChanged):
            a = self._agent(event.agent)
            a.penalties = dict(event.penalties)
            a.queues = tuple(sorted(event.penalties))
            return {("agent", a.agent)}
        if isinstance(event, CallQueued):
            call = self._calls.get(event.call_id)
            if call is None:
                self._calls[event.call_id] = _Call(event.queue, event.caller_number, event.at)
            else:
                call.queue = event.queue or call.queue
            return set()
        if isinstance(event, CallAnswered):
            return self._answered(event)
        if isinstance(event, CallEnded):
            return self._ended(event)
        return set()

    def seed_queue(
        self,
        queue: str,
        *,
        answered: int,
        abandoned: int,
        unanswered: int,
        answered_in_sl: int,
        hold_answered: float,
        talk: float,
        talked: int,
    ) -> None:
        """Today's counts so far, from the stored queue calls (a restart keeps the day)."""
        q = self._queue(queue)
        q.answered, q.abandoned, q.unanswered = answered, abandoned, unanswered
        q.answered_in_sl, q.hold_answered = answered_in_sl, hold_answered
        q.talk, q.talked = talk, talked

    def seed_agent(self, agent: str, *, handled: int, talk: float, talked: int) -> None:
        a = self.agents.get(agent)
        if a is None:
            a = self.agents[agent] = AgentFigures(agent=agent, name=agent, interface="")
        a.handled, a.talk, a.talked = handled, talk, talked

    def set_callbacks(self, pending: Mapping[str, int]) -> set[Row]:
        """Pending callbacks per queue name; queues not named have none."""
        changed: set[Row] = set()
        for name in set(pending) | {q for q, f in self.queues.items() if f.callbacks_pending}:
            q = self._queue(name)
            count = pending.get(name, 0)
            if q.callbacks_pending != count:
                q.callbacks_pending = count
                changed.add(("queue", name))
        return changed

    def roll(self, day: date) -> bool:
        """A new local day: today's counters and the charts start again (live states stay)."""
        if day == self.day:
            return False
        self.day = day
        for q in self.queues.values():
            q.answered = q.abandoned = q.unanswered = q.answered_in_sl = q.talked = 0
            q.hold_answered = q.talk = 0.0
        for a in self.agents.values():
            a.handled = a.talked = 0
            a.talk = 0.0
        self.series = []
        return True

    def local_day(self, at: float) -> date:
        return datetime.fromtimestamp(at, self.tz).date()

    def sample(self, at: float) -> Sample:
        """Close a chart point: the peak of calls waiting since the last one, SL so far."""
        waiting = sum(q.waiting for q in self.queues.values())
        point = Sample(at, max(self._peak_waiting, waiting), self.service_level())
        self.series.append(point)
        self._peak_waiting = waiting
        return point

    # --- output ---------------------------------------------------------------------------

    def service_level(self) -> float | None:
        offered = sum(q.offered for q in self.queues.values())
        return rate(sum(q.answered_in_sl for q in self.queues.values()), offered)

    def row(self, kind: str, key: str) -> dict[str, Any] | None:
        if kind == "queue":
            q = self.queues.get(key)
            return q.to_dict(self.threshold) if q else None
        a = self.agents.get(key)
        return a.to_dict() if a else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "threshold": self.threshold,
            "queues": [q.to_dict(self.threshold) for _, q in sorted(self.queues.items())],
            "agents": [a.to_dict() for _, a in sorted(self.agents.items())],
            "series": [
                {"at": s.at, "waiting": s.waiting, "service_level": s.service_level}
                for s in self.series
            ],
        }

    # --- handlers -------------------------------------------------------------------------

    def _queue(self, name: str) -> QueueFigures:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = QueueFigures(name)
        return q

    def _queue_stats(self, e: QueueStatsChanged) -> set[Row]:
        q = self._queue(e.queue)
        q.waiting, q.longest_waiting_since = e.waiting, e.longest_waiting_since
        q.members, q.available, q.on_call, q.paused = e.members, e.available, e.on_call, e.paused
        self._peak_waiting = max(self._peak_waiting, sum(x.waiting for x in self.queues.values()))
        return {("queue", e.queue)}

    def _agent(self, ref: AgentRef) -> AgentFigures:
        a = self.agents.get(ref.id)
        if a is None:
            a = self.agents[ref.id] = AgentFigures(agent=ref.id, name=ref.name, interface="")
        a.name, a.interface = ref.name or a.name, ref.interface
        return a

    def _agent_state(self, e: AgentStateChanged) -> set[Row]:
        ref = e.agent
        a = self._agent(ref)
        if a.state != e.state or a.since is None:
            a.since = e.at
        a.state, a.pause_reason, a.queues = e.state, e.pause_reason, e.queues
        a.call_id = e.call_id
        call = self._calls.get(e.call_id) if e.call_id else None
        a.caller = call.caller if call else None
        a.call_queue = call.queue if call else None
        return {("agent", ref.id)}

    def _answered(self, e: CallAnswered) -> set[Row]:
        if e.call_id in self._ended_ids:
            return set()
        call = self._calls.get(e.call_id)
        if call is None:
            call = self._calls[e.call_id] = _Call(e.queue, None, e.at)
        queue = e.queue or call.queue
        if queue is None or queue in call.answered_in:
            return set()
        call.answered_in.add(queue)
        hold = e.hold_time if e.hold_time is not None else max(0.0, e.at - call.queued_at)
        q = self._queue(queue)
        q.answered += 1
        q.hold_answered += hold
        if hold <= self.threshold:
            q.answered_in_sl += 1
        changed: set[Row] = {("queue", queue)}
        agent = self.agents.get(e.agent.id)
        if agent is not None:
            agent.handled += 1
            agent.caller, agent.call_queue = call.caller, queue
            changed.add(("agent", agent.agent))
        return changed

    def _ended(self, e: CallEnded) -> set[Row]:
        if e.call_id in self._ended_ids:
            return set()
        self._ended_ids[e.call_id] = None
        if len(self._ended_ids) > ENDED_MEMORY:
            del self._ended_ids[next(iter(self._ended_ids))]
        call = self._calls.pop(e.call_id, None)
        queue = e.queue or (call.queue if call else None)
        if queue is None:
            return set()
        q = self._queue(queue)
        changed: set[Row] = {("queue", queue)}
        if e.reason == "abandoned":
            q.abandoned += 1
        elif e.reason in ("unanswered", "lost"):
            q.unanswered += 1
        elif e.talk_time is not None:
            q.talk += e.talk_time
            q.talked += 1
            agent = self.agents.get(e.agent.id) if e.agent else None
            if agent is not None:
                agent.talk += e.talk_time
                agent.talked += 1
                changed.add(("agent", agent.agent))
        return changed

    def forget_calls(self, live: Iterable[str]) -> None:
        """Drop calls the CTI no longer knows (a missed end): keeps memory bounded."""
        keep = set(live)
        for call_id in [c for c in self._calls if c not in keep]:
            del self._calls[call_id]
