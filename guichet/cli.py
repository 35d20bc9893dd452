"""The `guichet` command: one entry point, sub-commands per area."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, cast

import typer

from audio.cli import app as audio_app
from console.cli import users_app
from crm_bridge.cli import (
    DEFAULT_TZ,
    DatabaseUrl,
    citizens_app,
    parse_when,
    parse_zone,
    report_app,
    with_engine,
)
from guichet.asterisk_render import app as asterisk_app
from guichet.demo.cli import demo_app
from guichet.probe.cli import probe_app
from ivr.cli import app as flow_app

app = typer.Typer(
    no_args_is_help=True,
    help="Guichet: telephony-first CTI and IVR server for public-administration contact centres.",
)
app.add_typer(flow_app, name="flow")
app.add_typer(audio_app, name="audio", help="Prompt audio: TTS and telephony conversion.")
app.add_typer(citizens_app, name="citizens", help="The citizen directory.")
app.add_typer(report_app, name="report", help="Reports on calls.")
app.add_typer(demo_app, name="demo", help="Demo data and a demo PBX (no Asterisk needed).")
app.add_typer(users_app, name="users", help="Console users (agents, supervisors, admins).")
app.add_typer(
    asterisk_app, name="asterisk", help="Asterisk configuration rendered from Guichet's data."
)
app.add_typer(probe_app, name="probe", help="Mystery caller: call the line and measure it.")


@app.command()
def serve(
    agi_port: Annotated[
        int | None, typer.Option(help="FastAGI port (default from settings).")
    ] = None,
    console_port: Annotated[
        int | None, typer.Option(help="Console port (default from settings).")
    ] = None,
) -> None:
    """Run Guichet: FastAGI server, flow hot reload and the web console."""
    from guichet.server import run_server

    run_server(agi_port=agi_port, console_port=console_port)


@report_app.command("kpi")
def kpi_command(
    since: Annotated[
        str, typer.Option(help="Start: 2026-11-01, an ISO datetime, or 7d / 12h / 2w back.")
    ],
    until: Annotated[
        str | None, typer.Option(help="End, exclusive (same forms); default: now.")
    ] = None,
    period: Annotated[str, typer.Option(help="day, week or month (Brussels time).")] = "day",
    by: Annotated[str, typer.Option(help="queue, lang, request_type or all.")] = "queue",
    threshold: Annotated[float, typer.Option(help="Service-level target, seconds.")] = 20.0,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Write CSV to FILE.")] = None,
    xlsx_file: Annotated[Path | None, typer.Option("--xlsx", help="Write XLSX to FILE.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    lang: Annotated[str, typer.Option(help="Language of the headers: fr, nl or en.")] = "en",
    tz: Annotated[str, typer.Option(help="Zone for dates without an offset.")] = DEFAULT_TZ,
    database_url: DatabaseUrl = None,
) -> None:
    """Offered, answered, abandoned, service level, ASA, AHT, deflection, callbacks and
    first-contact resolution per period (whole periods overlapping the range)."""
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table

    from console.i18n import Translator
    from console.routers.reports import export_labels
    from crm_bridge.kpi import DIMENSIONS, PERIODS, Dimension, KpiRangeError, Period, kpi_table
    from crm_bridge.kpi_export import headers, rows, to_csv, to_xlsx

    if period not in PERIODS:
        raise typer.BadParameter(f"--period must be one of {', '.join(PERIODS)}")
    if by not in DIMENSIONS:
        raise typer.BadParameter(f"--by must be one of {', '.join(DIMENSIONS)}")
    zone = parse_zone(tz)
    start = parse_when(since, tz=zone)
    end = parse_when(until, tz=zone) if until else datetime.now(UTC)
    try:
        table = asyncio.run(
            with_engine(
                database_url,
                lambda engine: kpi_table(
                    engine,
                    start,
                    end,
                    period=cast(Period, period),
                    by=cast(Dimension, by),
                    threshold=threshold,
                ),
            )
        )
    except KpiRangeError as exc:
        raise typer.BadParameter(str(exc)) from None
    translator = Translator.load()
    labels, none_label = export_labels(translator, lang, by)
    if csv_file is not None:
        csv_file.write_text(to_csv(table, labels, none_label=none_label), encoding="utf-8")
    if xlsx_file is not None:
        title = translator.t("reports.sheet", lang)
        xlsx_file.write_bytes(to_xlsx(table, labels, none_label=none_label, title=title))
    if as_json:
        typer.echo(json.dumps(table.to_dict(), indent=2))
    elif csv_file is None and xlsx_file is None:
        out = Table(title=f"KPI per {period}, by {by} ({zone.key}, SL ≤ {threshold:g} s)")
        for header in headers(labels):
            out.add_column(header, overflow="fold")
        for values in rows(table, none_label):
            out.add_row(*("" if v is None else str(v) for v in values))
        Console().print(out)


if __name__ == "__main__":
    app()
