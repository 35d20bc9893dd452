"""Contact-centre KPIs per period (day / week / month in Brussels time) and per queue, language,
request type or overall — aggregated by the database (GROUP BY), never by loading rows.

Three sources, each one GROUP BY query, merged by (period, dimension value):

* ``queue_call`` (one row per queue call, `cti.call_records`), by ``queued_at``:
  - offered: calls that joined a queue; answered (outcome ``completed``); abandoned (the
    citizen hung up while waiting); lost calls: left the queue unanswered (``unanswered``:
    Queue() timeout, overflow) or vanished while Guichet was disconnected (``lost``).
    offered = answered + abandoned + lost.
  - service level = answered with ``hold_s <= threshold`` / offered. Every offered call
    counts, short abandons included (they are *not* excluded from the denominator).
  - ASA = mean ``hold_s`` of answered calls (wait before the first answer); AHT = mean
    ``talk_s`` of answered calls (talk time; Asterisk does not report wrap-up); calls
    without a figure are left out of the mean. Abandon rate = abandoned / offered.
* ``call_journey`` (IVR calls, simulator legs excluded), by ``started_at``: IVR calls,
  deflected (served by the IVR alone), callbacks (callback requested); deflection rate =
  deflected / IVR calls. Calls that never reached a queue have no queue: per queue they
  appear under "no queue" (key None).
* ``crm_case`` (cases closed in the period, by ``closed_at``), per queue / language /
  category: first-contact resolution = closed cases with exactly one interaction (one
  contact, of any kind) and no queue call of that case transferred (no escalation) / closed
  cases. A reopened case that was contacted again has two interactions: not FCR.

A rate whose denominator is zero is None (no calls), not 0. The range is widened to whole
periods: every day/week (ISO, Monday)/month that overlaps ``[since, until)`` is reported in
full. Period edges are local midnights in Europe/Brussels converted to UTC, and the bucket of
each row is a CASE over those edges, so SQLite and PostgreSQL bucket exactly alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from crm_bridge.case_models import CLOSED, Case, Interaction
from crm_bridge.models import DEFLECTED, SIMULATOR_LEG, CallJourneyRecord
from crm_bridge.supervision_models import ABANDONED, COMPLETED, LOST, UNANSWERED, QueueCallRecord
from crm_bridge.utc import UtcDateTime, ensure_utc

Period = Literal["day", "week", "month"]
Dimension = Literal["queue", "lang", "request_type", "all"]
PERIODS: tuple[str, ...] = get_args(Period)
DIMENSIONS: tuple[str, ...] = get_args(Dimension)
BRUSSELS = ZoneInfo("Europe/Brussels")
DEFAULT_THRESHOLD_S = 20.0
MAX_BUCKETS = 400
CALLBACK = "callback"


class KpiRangeError(ValueError):
    """A period range that is empty or has too many buckets."""


def rate(part: float, whole: float) -> float | None:
    """A share, or None when there is nothing to share (no call offered: no service level)."""
    return part / whole if whole else None


# --- periods ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One period: local first day ``day``, UTC instants ``[start, end)``."""

    period: Period
    day: date
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        if self.period == "month":
            return self.day.strftime("%Y-%m")
        if self.period == "week":
            year, week, _ = self.day.isocalendar()
            return f"{year}-W{week:02d}"
        return self.day.isoformat()


def _period_start(day: date, period: Period) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _next_start(day: date, period: Period) -> date:
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(weeks=1)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def buckets(
    since: datetime, until: datetime, period: Period, tz: ZoneInfo = BRUSSELS
) -> list[Bucket]:
    """Every period overlapping ``[since, until)``, in order."""
    since, until = ensure_utc(since), ensure_utc(until)
    if until <= since:
        raise KpiRangeError("the end of the range must be after its start")
    out: list[Bucket] = []
    day = _period_start(since.astimezone(tz).date(), period)
    while (start := _midnight(day, tz)) < until:
        following = _next_start(day, period)
        out.append(Bucket(period, day, start, _midnight(following, tz)))
        if len(out) > MAX_BUCKETS:
            raise KpiRangeError(f"more than {MAX_BUCKETS} {period}s: choose a longer period")
        day = following
    return out


