"""One ``queue_call`` row per citizen call that reached a queue, written when the call ends.

`CallRecorder` listens to the CTI bus, folds each call's events (`CallQueued`, `CallAnswered`,
`CallTransferred`, `CallEnded`) into one record, and hands the record to a background writer:
the bus consumer never awaits the database, so a slow or absent store never delays events
(the house pattern of `crm_bridge.buffered`). The writer stores what has queued up in one
statement, retries while the failure is transient (`buffered.is_transient`), and keeps rows in
memory meanwhile; a batch the database refuses is stored row by row, and a refused row is kept
aside in `rejected`, never retried.

Exactly one row per call id: the insert is ``ON CONFLICT (call_id) DO NOTHING`` (SQLite and
PostgreSQL), and call ids already handed to the writer are remembered, so a `CallEnded`
replayed after a reconnect (or by a second bus) adds nothing. Rebuild events (``resync``)
are folded like live ones: a call that vanished while Guichet was away ends ``lost``.

What the row holds (see `QueueCallRecord`): ``queue`` is the first queue the call joined
(a blind transfer re-queues the same call); ``hold_s`` is the wait before the *first* answer
(AgentConnect's HoldTime), for an abandoned call the wait until it hung up
(QueueCallerAbandon's HoldTime), None when Asterisk gave none (unanswered, lost); ``talk_s``
and ``agent`` come from `CallEnded` (the last agent who talked to the citizen and their
AgentComplete TalkTime), ``agent`` falling back to the first one who answered; ``transferred``
is set by a successful blind or attended transfer.

Layering note: this module reads `cti.events` (plain frozen dataclasses, no I/O), which is an
upward import from ``crm_bridge``; the bus itself is only seen through `EventSource`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.buffered import BATCH_SIZE, is_transient
from crm_bridge.supervision_models import QueueCallRecord
from crm_bridge.writer import drain_and_cancel
from cti.events import CallAnswered, CallEnded, CallEvent, CallQueued, CallTransferred, Event

log = logging.getLogger("guichet.crm.call_records")

# Calls remembered as written, so a replayed CallEnded is ignored without asking the database.
RECENT_CALLS = 50_000
# A call whose CallEnded never came (events dropped by a stalled subscription) is forgotten
# after this long without news; its row is then never written.
STALE_AFTER_S = 12 * 3600.0
_SWEEP_EVERY = 1000  # events between two sweeps of stale calls


class Subscription(Protocol):
    """What `CallRecorder` needs of `cti.bus.Subscription`."""

    dropped: int

    def __aiter__(self) -> AsyncIterator[Event]: ...

    def pending(self) -> list[Event]: ...

    def close(self) -> None: ...


class EventSource(Protocol):
    """What `CallRecorder` needs of `cti.bus.EventBus`."""

    def subscribe(self) -> Subscription: ...


def utc_at(at: float) -> datetime:
    """A CTI event's Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(at, UTC)


@dataclass(slots=True)
class _Call:
    """What is known of a call still in progress."""

    call_id: str
    first_at: float
    last_at: float
    linked_id: str | None = None
    queue: str | None = None  # the first queue joined
    caller: str | None = None
    queued_at: float | None = None
    answered_at: float | None = None
    hold_s: float | None = None  # before the first answer
    agent: str | None = None  # who answered first
    transferred: bool = False
    lang: str | None = None
    request_type: str | None = None
    case_reference: str | None = None

    def note(self, event: CallEvent) -> None:
        """Keep the latest non-empty correlation values (GUICHET_* may be set late)."""
        self.last_at = max(self.last_at, event.at)
        self.linked_id = event.linked_id or self.linked_id
        self.queue = self.queue or event.queue
        self.lang = event.lang or self.lang
        self.request_type = event.request_type or self.request_type
        self.case_reference = event.case_id or self.case_reference


def fold(call: _Call, event: CallEvent) -> None:
    """Apply one call event to the call's running record (pure: no I/O)."""
    call.note(event)
    if isinstance(event, CallQueued):
        if call.queued_at is None:
            call.queued_at, call.queue = event.at, event.queue or call.queue
        call.caller = call.caller or event.caller_number
    elif isinstance(event, CallAnswered):
        if call.answered_at is None:
            call.answered_at, call.hold_s, call.agent = event.at, event.hold_time, event.agent.id
    elif isinstance(event, CallTransferred):
        call.transferred = call.transferred or event.success


def record_of(call: _Call, ended: CallEnded) -> QueueCallRecord | None:
    """The row for a call that ended; None when it never named a queue (not a queue call)."""
    call.note(ended)
    if call.queue is None:
        return None
    answered = ended.reason == "completed"
    hold = call.hold_s if call.answered_at is not None else None
    if hold is None and ended.reason in ("completed", "abandoned"):
        hold = ended.hold_time
    return QueueCallRecord(
        call_id=call.call_id,
        linked_id=call.linked_id,
        queue=call.queue,
        lang=call.lang,
        request_type=call.request_type,
        case_reference=call.case_reference,
        caller=call.caller,
        queued_at=utc_at(call.queued_at if call.queued_at is not None else call.first_at),
        answered_at=utc_at(call.answered_at) if call.answered_at is not None else None,
        ended_at=utc_at(ended.at),
        outcome=ended.reason,
        hold_s=hold,
        talk_s=ended.talk_time if answered else None,
        agent=(ended.agent.id if ended.agent is not None else None) or call.agent,
        transferred=call.transferred,
    )


