"""KPIs by SQL on SQLite and PostgreSQL: the figures of Asterisk's recorded calls exactly, Brussels
periods (across the end of summer time), IVR deflection and callbacks, first-contact
resolution, and the wallboard's start-up totals."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from crm_fixtures import *  # noqa: F403  (crm_engine: SQLite, then PostgreSQL)
from openpyxl import load_workbook
from sqlalchemy import delete, event
from sqlalchemy.ext.asyncio import AsyncEngine
from test_call_records import ABANDONED, ANSWERED, NO_ANSWER, record_scenarios
from typer.testing import CliRunner

from crm_bridge.case_models import Case, Interaction
from crm_bridge.db import init_db, make_engine, session_factory
from crm_bridge.kpi import (
    BRUSSELS,
    KpiRangeError,
    KpiRow,
    buckets,
    day_series,
    kpi_table,
    totals_since,
)
from crm_bridge.ports import CallJourney
from crm_bridge.store import SqlCrm
from crm_bridge.supervision_models import QueueCallRecord
from guichet.cli import app


@pytest.fixture
async def engine(crm_engine: AsyncEngine) -> AsyncEngine:
    """crm_engine with the tables it does not rebuild emptied (the shared PostgreSQL)."""
    async with crm_engine.begin() as conn:
        for model in (QueueCallRecord, Interaction, Case):
            await conn.execute(delete(model))
    return crm_engine


def figures(row: KpiRow) -> dict[str, Any]:
    return {
        "offered": row.offered,
        "answered": row.answered,
        "abandoned": row.abandoned,
        "lost": row.lost,
        "within": row.answered_within,
        "sl": row.service_level,
        "asa": row.asa,
        "aht": row.aht,
        "abandon_rate": row.abandon_rate,
    }


async def test_the_kpis_of_the_recorded_calls_are_exact(engine: AsyncEngine) -> None:
    rows = await record_scenarios(engine, "inbound-answered", "inbound-abandoned", "ring-no-answer")
    assert set(rows) == {ANSWERED, ABANDONED, NO_ANSWER}
    now = datetime.now(UTC)
    table = await kpi_table(engine, now - timedelta(days=1), now + timedelta(days=1))
    today = now.astimezone(BRUSSELS).date()
    by_queue = {r.key: r for r in table.rows if r.offered}
    assert {r.bucket.day for r in by_queue.values()} == {today}
    # inbound-answered: HoldTime 2, TalkTime 3
    assert figures(by_queue["population-nl"]) == {
        "offered": 1, "answered": 1, "abandoned": 0, "lost": 0, "within": 1,
        "sl": 1.0, "asa": 2.0, "aht": 3.0, "abandon_rate": 0.0,
    }  # fmt: skip
    # inbound-abandoned (HoldTime 8, abandoned) + ring-no-answer (HoldTime 19 ≤ 20, TalkTime 3):
    # the abandoned call stays in the service level's denominator
    assert figures(by_queue["population-fr"]) == {
        "offered": 2, "answered": 1, "abandoned": 1, "lost": 0, "within": 1,
        "sl": 0.5, "asa": 19.0, "aht": 3.0, "abandon_rate": 0.5,
    }  # fmt: skip

    strict = await kpi_table(
        engine, now - timedelta(hours=1), now + timedelta(hours=1), by="all", threshold=15
    )
    (overall,) = [r for r in strict.rows if r.offered]
    assert overall.key is None
    assert figures(overall) == {
        "offered": 3, "answered": 2, "abandoned": 1, "lost": 0, "within": 1,  # 19 s > 15 s
        "sl": 1 / 3, "asa": 10.5, "aht": 3.0, "abandon_rate": 1 / 3,
    }  # fmt: skip

    by_lang = await kpi_table(engine, now - timedelta(hours=1), now, by="lang", period="month")
    assert {r.key: (r.offered, r.answered) for r in by_lang.rows} == {"nl": (1, 1), "fr": (2, 1)}

    totals = await totals_since(engine, now - timedelta(hours=1))
    nl, fr = totals.queues["population-nl"], totals.queues["population-fr"]
    assert (nl.answered, nl.abandoned, nl.unanswered, nl.answered_within) == (1, 0, 0, 1)
    assert (nl.hold_answered, nl.talk, nl.talked) == (2.0, 3.0, 1)
    assert (fr.answered, fr.abandoned, fr.unanswered, fr.answered_within) == (1, 1, 0, 1)
    assert (fr.hold_answered, fr.talk, fr.talked) == (19.0, 3.0, 1)
    assert {a: (t.handled, t.talk, t.talked) for a, t in totals.agents.items()} == {
        "agent1": (1, 3.0, 1),
        "agent2": (1, 3.0, 1),
    }
    later = await totals_since(engine, now + timedelta(minutes=1))
    assert later.queues == {} and later.agents == {}


# 2026-10-25: summer time ends in Brussels at 03:00 CEST (01:00 UTC); that day has 25 hours.
def utc(day: int, hour: int, minute: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def call(
    call_id: str,
    queued_at: datetime,
    outcome: str,
    *,
    queue: str = "population-fr",
    lang: str = "fr",
    hold: float | None = None,
    talk: float | None = None,
    transferred: bool = False,
) -> QueueCallRecord:
    return QueueCallRecord(
        call_id=call_id,
        queue=queue,
        lang=lang,
        request_type=queue.split("-")[0],
        queued_at=queued_at,
        answered_at=queued_at + timedelta(seconds=hold or 0) if outcome == "completed" else None,
        ended_at=queued_at + timedelta(minutes=5),
        outcome=outcome,
        hold_s=hold,
        talk_s=talk,
        agent="agent1" if outcome == "completed" else None,
        transferred=transferred,
    )


def the_calls() -> list[QueueCallRecord]:
    """Fresh rows each time (an ORM instance belongs to one session)."""
    return [
        # Saturday 24 Oct, 23:30 UTC = Sunday 25 Oct 01:30 CEST: Sunday in Brussels
        call("sun-1", utc(24, 23, 30), "completed", hold=20.0, talk=100.0),  # exactly at the target
        call("sun-2", utc(25, 10), "abandoned", hold=5.0),  # a short abandon still counts offered
        # Sunday 25 Oct 23:30 UTC = Monday 26 Oct 00:30 CET (after the change): Monday, next week
        call("mon-1", utc(25, 23, 30), "completed", hold=21.0, talk=200.0),
        call("mon-2", utc(26, 9), "unanswered"),
        call("mon-3", utc(26, 9, 5), "lost"),
        call(
            "mon-nl",
            utc(26, 9, 10),
            "completed",
            queue="population-nl",
            lang="nl",
            hold=3.0,
            talk=60.0,
            transferred=True,
        ),
        call("nov-1", utc(1, 9, month=11), "completed", hold=0.0, talk=30.0),
        # Saturday 31 Oct 23:30 UTC = Sunday 1 Nov 00:30 CET: November in Brussels
        call("nov-2", utc(31, 23, 30), "abandoned", hold=40.0),
    ]


def journey(call_id: str, started_at: datetime, outcome: str, **fields: Any) -> CallJourney:
    return CallJourney(call_id=call_id, flow="commune", flow_hash="h", leg=fields.pop("leg", "agi"),
                       caller="0470123456", started_at=started_at,
                       ended_at=started_at + timedelta(minutes=1), outcome=outcome, **fields)  # fmt: skip


JOURNEYS = [
    journey("j1", utc(25, 9), "deflected", lang="fr", request_type="population"),
    journey("j2", utc(25, 9, 5), "callback", lang="fr", request_type="population"),
    journey(
        "j3", utc(25, 9, 10), "queued", lang="fr", request_type="population", queue="population-fr"
    ),
    journey("j4", utc(26, 9), "deflected", lang="nl", request_type="population"),
    journey("sim", utc(26, 9), "deflected", lang="nl", request_type="population", leg="simulator"),
]


async def load(engine: AsyncEngine) -> None:
    crm = SqlCrm(engine)
    for j in JOURNEYS:
        await crm.save_journey(j)
    async with session_factory(engine)() as session, session.begin():
        session.add_all(the_calls())
        closed = utc(26, 15)
        cases = {
            "one-call": Case(reference="C-1", status="closed", closed_at=closed, queue="population-fr",
                             language="fr", category="population"),
            "transferred": Case(reference="C-2", status="closed", closed_at=closed,
                                queue="population-nl", language="nl", category="population"),
            "two-calls": Case(reference="C-3", status="closed", closed_at=closed,
                              queue="population-fr", language="fr", category="population"),
            "no-contact": Case(reference="C-4", status="closed", closed_at=closed,
                               queue="population-fr", language="fr", category="population"),
            "open": Case(reference="C-5", status="in_progress", queue="population-fr",
                         language="fr", category="population"),
        }  # fmt: skip
        session.add_all(cases.values())
        await session.flush()

        def contact(case: str, call_id: str) -> Interaction:
            case_id = cases[case].id
            assert case_id is not None
            return Interaction(case_id=case_id, call_id=call_id, started_at=closed)

        session.add_all([
            contact("one-call", "mon-1"),
            contact("transferred", "mon-nl"),  # its queue call was transferred: escalated
            contact("two-calls", "sun-1"),
            contact("two-calls", "nov-1"),
            contact("open", "mon-2"),
        ])  # fmt: skip


async def test_periods_follow_brussels_time_and_every_source_is_counted(
    engine: AsyncEngine,
) -> None:
    await load(engine)
    since, until = utc(24, 12), utc(2, 12, month=11)  # Sat 24 Oct .. Mon 2 Nov (Brussels)
    days = await kpi_table(engine, since, until, period="day", by="all")
    assert [b.label for b in days.buckets][:3] == ["2026-10-24", "2026-10-25", "2026-10-26"]
    assert days.buckets[1].end - days.buckets[1].start == timedelta(hours=25)
    per_day = {r.bucket.label: r for r in days.rows}
    sunday, monday, nov_1 = per_day["2026-10-25"], per_day["2026-10-26"], per_day["2026-11-01"]
    assert (sunday.offered, sunday.answered, sunday.abandoned, sunday.answered_within) == (
        2,
        1,
        1,
        1,
    )
    assert sunday.service_level == 0.5
    assert (sunday.ivr_calls, sunday.deflected, sunday.callbacks) == (3, 1, 1)
    assert sunday.deflection_rate == pytest.approx(1 / 3)
    assert (monday.offered, monday.answered, monday.lost, monday.answered_within) == (4, 2, 2, 1)
    assert (monday.asa, monday.aht) == (12.0, 130.0)
    assert (monday.ivr_calls, monday.deflected) == (1, 1)  # the simulator call is left out
    assert (monday.cases_closed, monday.first_contact, monday.fcr_rate) == (4, 1, 0.25)
    assert (nov_1.offered, nov_1.answered, nov_1.abandoned) == (2, 1, 1)
    assert "2026-10-24" not in per_day  # 23:30 UTC on Saturday was Sunday in Brussels

    weeks = await kpi_table(engine, since, until, period="week", by="queue")
    assert [b.label for b in weeks.buckets] == ["2026-W43", "2026-W44", "2026-W45"]
    assert weeks.buckets[1].day.isoformat() == "2026-10-26"  # weeks start on Monday
    per_week = {(r.bucket.label, r.key): r for r in weeks.rows}
    assert per_week[("2026-W43", "population-fr")].offered == 2
    assert per_week[("2026-W44", "population-fr")].offered == 5  # mon-1..3, nov-1, nov-2
    assert per_week[("2026-W44", "population-nl")].offered == 1
    # IVR calls that never reached a queue have no queue
    assert (per_week[("2026-W43", None)].deflected, per_week[("2026-W43", None)].offered) == (1, 0)

    months = await kpi_table(engine, since, until, period="month", by="lang")
    per_month = {(r.bucket.label, r.key): r for r in months.rows}
    assert per_month[("2026-10", "fr")].offered == 5
    assert per_month[("2026-11", "fr")].offered == 2
    assert per_month[("2026-10", "nl")].offered == 1
    assert per_month[("2026-10", "fr")].fcr_rate == pytest.approx(1 / 3)
    assert per_month[("2026-10", "nl")].fcr_rate == 0.0  # transferred: not first-contact
    assert months.to_dict()["rows"][0]["period"] == "2026-10"


async def test_kpis_are_aggregated_by_the_database(engine: AsyncEngine) -> None:
    await load(engine)
    statements: list[str] = []

    def log(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", log)
    try:
        await kpi_table(engine, utc(20, 0), utc(2, 0, month=11), by="request_type")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", log)
    assert len(statements) == 3
    assert all("GROUP BY" in s for s in statements)


def test_a_range_must_be_forward_and_not_too_long() -> None:
    with pytest.raises(KpiRangeError):
        buckets(utc(2, 0), utc(1, 0), "day")
    with pytest.raises(KpiRangeError, match="more than"):
        buckets(utc(1, 0), utc(1, 0) + timedelta(days=500), "day")
    assert len(buckets(utc(1, 0), utc(1, 0) + timedelta(days=500), "week")) == 72


async def test_the_cli_writes_csv_xlsx_and_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    await init_db(engine)
    await load(engine)
    await engine.dispose()
    csv_file, xlsx_file = tmp_path / "kpi.csv", tmp_path / "kpi.xlsx"
    args = ["report", "kpi", "--since", "2026-10-25", "--until", "2026-10-27", "--by", "all",
            "--database-url", url]  # fmt: skip
    runner = CliRunner()
    written = await asyncio.to_thread(
        runner.invoke,
        app,
        [*args, "--csv", str(csv_file), "--xlsx", str(xlsx_file), "--lang", "nl"],
    )
    assert written.exit_code == 0, written.output
    lines = csv_file.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("Periode,Globaal,Aangeboden,")
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["2026-10-25", "Alle oproepen", "2"],
        ["2026-10-26", "Alle oproepen", "4"],
    ]
    assert load_workbook(xlsx_file).active is not None
    printed = await asyncio.to_thread(runner.invoke, app, [*args, "--json"])
    assert printed.exit_code == 0, printed.output
    assert [r["offered"] for r in json.loads(printed.output)["rows"]] == [2, 4]


async def test_the_wallboard_charts_are_rebuilt_from_the_day_on_both_databases(
    engine: AsyncEngine,
) -> None:
    """Waiting at each edge and the service level so far, from today's stored calls."""
    day = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

    def at(minute: int) -> datetime:
        return day + timedelta(minutes=minute)

    def call(n: int, queued: int, answered: int | None, ended: int, outcome: str) -> Any:
        return QueueCallRecord(
            call_id=f"series-{n}",
            queue="population-fr",
            queued_at=at(queued),
            answered_at=at(answered) if answered is not None else None,
            ended_at=at(ended),
            outcome=outcome,
            hold_s=(answered - queued) * 60.0 if answered is not None else None,
        )

    async with session_factory(engine)() as session:
        session.add_all([
            call(1, 5, 6, 20, "completed"),  # waits 8:05-8:06, 60 s: out of SL
            call(2, 12, None, 18, "abandoned"),  # waits 8:12-8:18
            call(3, 14, None, 40, "unanswered"),  # waits 8:14-8:40
            call(4, 50, 50, 55, "completed"),  # answered at once: in SL
        ])  # fmt: skip
        await session.commit()
    points = await day_series(engine, day, day + timedelta(minutes=60), step=timedelta(minutes=15))
    assert [(p.at - day, p.waiting) for p in points] == [
        (timedelta(minutes=15), 2),  # calls 2 and 3
        (timedelta(minutes=30), 1),  # call 3
        (timedelta(minutes=45), 0),
        (timedelta(minutes=60), 0),
    ]
    # ended by 8:15: none; by 8:30: 1 and 2 (0 in SL); by 8:45: + 3; by 9:00: + 4 (in SL)
    assert [p.service_level for p in points] == [None, 0.0, 0.0, 0.25]