def _bucket_of(column: Any, edges: Sequence[Bucket]) -> ColumnElement[int]:
    """The index of the bucket ``column`` falls in (rows are already within the range)."""
    if len(edges) == 1:
        return literal(0)
    whens = [(column < b.end, index) for index, b in enumerate(edges[:-1])]
    return case(*whens, else_=len(edges) - 1)


def _within(column: Any, edges: Sequence[Bucket]) -> ColumnElement[bool]:
    return and_(column >= edges[0].start, column < edges[-1].end)


# --- the table ----------------------------------------------------------------------------


@dataclass(slots=True)
class KpiRow:
    """The figures of one period and one dimension value (``key`` None: not set, or
    ``by="all"``). Counts are summed in SQL; rates and means derive from them."""

    bucket: Bucket
    key: str | None
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    lost: int = 0
    answered_within: int = 0
    hold_sum: float = 0.0  # of answered calls with a hold figure
    hold_count: int = 0
    talk_sum: float = 0.0  # of answered calls with a talk figure
    talk_count: int = 0
    ivr_calls: int = 0
    deflected: int = 0
    callbacks: int = 0
    cases_closed: int = 0
    first_contact: int = 0

    @property
    def service_level(self) -> float | None:
        return rate(self.answered_within, self.offered)

    @property
    def asa(self) -> float | None:
        return rate(self.hold_sum, self.hold_count)

    @property
    def aht(self) -> float | None:
        return rate(self.talk_sum, self.talk_count)

    @property
    def abandon_rate(self) -> float | None:
        return rate(self.abandoned, self.offered)

    @property
    def deflection_rate(self) -> float | None:
        return rate(self.deflected, self.ivr_calls)

    @property
    def fcr_rate(self) -> float | None:
        return rate(self.first_contact, self.cases_closed)


ColumnKind = Literal["text", "count", "seconds", "percent"]


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the exported / displayed table; ``name`` is also its UI string key
    (``reports.column.<name>``)."""

    name: str
    kind: ColumnKind
    value: Callable[[KpiRow], Any]


COLUMNS: tuple[Column, ...] = (
    Column("period", "text", lambda r: r.bucket.label),
    Column("key", "text", lambda r: r.key),
    Column("offered", "count", lambda r: r.offered),
    Column("answered", "count", lambda r: r.answered),
    Column("abandoned", "count", lambda r: r.abandoned),
    Column("lost", "count", lambda r: r.lost),
    Column("answered_within", "count", lambda r: r.answered_within),
    Column("service_level", "percent", lambda r: r.service_level),
    Column("asa", "seconds", lambda r: r.asa),
    Column("aht", "seconds", lambda r: r.aht),
    Column("abandon_rate", "percent", lambda r: r.abandon_rate),
    Column("ivr_calls", "count", lambda r: r.ivr_calls),
    Column("deflected", "count", lambda r: r.deflected),
    Column("deflection_rate", "percent", lambda r: r.deflection_rate),
    Column("callbacks", "count", lambda r: r.callbacks),
    Column("cases_closed", "count", lambda r: r.cases_closed),
    Column("first_contact", "count", lambda r: r.first_contact),
    Column("fcr_rate", "percent", lambda r: r.fcr_rate),
)


@dataclass(frozen=True, slots=True)
class KpiTable:
    period: Period
    by: Dimension
    since: datetime
    until: datetime
    threshold: float
    buckets: tuple[Bucket, ...]
    rows: tuple[KpiRow, ...]  # by period, then dimension value (None last)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``rows`` as objects keyed by column name, plus each period's UTC range."""
        return {
            "period": self.period,
            "by": self.by,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "threshold": self.threshold,
            "timezone": BRUSSELS.key,
            "buckets": [
                {"label": b.label, "start": b.start.isoformat(), "end": b.end.isoformat()}
                for b in self.buckets
            ],
            "rows": [{c.name: c.value(row) for c in COLUMNS} for row in self.rows],
        }