def _row(record: QueueCallRecord) -> dict[str, Any]:
    return record.model_dump(exclude={"id"})


class CallRecorder:
    """Bus consumer + batched writer of ``queue_call`` rows. `start()`, `stop()`, `flush()`."""

    def __init__(
        self,
        bus: EventSource,
        engine: AsyncEngine,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.bus = bus
        self.engine = engine
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.batch_size = max(1, batch_size)
        self.rejected: list[QueueCallRecord] = []  # refused by the database: for an operator
        self._calls: dict[str, _Call] = {}
        self._recorded: OrderedDict[str, None] = OrderedDict()
        self._rows: asyncio.Queue[QueueCallRecord] = asyncio.Queue()
        self._taken = 0
        self._sub: Subscription | None = None
        self._dropped_seen = 0
        self._seen = 0
        self._consumer: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Rows not stored yet: queued, or being written."""
        return self._rows.qsize() + self._taken

    async def start(self) -> None:
        """Subscribe now (so nothing published after start() is missed) and start writing."""
        if self._consumer is not None:
            return
        self._sub = self.bus.subscribe()
        self._consumer = asyncio.create_task(self._consume(), name="call-recorder")
        self._writer = asyncio.create_task(self._write(), name="call-recorder-writer")

    async def flush(self) -> None:
        """Fold the events already delivered, then wait until every row is stored (or
        refused). While the database is down this waits for it."""
        if self._sub is not None:
            for event in self._sub.pending():
                self.handle(event)
        await self._rows.join()

    async def stop(self, timeout: float = 10.0) -> None:
        """Fold what was delivered, store what is queued (bounded by `timeout`), stop."""
        consumer, self._consumer = self._consumer, None
        if self._sub is not None:
            self._sub.close()  # the consumer ends after the events already delivered
        if consumer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(consumer), timeout)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        writer, self._writer = self._writer, None
        if writer is not None:
            await drain_and_cancel(writer, self._rows, timeout)
        if self.pending:
            log.error("%d call records still unsaved at shutdown", self.pending)

    # --- events ---

    async def _consume(self) -> None:
        assert self._sub is not None
        async for event in self._sub:
            self.handle(event)

    def handle(self, event: Event) -> None:
        """Fold one event; a call's end queues its row. Synchronous: never waits."""
        self._note_dropped()
        self._seen += 1
        if self._seen % _SWEEP_EVERY == 0:
            self._sweep(event.at)
        if not isinstance(event, CallEvent) or event.call_id in self._recorded:
            return
        call = self._calls.get(event.call_id)
        if call is None:
            call = self._calls[event.call_id] = _Call(event.call_id, event.at, event.at)
        if not isinstance(event, CallEnded):
            fold(call, event)
            return
        del self._calls[event.call_id]
        record = record_of(call, event)
        if record is None:
            log.debug("call %s ended without a queue: no record", event.call_id)
            return
        self._remember(event.call_id)
        self._rows.put_nowait(record)

    def _remember(self, call_id: str) -> None:
        self._recorded[call_id] = None
        while len(self._recorded) > RECENT_CALLS:
            self._recorded.popitem(last=False)

    def _note_dropped(self) -> None:
        dropped = self._sub.dropped if self._sub is not None else 0
        if dropped != self._dropped_seen:
            log.warning(
                "call recorder fell behind: %d CTI events dropped; some calls will have no row",
                dropped - self._dropped_seen,
            )
            self._dropped_seen = dropped

    def _sweep(self, now: float) -> None:
        stale = [cid for cid, call in self._calls.items() if now - call.last_at > STALE_AFTER_S]
        for call_id in stale:
            del self._calls[call_id]
        if stale:
            log.warning("%d calls without an end forgotten (no record written)", len(stale))

    # --- writes ---

    def _insert(self) -> Any:
        """``INSERT ... ON CONFLICT (call_id) DO NOTHING`` for this engine's dialect."""
        table = QueueCallRecord.__table__  # type: ignore[attr-defined]
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return pg_insert(table).on_conflict_do_nothing(index_elements=["call_id"])
        if dialect == "sqlite":
            return sqlite_insert(table).on_conflict_do_nothing(index_elements=["call_id"])
        return insert(table)  # elsewhere a duplicate is refused, and kept aside

    async def _store(self, records: Sequence[QueueCallRecord]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self._insert(), [_row(r) for r in records])

    async def _write(self) -> None:
        while True:
            batch = [await self._rows.get()]
            while len(batch) < self.batch_size and not self._rows.empty():
                batch.append(self._rows.get_nowait())
            self._taken = len(batch)
            if not await self._try(batch):
                log.warning("a batch of %d call records was refused; one by one", len(batch))
                for record in batch:
                    if not await self._try([record]):
                        self.rejected.append(record)
                        log.error("call record %s refused; kept aside", record.call_id)
            self._taken = 0  # cancelled mid-batch (stop timed out): still counted as pending
            for _ in batch:
                self._rows.task_done()

    async def _try(self, records: Sequence[QueueCallRecord]) -> bool:
        """Store, retrying while the failure is transient; False when refused."""
        delay = self.retry_initial
        while True:
            try:
                await self._store(records)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.warning("call records refused (%s: %s)", type(exc).__name__, exc)
                    return False
                log.warning(
                    "storing %d call records failed (%s); retrying in %.1fs",
                    len(records),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
