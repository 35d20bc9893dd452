"""``guichet citizens ...`` and ``guichet report ...``: mounted by the main CLI (guichet.cli).

Each command owns its engine for the duration of one ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.citizens_import import ImportReport, import_citizens
from crm_bridge.db import init_db, make_engine
from crm_bridge.report import IvrReport, ivr_report
from guichet.settings import get_settings

citizens_app = typer.Typer(help="The citizen directory.", no_args_is_help=True)
report_app = typer.Typer(help="Reports on IVR calls.", no_args_is_help=True)


@citizens_app.callback()
def _citizens() -> None:
    """The citizen directory."""  # a callback keeps "import" a subcommand when run standalone


@report_app.callback()
def _report() -> None:
    """Reports on IVR calls."""


DEFAULT_TZ = "Europe/Brussels"
_RELATIVE = re.compile(r"^\s*(\d+)\s*([wdhm])\s*$", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default: DATABASE_URL / the server settings).",
        show_default=False,
    ),
]


def parse_when(value: str, *, tz: ZoneInfo, now: datetime | None = None) -> datetime:
    """Parse ``7d``/``12h``/``2w``/``30m`` (before now), a date (midnight in ``tz``) or an ISO
    datetime (``tz`` when it carries no offset). Returns an aware UTC datetime."""
    now = now or datetime.now(UTC)
    if match := _RELATIVE.match(value):
        amount, unit = int(match.group(1)), match.group(2).lower()
        return (now - timedelta(**{_UNITS[unit]: amount})).astimezone(UTC)
    text = value.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: expected a date (2026-11-01), an ISO datetime or a span like 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"unknown time zone {name!r}") from None


def _database_url(url: str | None) -> str:
    return url or get_settings().database_url


async def with_engine(url: str | None, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    engine = make_engine(_database_url(url))
    try:
        await init_db(engine)
        return await work(engine)
    finally:
        await engine.dispose()


def _print_import(console: Console, errors: Console, path: Path, report: ImportReport) -> None:
    for error in report.errors:  # one greppable FILE:LINE: line each, on stderr
        errors.print(error, style="red", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Citizen import: {path}", markup=False, highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("Result")
    table.add_column("Rows", justify="right")
    table.add_row("inserted", str(report.inserted))
    table.add_row("updated", str(report.updated))
    table.add_row("unchanged", str(report.unchanged))
    table.add_row("rejected", str(report.rejected), style="red" if report.rejected else None)
    console.print(table)


@citizens_app.command("import")
def import_command(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file (; or ,)."),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Import or update citizens from CSV; exits 1 when any row is rejected."""
    report = asyncio.run(with_engine(database_url, lambda engine: import_citizens(engine, file)))
    _print_import(Console(), Console(stderr=True), file, report)
    if not report.ok:
        raise typer.Exit(code=1)


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def _print_report(console: Console, report: IvrReport, tz: ZoneInfo) -> None:
    since = report.since.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    until = report.until.astimezone(tz).strftime("%Y-%m-%d %H:%M") if report.until else "now"
    scope = "" if not report.include_simulated else ", simulator calls included"
    console.print(
        f"IVR calls from {since} to {until} ({tz.key}{scope})", markup=False, soft_wrap=True
    )

    outcomes = Table(title="Calls per outcome")
    outcomes.add_column("Outcome")
    outcomes.add_column("Calls", justify="right")
    outcomes.add_column("Share", justify="right")
    for name, count in report.outcomes.items():
        outcomes.add_row(name, str(count), _percent(count / report.total_calls))
    outcomes.add_row("total", str(report.total_calls), "", style="bold")
    console.print(outcomes)

    deflection = Table(title="Deflection per request type")
    deflection.add_column("Request type")
    deflection.add_column("Calls", justify="right")
    deflection.add_column("Deflected", justify="right")
    deflection.add_column("Rate", justify="right")
    for stats in report.request_types:
        deflection.add_row(
            stats.request_type or "(none)",
            str(stats.calls),
            str(stats.deflected),
            _percent(stats.deflection_rate),
        )
    deflection.add_row(
        "all",
        str(report.total_calls),
        str(report.deflected),
        _percent(report.deflection_rate),
        style="bold",
    )
    console.print(deflection)


@report_app.command("ivr")
def ivr_command(
    since: Annotated[
        str, typer.Option(help="Start: 2026-11-01, an ISO datetime, or 7d / 12h / 2w back.")
    ],
    until: Annotated[
        str | None, typer.Option(help="End, exclusive (same forms); default: now.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    include_simulated: Annotated[
        bool, typer.Option("--include-simulated", help="Count simulator test calls too.")
    ] = False,
    tz: Annotated[str, typer.Option(help="Zone for dates without an offset.")] = DEFAULT_TZ,
    database_url: DatabaseUrl = None,
) -> None:
    """Calls per outcome and deflection rate per request type."""
    zone = parse_zone(tz)
    start = parse_when(since, tz=zone)
    end = parse_when(until, tz=zone) if until else None
    if end is not None and end <= start:
        raise typer.BadParameter("--until must be after --since")
    report = asyncio.run(
        with_engine(
            database_url,
            lambda engine: ivr_report(engine, start, end, include_simulated=include_simulated),
        )
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(Console(), report, zone)
