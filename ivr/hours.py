"""Opening hours: weekly schedule, public holidays (python-holidays) and exceptional closures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from ivr.flow_model import WEEKDAYS, HoursNode


@dataclass(frozen=True, slots=True)
class OpenState:
    open: bool
    reason: str  # open | holiday | closure | outside_hours
    detail: str | None = None


@lru_cache(maxsize=64)
def _calendar(country: str, subdivision: str | None, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision, years=year, language="en_US")


def open_state(node: HoursNode, at: datetime) -> OpenState:
    """Whether the service is open at `at` (any timezone; evaluated in the node's timezone)."""
    local = at.astimezone(ZoneInfo(node.timezone))
    day = local.date()
    for closure in node.closures:
        if closure.date is not None and closure.date == day:
            return OpenState(False, "closure", closure.reason)
        if closure.start is not None and closure.end is not None:
            start = (
                closure.start
                if closure.start.tzinfo
                else closure.start.replace(tzinfo=local.tzinfo)
            )
            end = closure.end if closure.end.tzinfo else closure.end.replace(tzinfo=local.tzinfo)
            if start <= local < end:
                return OpenState(False, "closure", closure.reason)
    if node.holidays is not None:
        calendar = _calendar(node.holidays.country, node.holidays.subdivision, day.year)
        if day in calendar:
            return OpenState(False, "holiday", str(calendar.get(day)))
    now = local.time().replace(tzinfo=None)
    for slot in node.schedule.get(WEEKDAYS[local.weekday()], []):
        if slot.start <= now < slot.end:
            return OpenState(True, "open")
    return OpenState(False, "outside_hours")