def _dimension(by: Dimension, queue: Any, lang: Any, request_type: Any) -> Any | None:
    return {"queue": queue, "lang": lang, "request_type": request_type}.get(by)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _sum_if(condition: ColumnElement[bool], value: Any) -> ColumnElement[float]:
    return func.sum(case((condition, value), else_=None))


async def kpi_table(
    engine: AsyncEngine,
    since: datetime,
    until: datetime,
    *,
    period: Period = "day",
    by: Dimension = "queue",
    threshold: float = DEFAULT_THRESHOLD_S,
    tz: ZoneInfo = BRUSSELS,
) -> KpiTable:
    """The KPIs of every ``period`` overlapping ``[since, until)``, per ``by``."""
    if period not in PERIODS or by not in DIMENSIONS:
        raise KpiRangeError(f"unknown period {period!r} or dimension {by!r}")
    edges = buckets(since, until, period, tz)
    rows: dict[tuple[int, str | None], KpiRow] = {}

    def row(index: int, key: str | None) -> KpiRow:
        found = rows.get((index, key))
        if found is None:
            found = rows[(index, key)] = KpiRow(edges[index], key)
        return found

    async with engine.connect() as conn:
        found = [
            *await _queue_calls(conn, edges, by, threshold),
            *await _journeys(conn, edges, by),
            *await _cases(conn, edges, by),
        ]
    for index, key, values in found:  # each source sets its own fields
        target = row(index, key)
        for name, value in values.items():
            setattr(target, name, value)
    ordered = sorted(rows.values(), key=lambda r: (r.bucket.start, r.key is None, r.key or ""))
    return KpiTable(
        period=period,
        by=by,
        since=edges[0].start,
        until=edges[-1].end,
        threshold=threshold,
        buckets=tuple(edges),
        rows=tuple(ordered),
    )


_Grouped = list[tuple[int, str | None, dict[str, Any]]]


async def _grouped(conn: Any, inner: Any, measures: dict[str, Any], has_key: bool) -> _Grouped:
    """GROUP BY bucket (and key) over the subquery ``inner`` (grouping by the subquery's
    columns: a CASE with bound edges repeated in GROUP BY would not match on PostgreSQL)."""
    sub = inner.subquery()
    group = [sub.c.bucket, *([sub.c.key] if has_key else [])]
    names = list(measures)
    query = select(*group, *(measures[n](sub).label(n) for n in names)).group_by(*group)
    out: _Grouped = []
    for result in (await conn.execute(query)).all():
        key = result[1] if has_key else None
        values = dict(zip(names, result[len(group) :], strict=True))
        out.append((int(result[0]), key, values))
    return out


def _numbers(values: dict[str, Any], floats: Sequence[str] = ()) -> dict[str, Any]:
    return {k: (float(v or 0) if k in floats else int(v or 0)) for k, v in values.items()}


async def _queue_calls(conn: Any, edges: Sequence[Bucket], by: Dimension, threshold: float) -> Any:
    qc = QueueCallRecord
    key = _dimension(by, col(qc.queue), col(qc.lang), col(qc.request_type))
    inner = select(
        _bucket_of(col(qc.queued_at), edges).label("bucket"),
        *([key.label("key")] if key is not None else []),
        col(qc.outcome).label("outcome"),
        col(qc.hold_s).label("hold_s"),
        col(qc.talk_s).label("talk_s"),
    ).where(_within(col(qc.queued_at), edges))

    def answered(s: Any) -> Any:
        return s.c.outcome == COMPLETED

    measures: dict[str, Callable[[Any], Any]] = {
        "offered": lambda s: func.count(),
        "answered": lambda s: _count_if(answered(s)),
        "abandoned": lambda s: _count_if(s.c.outcome == ABANDONED),
        "lost": lambda s: _count_if(s.c.outcome.in_((UNANSWERED, LOST))),
        "answered_within": lambda s: _count_if(and_(answered(s), s.c.hold_s <= threshold)),
        "hold_sum": lambda s: _sum_if(answered(s), s.c.hold_s),
        "hold_count": lambda s: _count_if(and_(answered(s), s.c.hold_s.is_not(None))),
        "talk_sum": lambda s: _sum_if(answered(s), s.c.talk_s),
        "talk_count": lambda s: _count_if(and_(answered(s), s.c.talk_s.is_not(None))),
    }
    grouped = await _grouped(conn, inner, measures, key is not None)
    return [(i, k, _numbers(v, _FLOATS)) for i, k, v in grouped]


