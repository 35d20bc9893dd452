"""The IVR report: exact counts and deflection rates, aggregated by SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import typer
from crm_fixtures import *  # noqa: F403  (the pytest fixtures)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from crm_bridge.cli import parse_when, report_app
from crm_bridge.db import init_db, make_engine
from crm_bridge.ports import CallJourney
from crm_bridge.report import IvrReport, RequestTypeStats, ivr_report
from crm_bridge.store import SqlCrm

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
BRUSSELS = ZoneInfo("Europe/Brussels")

# (call, day of November, outcome, request_type, leg)
CALLS: list[tuple[str, int, str, str | None, str]] = [
    ("c01", 2, "deflected", "certificate", "agi"),
    ("c02", 2, "deflected", "certificate", "agi"),
    ("c03", 3, "deflected", "certificate", "sip"),
    ("c04", 3, "transferred", "certificate", "agi"),
    ("c05", 4, "transferred", "tax", "agi"),
    ("c06", 4, "deflected", "tax", "agi"),
    ("c07", 5, "callback", "tax", "agi"),
    ("c08", 5, "transferred", "tax", "agi"),
    ("c09", 6, "abandoned", None, "agi"),
    ("c10", 6, "abandoned", None, "agi"),
    ("c11", 6, "deflected", "opening_hours", "agi"),
    ("s01", 3, "deflected", "tax", "simulator"),  # test calls
    ("s02", 3, "deflected", "tax", "simulator"),
    ("old", -5, "deflected", "certificate", "agi"),  # October: outside the period
]


def _journey(
    call_id: str, day: int, outcome: str, request_type: str | None, leg: str
) -> CallJourney:
    start = NOV_1 + timedelta(days=day - 1, hours=9)
    return CallJourney(
        call_id=call_id,
        flow="commune",
        flow_hash="h1",
        leg=leg,
        caller="+32470123456",
        started_at=start,
        ended_at=start + timedelta(seconds=60),
        outcome=outcome,
        request_type=request_type,
    )


async def _load(engine: AsyncEngine) -> None:
    crm = SqlCrm(engine)
    for call in CALLS:
        await crm.save_journey(_journey(*call))


async def test_report_counts_and_rates(crm_engine: AsyncEngine) -> None:
    await _load(crm_engine)
    report = await ivr_report(crm_engine, since=NOV_1)
    assert report.outcomes == {"deflected": 5, "transferred": 3, "abandoned": 2, "callback": 1}
    assert report.total_calls == 11
    assert report.deflected == 5
    assert report.deflection_rate == pytest.approx(5 / 11)
    assert report.request_types == (
        RequestTypeStats("certificate", calls=4, deflected=3),
        RequestTypeStats("tax", calls=4, deflected=1),
        RequestTypeStats(None, calls=2, deflected=0),
        RequestTypeStats("opening_hours", calls=1, deflected=1),
    )
    rates = {s.request_type: s.deflection_rate for s in report.request_types}
    assert rates == {"certificate": 0.75, "tax": 0.25, None: 0.0, "opening_hours": 1.0}


async def test_simulated_calls_only_on_request(crm_engine: AsyncEngine) -> None:
    await _load(crm_engine)
    report = await ivr_report(crm_engine, since=NOV_1, include_simulated=True)
    assert report.outcomes["deflected"] == 7
    assert report.total_calls == 13
    tax = next(s for s in report.request_types if s.request_type == "tax")
    assert (tax.calls, tax.deflected, tax.deflection_rate) == (6, 3, 0.5)


async def test_period_is_half_open(crm_engine: AsyncEngine) -> None:
    await _load(crm_engine)
    nov_3 = NOV_1 + timedelta(days=2, hours=9)  # exactly c03's and c04's start
    report = await ivr_report(crm_engine, since=NOV_1, until=nov_3)
    assert report.outcomes == {"deflected": 2}
    report = await ivr_report(crm_engine, since=nov_3, until=nov_3 + timedelta(days=1))
    assert report.outcomes == {"deflected": 1, "transferred": 1}
    assert report.until == nov_3 + timedelta(days=1)


async def test_period_in_another_time_zone(crm_engine: AsyncEngine) -> None:
    await _load(crm_engine)
    # 2 November 10:00 in Brussels is 09:00 UTC: c01 and c02 start exactly then.
    since = datetime(2026, 11, 2, 10, 0, tzinfo=BRUSSELS)
    report = await ivr_report(crm_engine, since=since, until=since + timedelta(seconds=1))
    assert report.total_calls == 2
    assert report.since == since and report.since.tzinfo == UTC


async def test_empty_period(crm_engine: AsyncEngine) -> None:
    report = await ivr_report(crm_engine, since=NOV_1)
    assert (report.total_calls, report.deflection_rate, report.request_types) == (0, 0.0, ())


async def test_naive_since_is_refused(crm_engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="naive"):
        await ivr_report(crm_engine, since=datetime(2026, 11, 1))


async def test_report_is_two_grouped_queries(sqlite_engine: AsyncEngine) -> None:
    await _load(sqlite_engine)
    statements: list[str] = []

    def log(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(sqlite_engine.sync_engine, "before_cursor_execute", log)
    try:
        await ivr_report(sqlite_engine, since=NOV_1)
    finally:
        event.remove(sqlite_engine.sync_engine, "before_cursor_execute", log)
    assert len(statements) == 2
    assert all("GROUP BY" in s and "count(" in s for s in statements)


def test_to_dict() -> None:
    report = IvrReport(
        since=NOV_1,
        until=None,
        include_simulated=False,
        outcomes={"deflected": 1, "transferred": 3},
        request_types=(RequestTypeStats("tax", 4, 1),),
    )
    assert report.to_dict() == {
        "since": "2026-11-01T00:00:00+00:00",
        "until": None,
        "include_simulated": False,
        "total_calls": 4,
        "deflected": 1,
        "deflection_rate": 0.25,
        "outcomes": {"deflected": 1, "transferred": 3},
        "request_types": [
            {"request_type": "tax", "calls": 4, "deflected": 1, "deflection_rate": 0.25}
        ],
    }


# --- CLI ----------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-11-01", datetime(2026, 10, 31, 23, 0, tzinfo=UTC)),  # midnight in Brussels
        ("2026-07-01", datetime(2026, 6, 30, 22, 0, tzinfo=UTC)),  # summer time
        ("2026-11-01T08:00", datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
        ("2026-11-01T08:00:00+00:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        ("2026-11-01T08:00Z", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_parse_when(value: str, expected: datetime) -> None:
    parsed = parse_when(value, tz=BRUSSELS, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo == UTC


def test_parse_when_rejects_garbage() -> None:
    with pytest.raises(typer.BadParameter):
        parse_when("last tuesday", tz=BRUSSELS, now=NOW)


@pytest.fixture
async def report_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    engine = make_engine(url)
    try:
        await init_db(engine)
        await _load(engine)
    finally:
        await engine.dispose()
    return url


def test_cli_json(report_db: str) -> None:
    result = CliRunner().invoke(
        report_app,
        [
            "ivr",
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-01",
            "--json",
            "--tz",
            "UTC",
            "--database-url",
            report_db,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total_calls"] == 11
    assert data["outcomes"]["deflected"] == 5
    assert data["request_types"][0] == {
        "request_type": "certificate",
        "calls": 4,
        "deflected": 3,
        "deflection_rate": 0.75,
    }


def test_cli_table_with_simulated(report_db: str) -> None:
    result = CliRunner().invoke(
        report_app,
        ["ivr", "--since", "2026-11-01", "--include-simulated", "--database-url", report_db],
    )
    assert result.exit_code == 0, result.output
    assert "certificate" in result.output
    assert "75.0 %" in result.output  # certificate
    assert "50.0 %" in result.output  # tax, with the two simulator calls
    assert "simulator calls included" in result.output


def test_cli_rejects_bad_period(report_db: str) -> None:
    result = CliRunner().invoke(
        report_app,
        ["ivr", "--since", "2026-11-10", "--until", "2026-11-01", "--database-url", report_db],
    )
    assert result.exit_code == 2
