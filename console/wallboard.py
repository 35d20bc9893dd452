"""The live wallboard: CTI events in, figures pushed to every supervisor's console.

`cti.wallboard.WallboardModel` computes; this service feeds it from the bus, seeds today's
counters from the stored queue calls (a restart keeps the day), adds what the CTI cannot
know (calls in the IVR now, deflection per request type today, pending callbacks, the
console user behind each agent) and pushes each changed row at once to the topic
``role:supervisor`` — no batching window, since the figure on screen is what a supervisor
acts on. Pushes:

* ``wallboard.queue`` / ``wallboard.agent``: one row (see `QueueFigures.to_dict`,
  `AgentFigures.to_dict`; agent rows carry ``user_id`` and ``display_name`` too);
* ``wallboard.ivr``: ``{in_ivr, deflection: [{request_type, calls, deflected, rate}],
  callbacks_pending}``;
* ``wallboard.sample``: a chart point ``{at, waiting, service_level}``;
* ``wallboard.reset``: a new day began: the whole snapshot.

A page loads the snapshot from ``GET /api/wallboard`` and then follows the pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from console.push import PushHub
from crm_bridge.kpi import day_series, totals_since
from crm_bridge.models import CALLBACK_PENDING, CallbackRecord
from crm_bridge.report import ivr_report
from crm_bridge.users import UserService, UserView
from cti.bus import EventBus, Subscription, consume
from cti.events import Event, agent_id
from cti.wallboard import BRUSSELS, DEFAULT_THRESHOLD, Row, Sample, WallboardModel

log = logging.getLogger("guichet.console.wallboard")

SUPERVISORS = "supervisor"


class Wallboard:
    def __init__(
        self,
        *,
        bus: EventBus,
        hub: PushHub,
        engine: AsyncEngine,
        users: UserService,
        threshold: float = DEFAULT_THRESHOLD,
        tz: ZoneInfo = BRUSSELS,
        clock: Callable[[], float] = time.time,
        ivr_calls: Callable[[], int] | None = None,
        refresh_interval: float = 15.0,
        sample_interval: float = 60.0,
    ) -> None:
        self.bus, self.hub, self.engine, self.users = bus, hub, engine, users
        self.clock, self.tz = clock, tz
        self.model = WallboardModel(
            threshold=threshold, tz=tz, day=datetime.fromtimestamp(clock(), tz).date()
        )
        self.ivr_calls = ivr_calls
        self.refresh_interval, self.sample_interval = refresh_interval, sample_interval
        self.in_ivr = 0
        self.deflection: list[dict[str, Any]] = []
        self.callbacks_pending = 0
        self._people: dict[str, UserView] = {}  # agent id -> console user
        self._dirty: set[Row] = set()  # rows changed since the last flush
        self._shown_states: dict[str, tuple[str, str | None] | None] = {}  # agent -> published
        self._flush_handle: asyncio.Handle | None = None
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pushed = 0

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe first (no event is missed), then seed today's counters and figures."""
        self._sub = self.bus.subscribe()
        try:
            await self._seed()
            await self.refresh()
        except Exception:  # a database away at start: live figures still work
            log.exception("wallboard: today's stored figures could not be read")
        self.model.sample(self.clock())  # the charts start from now, not a minute later
        self._tasks = [
            asyncio.create_task(
                consume(self._sub, self.handle, "wallboard"), name="wallboard-events"
            ),
            asyncio.create_task(self._ticker(), name="wallboard-ticker"),
        ]

    async def stop(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._sub is not None:
            self._sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _midnight(self) -> datetime:
        return datetime.combine(self.model.day, dtime(0), self.tz)

    async def _seed(self) -> None:
        totals = await totals_since(self.engine, self._midnight(), self.model.threshold)
        for queue, q in totals.queues.items():
            self.model.seed_queue(
                queue,
                answered=q.answered,
                abandoned=q.abandoned,
                unanswered=q.unanswered,
                answered_in_sl=q.answered_within,
                hold_answered=q.hold_answered,
                talk=q.talk,
                talked=q.talked,
            )
        for agent, a in totals.agents.items():
            self.model.seed_agent(agent, handled=a.handled, talk=a.talk, talked=a.talked)
        now = datetime.fromtimestamp(self.clock(), self.tz)
        points = await day_series(
            self.engine, self._midnight(), now, threshold=self.model.threshold
        )
        self.model.series = [Sample(p.at.timestamp(), p.waiting, p.service_level) for p in points]

    # --- events ---------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        self._roll(event.at)
        self.push(self.model.apply(event))

    def push(self, rows: set[Row]) -> None:
        """Publish the rows' new figures. An agent's change of state goes out at once (every
        transition is shown, ringing included). Counters are sent once per pass of the event
        loop with their latest values: one AMI event often moves the same row several times
        (an answer changes the queue's counts, then its stats), and each frame costs every
        supervisor's socket."""
        for kind, key in sorted(rows):
            if kind == "agent" and self._transition(key):
                self._dirty.discard((kind, key))
                self._publish(kind, key)
            else:
                self._dirty.add((kind, key))
        if self._dirty and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _transition(self, agent: str) -> bool:
        figures = self.model.agents.get(agent)
        state = (figures.state, figures.call_id) if figures else None
        if self._shown_states.get(agent) == state:
            return False
        self._shown_states[agent] = state
        return True

    def _flush(self) -> None:
        self._flush_handle = None
        rows, self._dirty = self._dirty, set()
        for kind, key in sorted(rows):
            self._publish(kind, key)

    def _publish(self, kind: str, key: str) -> None:
        data = self.model.row(kind, key)
        if data is None:
            return
        if kind == "agent":
            data = self._decorate(data)
        self.hub.publish_role(SUPERVISORS, f"wallboard.{kind}", data)
        self.pushed += 1

    def _decorate(self, row: dict[str, Any]) -> dict[str, Any]:
        user = self._people.get(row["agent"])
        row["user_id"] = user.id if user else None
        row["display_name"] = user.display_name if user else row["name"]
        return row

    def _roll(self, at: float) -> None:
        if self.model.roll(self.model.local_day(at)):
            self.hub.publish_role(SUPERVISORS, "wallboard.reset", self.snapshot())

    # --- what the CTI does not know -------------------------------------------------------

    async def _ticker(self) -> None:
        """Each second: calls in the IVR; each sample interval a chart point; each refresh
        interval the stored figures (deflection, callbacks, console users)."""
        last_sample = last_refresh = self.clock()
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            try:
                self._roll(now)
                if self.ivr_calls is not None:
                    count = self.ivr_calls()
                    if count != self.in_ivr:
                        self.in_ivr = count
                        self._push_ivr()
                if now - last_sample >= self.sample_interval:
                    last_sample = now
                    point = self.model.sample(now)
                    self.hub.publish_role(
                        SUPERVISORS,
                        "wallboard.sample",
                        {
                            "at": point.at,
                            "waiting": point.waiting,
                            "service_level": point.service_level,
                        },
                    )
                if now - last_refresh >= self.refresh_interval:
                    last_refresh = now
                    await self.refresh()
            except Exception:
                log.exception("wallboard refresh failed")

    async def refresh(self) -> None:
        """Re-read what lives in the database: deflection today, callbacks, users."""
        report = await ivr_report(self.engine, self._midnight())
        self.deflection = [
            {
                "request_type": s.request_type,
                "calls": s.calls,
                "deflected": s.deflected,
                "rate": s.deflection_rate,
            }
            for s in report.request_types
        ]
        pending = await self._callbacks()
        self.callbacks_pending = sum(pending.values())
        queues = {f"{rt}-{lang}": n for (rt, lang), n in pending.items() if rt is not None and lang}
        self.push(self.model.set_callbacks(queues))
        users = await self.users.list_users()
        people = {agent_id(u.interface): u for u in users if u.interface and u.active}
        if people != self._people:
            self._people = people
            self.push({("agent", a) for a in self.model.agents})
        self._push_ivr()

    async def _callbacks(self) -> dict[tuple[str | None, str | None], int]:
        query = (
            select(col(CallbackRecord.request_type), col(CallbackRecord.lang), func.count())
            .where(col(CallbackRecord.status) == CALLBACK_PENDING)
            .group_by(col(CallbackRecord.request_type), col(CallbackRecord.lang))
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(rt, lang): int(n) for rt, lang, n in rows}

    def ivr(self) -> dict[str, Any]:
        return {
            "in_ivr": self.in_ivr,
            "deflection": self.deflection,
            "callbacks_pending": self.callbacks_pending,
        }

    def _push_ivr(self) -> None:
        self.hub.publish_role(SUPERVISORS, "wallboard.ivr", self.ivr())

    def snapshot(self) -> dict[str, Any]:
        data = self.model.snapshot()
        data["agents"] = [self._decorate(row) for row in data["agents"]]
        data["ivr"] = self.ivr()
        return data