async def _journeys(conn: Any, edges: Sequence[Bucket], by: Dimension) -> Any:
    j = CallJourneyRecord
    key = _dimension(by, col(j.queue), col(j.lang), col(j.request_type))
    inner = select(
        _bucket_of(col(j.started_at), edges).label("bucket"),
        *([key.label("key")] if key is not None else []),
        col(j.outcome).label("outcome"),
    ).where(_within(col(j.started_at), edges), col(j.leg) != SIMULATOR_LEG)
    measures: dict[str, Callable[[Any], Any]] = {
        "ivr_calls": lambda s: func.count(),
        "deflected": lambda s: _count_if(s.c.outcome == DEFLECTED),
        "callbacks": lambda s: _count_if(s.c.outcome == CALLBACK),
    }
    grouped = await _grouped(conn, inner, measures, key is not None)
    return [(i, k, _numbers(v)) for i, k, v in grouped]


def first_contact_resolved() -> ColumnElement[bool]:
    """A closed case had exactly one interaction and none of its queue calls was
    transferred (correlated on ``crm_case.id``)."""
    interactions = (
        select(func.count())
        .select_from(Interaction)
        .where(col(Interaction.case_id) == col(Case.id))
        .scalar_subquery()
    )
    transferred = exists().where(
        col(Interaction.case_id) == col(Case.id),
        col(QueueCallRecord.call_id) == col(Interaction.call_id),
        col(QueueCallRecord.transferred).is_(True),
    )
    return and_(interactions == 1, ~transferred)


async def _cases(conn: Any, edges: Sequence[Bucket], by: Dimension) -> Any:
    key = _dimension(by, col(Case.queue), col(Case.language), col(Case.category))
    closed_at = col(Case.closed_at)
    inner = select(
        _bucket_of(closed_at, edges).label("bucket"),
        *([key.label("key")] if key is not None else []),
        case((first_contact_resolved(), 1), else_=0).label("fcr"),
    ).where(col(Case.status) == CLOSED, closed_at.is_not(None), _within(closed_at, edges))
    measures: dict[str, Callable[[Any], Any]] = {
        "cases_closed": lambda s: func.count(),
        "first_contact": lambda s: func.coalesce(func.sum(s.c.fcr), 0),
    }
    grouped = await _grouped(conn, inner, measures, key is not None)
    return [(i, k, _numbers(v)) for i, k, v in grouped]


# --- the wallboard's start-up figures -----------------------------------------------------

_FLOATS = ("hold_sum", "talk_sum")
# A queue call lasts less than this: lets "ended since" use the index on queued_at.
MAX_CALL_SPAN = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """One queue's calls that ended since the start time. ``unanswered`` counts both
    outcomes ``unanswered`` and ``lost`` (lost calls). ``hold_answered`` sums the hold of
    answered calls (ASA = hold_answered / answered; an answer rebuilt after a reconnect has
    no hold figure and adds 0), ``talk`` the talk time of the ``talked`` answered calls that
    have one (AHT = talk / talked)."""

    answered: int = 0
    abandoned: int = 0
    unanswered: int = 0
    answered_within: int = 0
    hold_answered: float = 0.0
    talk: float = 0.0
    talked: int = 0


@dataclass(frozen=True, slots=True)
class AgentTotals:
    """Answered calls an agent (``agent1``) handled that ended since the start time; ``talk``
    sums the talk time of the ``talked`` ones that have a figure."""

    handled: int = 0
    talk: float = 0.0
    talked: int = 0


