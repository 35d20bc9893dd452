"""Screen-pop: CTI events become pushes on the console of the agent whose phone rings.

The pop is prepared when the call joins the queue (case, citizen, history, articles), so when
Asterisk rings an agent only the push is left to do: the pop reaches the screen before the
agent picks up. Only the ringing agent receives it; every tab of that agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from console.push import PushHub
from crm_bridge.audit import AuditLog, Subject
from crm_bridge.buffered import BufferedCrm
from crm_bridge.case_facts import CaseView
from crm_bridge.cases import CaseService
from crm_bridge.db import session_factory
from crm_bridge.knowledge import KnowledgeBase
from crm_bridge.models import Citizen
from crm_bridge.outbox import CaseOutbox
from crm_bridge.store import SqlCrm
from crm_bridge.users import UserService, UserView
from cti.bus import EventBus, Subscription, consume
from cti.events import (
    AgentRef,
    AgentRinging,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallHoldChanged,
    CallQueued,
    Event,
    RingWithdrawn,
    agent_id,
)

log = logging.getLogger("guichet.console.pop")

# Audit action for a citizen's summary shown in a pop (the agent did not ask to open it).
CITIZEN_SHOWN = "citizen.shown"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class ScreenPop:
    """Subscribes to the CTI bus and pushes `screen_pop`, `pop_withdrawn`, `call_answered`,
    `call_held`, `call_ended` and `agent_state` to the agent concerned."""

    def __init__(
        self,
        *,
        bus: EventBus,
        hub: PushHub,
        users: UserService,
        cases: CaseService,
        knowledge: KnowledgeBase,
        audit: AuditLog,
        crm: SqlCrm,
        journeys: BufferedCrm | None = None,
        outbox: CaseOutbox | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus, self.hub, self.users, self.cases = bus, hub, users, cases
        self.knowledge, self.audit, self.crm, self.outbox = knowledge, audit, crm, outbox
        self.clock = clock
        # Journeys are written off the call path: ask the writer first, it knows queued ones.
        self._journeys: BufferedCrm | SqlCrm = journeys or crm
        self._engine: AsyncEngine = crm.engine
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._prepared: dict[str, asyncio.Task[dict[str, Any]]] = {}  # call id -> pop data
        self._queued_at: dict[str, float] = {}
        self._agents: dict[str, UserView] = {}  # agent id (agent1) -> console user
        self._talking: dict[str, int] = {}  # call id -> user id of the agent on it
        self._writes: set[asyncio.Task[None]] = (
            set()
        )  # audit rows and assignments, off the pop path
        self.pushed = 0

    async def start(self) -> None:
        self._sub = self.bus.subscribe()
        self._task = asyncio.create_task(
            consume(self._sub, self.handle, "screen-pop"), name="screen-pop"
        )

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in self._prepared.values():
            task.cancel()
        await self.drain()

    async def handle(self, event: Event) -> None:
        if isinstance(event, CallQueued):
            self._queued_at.setdefault(event.call_id, event.at)
            self._prepare(event)
        elif isinstance(event, AgentRinging):
            await self._ringing(event)
        elif isinstance(event, RingWithdrawn):
            await self._push_agent(
                event.agent, "pop_withdrawn", {"call_id": event.call_id, "reason": event.reason}
            )
        elif isinstance(event, CallAnswered):
            await self._answered(event)
        elif isinstance(event, CallHoldChanged):
            if (user_id := self._talking.get(event.call_id)) is not None:
                self.hub.publish(
                    user_id, "call_held", {"call_id": event.call_id, "held": event.held}
                )
        elif isinstance(event, CallEnded):
            await self._ended(event)
        elif isinstance(event, AgentStateChanged):
            await self._push_agent(
                event.agent,
                "agent_state",
                {
                    "state": event.state,
                    "pause_reason": event.pause_reason,
                    "since": event.at,
                    "call_id": event.call_id,
                    "queues": list(event.queues),
                },
            )

    # --- agents -------------------------------------------------------------------------

    async def user_for(self, agent: AgentRef) -> UserView | None:
        """The console user behind a queue member: `Local/agent1@agents` and a user whose
        interface is `PJSIP/agent1` are the same agent."""
        key = agent.id
        if key not in self._agents:
            for user in await self.users.list_users():
                if user.interface and user.active:
                    self._agents[agent_id(user.interface)] = user
        return self._agents.get(key)

    async def _push_agent(self, agent: AgentRef, kind: str, data: dict[str, Any]) -> None:
        user = await self.user_for(agent)
        if user is not None:
            self.hub.publish(user.id, kind, data)
            self.pushed += 1

    # --- the pop ------------------------------------------------------------------------

    def _prepare(self, event: CallEvent) -> asyncio.Task[dict[str, Any]]:
        task = self._prepared.get(event.call_id)
        if task is None:
            task = asyncio.create_task(self._build(event), name=f"pop-{event.call_id}")
            self._prepared[event.call_id] = task
        return task

    async def _ringing(self, event: AgentRinging) -> None:
        user = await self.user_for(event.agent)
        if user is None:
            log.warning("call %s rings %s, who is no console user", event.call_id, event.agent.id)
            return
        data = dict(await self._prepare(event))
        queued = self._queued_at.get(event.call_id, event.at)
        data.update(
            call_id=event.call_id, ringing_since=event.at, agent_channel=event.agent_channel
        )
        if data.get("case"):
            data["case"] = {**data["case"], "wait_seconds": round(event.at - queued, 1)}
        self.hub.publish(user.id, "screen_pop", data)
        self.pushed += 1
        citizen = data.get("citizen")
        if citizen:
            reason = (data.get("case") or {}).get("reference") or f"call {event.call_id}"
            self._write(
                self.audit.record(user, CITIZEN_SHOWN, Subject.citizen(citizen["id"]), reason)
            )

    async def _build(self, event: CallEvent) -> dict[str, Any]:
        """Everything the agent sees, gathered once per call while it waits in the queue."""
        case = await self._case(event)
        lang = (case or {}).get("language") or event.lang or "fr"
        category = (case or {}).get("category") or event.request_type
        citizen_id = (case or {}).get("citizen_id")
        journey = await self._journeys.get_journey(event.call_id)
        articles = await self.knowledge.for_request_type(category, lang) if category else []
        return {
            "case": case,
            "citizen": await self._citizen(citizen_id) if citizen_id else None,
            "ivr_path": [step.node for step in journey.steps] if journey else [],
            "articles": [_jsonable(asdict(a)) for a in articles],
        }

    async def _case(self, event: CallEvent) -> dict[str, Any] | None:
        reference = event.case_id
        if not reference:
            return None
        # Pending first: a case leaves the outbox only once written, so asking in this order
        # never misses one that is written between the two questions.
        facts = self.outbox.pending_case(reference) if self.outbox is not None else None
        view: CaseView | None = None if facts else await self.cases.get_case(reference)
        if view is not None:
            data: dict[str, Any] = _jsonable(asdict(view))
            data["reference"] = reference
        elif facts is not None:
            # The store has not answered yet: the pop shows what the IVR handed over.
            data = {
                "reference": reference,
                "status": "new",
                "language": facts.lang,
                "category": facts.request_type,
                "queue": facts.queue,
                "priority": facts.priority,
                "caller": facts.caller,
                "citizen_id": facts.citizen_id,
                "pending": True,
            }
        else:
            data = {
                "reference": reference,
                "status": "new",
                "language": event.lang,
                "category": event.request_type,
                "queue": event.queue,
                "pending": True,
            }
        data.setdefault("ivr_path", [])
        return data

    async def _citizen(self, citizen_id: int) -> dict[str, Any] | None:
        async with session_factory(self._engine)() as session:
            row = (await session.exec(select(Citizen).where(Citizen.id == citizen_id))).first()
        if row is None:
            return None
        return {
            "id": row.id,
            "first_name": row.first_name,
            "last_name": row.last_name,
            "preferred_language": row.preferred_language,
            "address": row.address,
            "open_cases": [
                _jsonable(asdict(c)) for c in await self.cases.open_cases_of_citizen(citizen_id)
            ],
            "last_interactions": [
                _jsonable(asdict(i))
                for i in await self.cases.last_interactions_of_citizen(citizen_id, 5)
            ],
        }

    # --- after the pop ------------------------------------------------------------------

    async def _answered(self, event: CallAnswered) -> None:
        user = await self.user_for(event.agent)
        if user is None:
            return
        self._talking[event.call_id] = user.id
        reference = event.case_id
        self.hub.publish(
            user.id,
            "call_answered",
            {
                "call_id": event.call_id,
                "case_reference": reference,
                "agent_channel": event.agent_channel,
            },
        )
        if reference:
            self._write(self._assign(event.call_id, reference, user.id))

    async def _assign(self, call_id: str, reference: str, user_id: int) -> None:
        try:
            await self.cases.assign(reference, user_id)
        except Exception as exc:  # not written yet, or closed: the agent sees the call anyway
            log.warning(
                "call %s: case %s not assigned (%s)", call_id, reference, type(exc).__name__
            )

    def _write(self, work: Coroutine[Any, Any, object]) -> None:
        """A database write the agent's screen must not wait for."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("screen-pop: background write failed")

        task = asyncio.create_task(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for the background writes (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _ended(self, event: CallEnded) -> None:
        self._queued_at.pop(event.call_id, None)
        task = self._prepared.pop(event.call_id, None)
        if task is not None and not task.done():
            task.cancel()
        user_id = self._talking.pop(event.call_id, None)
        if user_id is None and event.agent is not None:
            user = await self.user_for(event.agent)
            user_id = user.id if user else None
        if user_id is not None:
            self.hub.publish(
                user_id,
                "call_ended",
                {"call_id": event.call_id, "case_reference": event.case_id, "reason": event.reason},
            )
