"""The CTI runtime: AMI events in, domain events out on the bus.

It feeds the events `CtiState` reads to it, publishes what it returns, rebuilds the state
after every login from `CoreShowChannels`, `QueueStatus` and `QueueSummary` (so calls that
started, were answered or ended while Guichet was disconnected are not lost), and ends
wrap-ups when their time is up (Asterisk sends no event for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from cti.ami import AmiClient, AmiError, AmiMessage, ConnectionState
from cti.bus import EventBus
from cti.events import Event
from cti.leader import AlwaysLeader, Leader
from cti.snapshot import Snapshot
from cti.state import EVENTS, VARSET_FILTER, CtiState

log = logging.getLogger("guichet.cti")

Clock = Callable[[], float]


class CtiBridge:
    def __init__(
        self,
        client: AmiClient,
        bus: EventBus,
        *,
        state: CtiState | None = None,
        clock: Clock = time.time,
        leader: Leader | None = None,
    ) -> None:
        self.client = client
        self.bus = bus
        # With several nodes on one Redis bus only the lease holder publishes (cti/leader.py);
        # every node still keeps its own state up to date.
        self.leader: Leader = leader or AlwaysLeader()
        self.state = state or CtiState()
        self.clock = clock
        self._outbox: asyncio.Queue[Event] = asyncio.Queue()
        self._buffer: list[AmiMessage] | None = None  # live events held during a rebuild
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None
        self._rebuilding = False
        self.resyncs = 0
        self.resynced = asyncio.Event()  # set after each completed rebuild

    async def start(self) -> None:
        """Subscribe before the client connects, so the first login triggers a rebuild."""
        self._publisher = asyncio.create_task(self._publish_loop(), name="cti-publish")
        self._unsubscribe = [
            self.client.subscribe(self._on_message, EVENTS),
            self.client.subscribe(self._on_message, ["VarSet"], contains=VARSET_FILTER),
            self.client.on_state(self._on_state),
        ]
        if self.client.ready:
            self._spawn(self.resync())

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._outbox.join()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    # --- AMI side ---

    def _on_message(self, message: AmiMessage) -> None:
        if self._buffer is not None:
            self._buffer.append(message)
            return
        self._emit(self.state.apply(message.headers, self.clock()))

    def _on_state(self, state: ConnectionState, detail: str) -> None:
        if state is ConnectionState.READY:
            # Hold live events from now on: the lists answer for this instant.
            if self._buffer is None:
                self._buffer = []
            self._spawn(self.resync())

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync(self) -> None:
        """Rebuild from Asterisk's lists. Live events arriving meanwhile are held and applied
        on top of the snapshot (stale ones are ignored by the state)."""
        if self._rebuilding:
            return  # one rebuild at a time; it already holds the live events
        self._rebuilding = True
        if self._buffer is None:
            self._buffer = []
        try:
            await self._rebuild()
        finally:
            self._rebuilding = False
            self._release()

    async def _rebuild(self) -> None:
        try:
            lists = await asyncio.gather(
                self.client.send_action({"Action": "CoreShowChannels"}),
                self.client.send_action({"Action": "QueueStatus"}),
                self.client.send_action({"Action": "QueueSummary"}),
            )
        except AmiError as exc:
            log.warning("CTI state rebuild failed (%s); next login retries", exc)
            return
        if not all(isinstance(result, list) for result in lists):
            errors = [r.text("Message") for r in lists if isinstance(r, AmiMessage)]
            log.warning("CTI state rebuild refused by Asterisk: %s", "; ".join(errors))
            return
        channels, status, summary = (_headers(result) for result in lists)
        snapshot = Snapshot.from_lists(channels, status, summary)
        self._emit(self.state.reconcile(snapshot, self.clock()))
        self.resyncs += 1
        log.info(
            "CTI state rebuilt: %d channels, %d queue members, %d waiting callers",
            len(snapshot.channels),
            len(snapshot.members),
            len(snapshot.entries),
        )
        self.resynced.set()

    def _release(self) -> None:
        held, self._buffer = self._buffer or [], None
        for message in held:
            self._emit(self.state.apply(message.headers, self.clock()))

    # --- bus side ---

    def _emit(self, events: Sequence[Event]) -> None:
        for event in events:
            self._outbox.put_nowait(event)
        self._schedule_wakeup()

    async def _publish_loop(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                if self.leader.is_leader:
                    await self.bus.publish(event)
            except Exception:
                log.exception("CTI event not published: %r", event)
            finally:
                self._outbox.task_done()

    def _schedule_wakeup(self) -> None:
        due = self.state.next_wakeup()
        if due == self._due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = due
        if due is not None:
            delay = max(0.0, due - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer, self._due = None, None
        self._emit(self.state.tick(self.clock()))


def _headers(result: AmiMessage | list[AmiMessage]) -> list[dict[str, Any]]:
    messages = result if isinstance(result, list) else [result]
    return [m.headers for m in messages]
