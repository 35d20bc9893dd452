"""The IVR report: calls per outcome and the deflection rate per request type.

Aggregated by the database (GROUP BY), never by loading journeys into Python: a month of
calls must not be read row by row. The period is half-open, ``since <= started_at < until``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from crm_bridge.models import DEFLECTED, SIMULATOR_LEG, CallJourneyRecord
from crm_bridge.utc import ensure_utc


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True, slots=True)
class RequestTypeStats:
    """Calls that reached a request type, and how many of them the IVR fully served."""

    request_type: str | None  # None: the caller never chose (hung up in the menu, ...)
    calls: int
    deflected: int

    @property
    def deflection_rate(self) -> float:
        return _rate(self.deflected, self.calls)


@dataclass(frozen=True, slots=True)
class IvrReport:
    since: datetime
    until: datetime | None
    include_simulated: bool
    outcomes: dict[str, int]  # outcome -> calls, most frequent first
    request_types: tuple[RequestTypeStats, ...]  # most calls first

    @property
    def total_calls(self) -> int:
        return sum(self.outcomes.values())

    @property
    def deflected(self) -> int:
        return self.outcomes.get(DEFLECTED, 0)

    @property
    def deflection_rate(self) -> float:
        return _rate(self.deflected, self.total_calls)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``), datetimes in ISO 8601 UTC."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "include_simulated": self.include_simulated,
            "total_calls": self.total_calls,
            "deflected": self.deflected,
            "deflection_rate": self.deflection_rate,
            "outcomes": dict(self.outcomes),
            "request_types": [
                {
                    "request_type": stats.request_type,
                    "calls": stats.calls,
                    "deflected": stats.deflected,
                    "deflection_rate": stats.deflection_rate,
                }
                for stats in self.request_types
            ],
        }


def _period_filter(
    since: datetime, until: datetime | None, include_simulated: bool
) -> ColumnElement[bool]:
    started_at = col(CallJourneyRecord.started_at)
    conditions = [started_at >= since]
    if until is not None:
        conditions.append(started_at < until)
    if not include_simulated:
        conditions.append(col(CallJourneyRecord.leg) != SIMULATOR_LEG)
    return and_(*conditions)


async def ivr_report(
    engine: AsyncEngine,
    since: datetime,
    until: datetime | None = None,
    include_simulated: bool = False,
) -> IvrReport:
    """Aggregate the journeys started in ``[since, until)``; simulator calls are left out
    unless ``include_simulated`` (test calls must not inflate the KPI)."""
    since = ensure_utc(since)
    until = ensure_utc(until) if until is not None else None
    where = _period_filter(since, until, include_simulated)
    outcome = col(CallJourneyRecord.outcome)
    request_type = col(CallJourneyRecord.request_type)
    calls = func.count().label("calls")
    deflected = func.coalesce(func.sum(case((outcome == DEFLECTED, 1), else_=0)), 0)

    by_outcome = select(outcome, calls).where(where).group_by(outcome)
    by_request_type = (
        select(request_type, calls, deflected.label("deflected"))
        .where(where)
        .group_by(request_type)
    )
    async with engine.connect() as conn:
        outcome_rows = (await conn.execute(by_outcome)).all()
        request_rows = (await conn.execute(by_request_type)).all()

    outcomes = {
        name: int(count) for name, count in sorted(outcome_rows, key=lambda r: (-r[1], r[0]))
    }
    stats = sorted(
        (RequestTypeStats(name, int(count), int(served)) for name, count, served in request_rows),
        key=lambda s: (-s.calls, s.request_type is None, s.request_type or ""),
    )
    return IvrReport(
        since=since,
        until=until,
        include_simulated=include_simulated,
        outcomes=outcomes,
        request_types=tuple(stats),
    )
