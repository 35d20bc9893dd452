"""Writes off the call path: journeys and callback requests queue in memory and a background
task stores them, retrying while the database is away, so a slow or failing store never holds
or drops a call. Reads (citizen lookups) go straight through.

The queue lives in memory: it rides out an outage while the process runs. A durable outbox
that survives a restart belongs to the case store (CTI issue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from crm_bridge.ports import CallbackRequest, CallJourney, CitizenSummary, CrmPort

log = logging.getLogger("guichet.crm")

# Failures that go away when the database comes back; anything else would fail forever.
TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    OSError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


@dataclass(frozen=True, slots=True)
class _Write:
    item: CallJourney | CallbackRequest


class BufferedCrm:
    """A CrmPort whose writes return at once and are stored in order, with retries."""

    def __init__(
        self, inner: CrmPort, *, retry_initial: float = 0.5, retry_max: float = 10.0
    ) -> None:
        self.inner = inner
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.rejected: list[
            CallJourney | CallbackRequest
        ] = []  # kept for an operator, never retried

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="crm-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued (bounded by `timeout`), then stop the writer."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
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
        self._queue.put_nowait(_Write(journey))

    async def _drain(self) -> None:
        while True:
            write = await self._queue.get()
            delay = self.retry_initial
            while True:
                try:
                    if isinstance(write.item, CallJourney):
                        await self.inner.save_journey(write.item)
                    else:
                        await self.inner.record_callback(write.item)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not is_transient(exc):
                        self.rejected.append(write.item)
                        log.error(
                            "CRM refused the write for call %s (%s: %s); kept aside",
                            write.item.call_id,
                            type(exc).__name__,
                            exc,
                        )
                        break
                    log.warning(
                        "CRM write for call %s failed (%s); retrying in %.1fs",
                        write.item.call_id,
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max)
            self._queue.task_done()
