"""Writes off the call path: journeys and callback requests queue in memory and a background
task stores them, retrying while the database is away, so a slow or failing store never holds
or drops a call. Reads (citizen lookups) go straight through.

Under load the writer takes whatever has queued up (up to `batch_size` writes) and stores it in
one transaction when the store can (`SqlCrm.save_journeys`, `record_callbacks`): one commit
per batch instead of one per call is what lets a single core keep up with hundreds of calls a
second. A batch the store refuses is stored again item by item, so one bad write is kept aside
alone and never sinks the others.

The queue lives in memory: it rides out an outage while the process runs. A durable outbox
that survives a restart belongs to the case store (CTI issue).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from crm_bridge.ports import CallbackRequest, CallJourney, CitizenSummary, CrmPort
from crm_bridge.writer import drain_and_cancel

log = logging.getLogger("guichet.crm")

# Writes per transaction at most. Under normal load a batch is the few writes that came in
# while the previous one was stored; a big one means the writer is behind (the server at its
# limit, or an outage just over), and then the cost per write must drop: on one saturated
# core each of a batch's five database round trips waits ~50 ms, so 100 per batch fell behind
# ~500 calls/s. The price of a big batch is one stretch of event loop: ~15 ms at 250 (~30 ms
# at 500) that calls only see while the writer catches up.
BATCH_SIZE = 250

_Item = TypeVar("_Item", CallJourney, CallbackRequest)

# Failures that go away when the database comes back; anything else would fail forever.
TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    OSError,
    TimeoutError,
)


# SQLSTATE classes that pass: connection exception, transaction rollback (deadlock,
# serialization), insufficient resources, operator intervention (shutdown, restart).
# asyncpg's "the database system is shutting down" (57P03) reaches us as a bare DBAPIError.
RETRY_SQLSTATES = frozenset({"08", "40", "53", "57"})


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the database is away or busy, not refusing the write."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, TRANSIENT):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, DBAPIError) and isinstance(code, str) and code[:2] in RETRY_SQLSTATES


@dataclass(frozen=True, slots=True)
class _Write:
    item: CallJourney | CallbackRequest


class BufferedCrm:
    """A CrmPort whose writes return at once and are stored in order (journeys in theirs,
    callbacks in theirs), with retries."""

    def __init__(
        self,
        inner: CrmPort,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.inner = inner
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.batch_size = max(1, batch_size)
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._taken = 0  # writes the writer holds and has not finished with
        self._unsaved: dict[str, CallJourney] = {}  # call id -> journey not stored yet
        self.rejected: list[
            CallJourney | CallbackRequest
        ] = []  # kept for an operator, never retried

    @property
    def pending(self) -> int:
        """Writes not stored yet: queued, or taken by the writer and still being tried."""
        return self._queue.qsize() + self._taken

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="crm-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued (bounded by `timeout`), then stop the writer."""
        if self._task is None:
            return
        await drain_and_cancel(self._task, self._queue, timeout)
        self._task = None
        if self.pending:
            log.error("%d CRM writes still pending at shutdown", self.pending)

    async def flush(self) -> None:
        await self._queue.join()

    async def find_citizen_by_national_number(self, number: str) -> CitizenSummary | None:
        return await self.inner.find_citizen_by_national_number(number)

    async def find_citizen_by_phone(self, phone: str) -> CitizenSummary | None:
        return await self.inner.find_citizen_by_phone(phone)

    async def record_callback(self, request: CallbackRequest) -> None:
        self._queue.put_nowait(_Write(request))

    async def save_journey(self, journey: CallJourney) -> None:
        self._unsaved[journey.call_id] = journey
        self._queue.put_nowait(_Write(journey))

    async def get_journey(self, call_id: str) -> CallJourney | None:
        """A call's journey, stored or still queued (the screen-pop reads it at once)."""
        if (journey := self._unsaved.get(call_id)) is not None:
            return journey
        getter = getattr(self.inner, "get_journey", None)
        return await getter(call_id) if getter is not None else None

    async def _drain(self) -> None:
        while True:
            batch = [(await self._queue.get()).item]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait().item)
            self._taken = len(batch)
            # Callbacks first: an agent has to act on them. The two tables do not depend on
            # each other, and each kind keeps its order.
            callbacks = [item for item in batch if isinstance(item, CallbackRequest)]
            journeys = [item for item in batch if isinstance(item, CallJourney)]
            await self._store(
                callbacks, self.inner.record_callback, getattr(self.inner, "record_callbacks", None)
            )
            await self._store(
                journeys, self.inner.save_journey, getattr(self.inner, "save_journeys", None)
            )
            for journey in journeys:  # stored, or kept aside in `rejected`
                if self._unsaved.get(journey.call_id) is journey:
                    del self._unsaved[journey.call_id]

    async def _store(
        self,
        items: list[_Item],
        one: Callable[[_Item], Awaitable[None]],
        many: Callable[[Sequence[_Item]], Awaitable[None]] | None,
    ) -> None:
        """Store `items` in one transaction when the store offers it, retrying while the
        failure is transient; a refused batch falls back to one write at a time."""
        if many is None or len(items) < 2:
            for item in items:
                await self._store_one(item, one)
            return
        delay = self.retry_initial
        while True:
            try:
                await many(items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.warning(
                        "CRM refused a batch of %d writes (%s); storing them one by one",
                        len(items),
                        type(exc).__name__,
                    )
                    for item in items:
                        await self._store_one(item, one)
                    return
                log.warning(
                    "CRM write of %d items failed (%s); retrying in %.1fs",
                    len(items),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                self._done(len(items))
                return

    async def _store_one(self, item: _Item, one: Callable[[_Item], Awaitable[None]]) -> None:
        delay = self.retry_initial
        while True:
            try:
                await one(item)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    self.rejected.append(item)
                    log.error(
                        "CRM refused the write for call %s (%s: %s); kept aside",
                        item.call_id,
                        type(exc).__name__,
                        exc,
                    )
                    break
                log.warning(
                    "CRM write for call %s failed (%s); retrying in %.1fs",
                    item.call_id,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
        self._done(1)

    def _done(self, count: int) -> None:
        self._taken -= count
        for _ in range(count):
            self._queue.task_done()