@dataclass(frozen=True, slots=True)
class TodayTotals:
    since: datetime
    threshold: float
    queues: dict[str, QueueTotals] = field(default_factory=dict)
    agents: dict[str, AgentTotals] = field(default_factory=dict)


async def totals_since(
    engine: AsyncEngine, since: datetime, threshold: float = DEFAULT_THRESHOLD_S
) -> TodayTotals:
    """Per queue and per agent, the calls that *ended* at or after ``since`` (the moment a
    live wallboard counts a call: its `CallEnded`). One GROUP BY query each."""
    since = ensure_utc(since)
    qc = QueueCallRecord
    where = and_(col(qc.ended_at) >= since, col(qc.queued_at) >= since - MAX_CALL_SPAN)
    answered = col(qc.outcome) == COMPLETED
    hold, talk = col(qc.hold_s), col(qc.talk_s)
    per_queue = (
        select(
            col(qc.queue),
            _count_if(answered),
            _count_if(col(qc.outcome) == ABANDONED),
            _count_if(col(qc.outcome).in_((UNANSWERED, LOST))),
            _count_if(and_(answered, hold <= threshold)),
            func.coalesce(_sum_if(answered, hold), 0.0),
            func.coalesce(_sum_if(answered, talk), 0.0),
            _count_if(and_(answered, talk.is_not(None))),
        )
        .where(where)
        .group_by(col(qc.queue))
    )
    per_agent = (
        select(
            col(qc.agent),
            func.count(),
            func.coalesce(func.sum(talk), 0.0),
            func.count(talk),
        )
        .where(where, answered, col(qc.agent).is_not(None))
        .group_by(col(qc.agent))
    )
    async with engine.connect() as conn:
        queue_rows = (await conn.execute(per_queue)).all()
        agent_rows = (await conn.execute(per_agent)).all()
    queue_fields = [f.name for f in fields(QueueTotals)]
    floats = ("hold_answered", "talk")
    queues = {
        str(r[0]): QueueTotals(**_numbers(dict(zip(queue_fields, r[1:], strict=True)), floats))
        for r in queue_rows
    }
    agents = {
        str(r[0]): AgentTotals(handled=int(r[1]), talk=float(r[2] or 0), talked=int(r[3]))
        for r in agent_rows
    }
    return TodayTotals(since=since, threshold=threshold, queues=queues, agents=agents)


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """The wallboard chart at one moment: calls waiting then, service level so far."""

    at: datetime
    waiting: int
    service_level: float | None


async def day_series(
    engine: AsyncEngine,
    since: datetime,
    until: datetime,
    *,
    step: timedelta = timedelta(minutes=15),
    threshold: float = DEFAULT_THRESHOLD_S,
) -> list[SeriesPoint]:
    """The wallboard's charts rebuilt from the stored queue calls (a restart keeps the day):
    at each edge ``since + k*step`` up to ``until``, the calls that were waiting (queued,
    neither answered nor ended yet) and the service level of the calls ended so far. One
    statement: three conditional sums per edge over today's rows."""
    since, until = ensure_utc(since), ensure_utc(until)
    edges: list[datetime] = []
    at = since + step
    while at <= until and len(edges) < MAX_BUCKETS:
        edges.append(at)
        at += step
    if not edges:
        return []
    qc = QueueCallRecord
    queued, ended = col(qc.queued_at), col(qc.ended_at)
    left = func.coalesce(col(qc.answered_at), ended)
    in_sl = and_(col(qc.outcome) == COMPLETED, col(qc.hold_s) <= threshold)
    measures: list[ColumnElement[int]] = []
    for edge in edges:
        t = literal(edge, UtcDateTime())
        measures += [
            _count_if(and_(queued <= t, left > t)),
            _count_if(ended <= t),
            _count_if(and_(ended <= t, in_sl)),
        ]
    query = select(*measures).where(ended >= since, queued >= since - MAX_CALL_SPAN)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).one()
    values = [int(v or 0) for v in row]
    return [
        SeriesPoint(edge, values[3 * i], rate(values[3 * i + 2], values[3 * i + 1]))
        for i, edge in enumerate(edges)
    ]
