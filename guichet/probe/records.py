"""Guichet's own records of the probe's call, found by the probe's caller number.

The probe hears the line but cannot see the queue: whether and when an agent answered comes
from ``queue_call`` (written by the CTI when the queue call ends), the time spent in the menus
from ``call_journey`` (written by the IVR). Both are matched on the normalised caller number
within the probe call's time window, so a citizen calling at the same moment is never taken
for the probe.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.db import session_factory
from crm_bridge.models import CallJourneyRecord
from crm_bridge.phone import normalise_phone
from crm_bridge.supervision_models import QueueCallRecord

SLACK = timedelta(seconds=5)  # clocks of the probe and of Guichet's host may differ a little
QUEUED = "queued"


@dataclass(frozen=True)
class GuichetRecords:
    journey: CallJourneyRecord | None
    queue_call: QueueCallRecord | None


def _same_number(a: str | None, b: str) -> bool:
    return a is not None and normalise_phone(a) == normalise_phone(b) is not None


async def find_records(
    engine: AsyncEngine, caller: str, since: datetime, until: datetime
) -> GuichetRecords:
    """The journey and queue call of ``caller`` that started within [since, until] (± slack)."""
    low, high = since - SLACK, until + SLACK
    async with session_factory(engine)() as session:
        journeys = (
            await session.exec(
                select(CallJourneyRecord)
                .where(col(CallJourneyRecord.started_at) >= low)
                .where(col(CallJourneyRecord.started_at) <= high)
                .order_by(col(CallJourneyRecord.started_at))
            )
        ).all()
        queue_calls = (
            await session.exec(
                select(QueueCallRecord)
                .where(col(QueueCallRecord.queued_at) >= low)
                .where(col(QueueCallRecord.queued_at) <= high)
                .order_by(col(QueueCallRecord.queued_at))
            )
        ).all()
    journey = next((j for j in journeys if _same_number(j.caller, caller)), None)
    queue_call = next((q for q in queue_calls if _same_number(q.caller, caller)), None)
    return GuichetRecords(journey, queue_call)


async def await_records(
    engine: AsyncEngine,
    caller: str,
    since: datetime,
    until: datetime,
    *,
    wait: float,
    poll: float = 0.5,
) -> GuichetRecords:
    """Poll up to ``wait`` seconds: the queue call is written only once it has ended.

    Stops early when the journey shows the call never reached a queue (deflected, closed...).
    """
    deadline = time.monotonic() + wait
    while True:
        found = await find_records(engine, caller, since, until)
        done = found.queue_call is not None or (
            found.journey is not None and found.journey.outcome != QUEUED
        )
        if done or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))


__all__ = ["GuichetRecords", "await_records", "find_records"]
