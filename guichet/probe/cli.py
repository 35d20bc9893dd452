"""``guichet probe ...``: the mystery caller from the command line (mounted by guichet.cli)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.cli import DatabaseUrl, with_engine
from guichet.probe.caller import PASSED, ProbeReport, run_probe
from guichet.probe.config import ProbeConfigError, ProbeSettings, account_for
from guichet.probe.script import ProbeScript, ScriptError, load_script

probe_app = typer.Typer(
    help="Mystery caller: call the line, measure it, check the greeting.", no_args_is_help=True
)

Lang = Annotated[str, typer.Option(help="Language of the sentences: fr, nl or en.")]


def _load(path: Path) -> ProbeScript:
    try:
        return load_script(path)
    except ScriptError as exc:
        err = Console(stderr=True)
        for issue in exc.issues:
            err.print(str(issue), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@probe_app.command("check")
def check_command(scripts: Annotated[list[Path], typer.Argument(help="Probe scripts.")]) -> None:
    """Check probe scripts (schema, DTMF digits, prompt files): FILE:LINE: message."""
    for path in scripts:
        script = _load(path)
        typer.echo(f"{path}: ok ({script.name}: {len(script.steps)} steps)")


@probe_app.command("run")
def run_command(
    script_file: Annotated[Path, typer.Argument(metavar="SCRIPT.yaml", help="The probe script.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    server: Annotated[str | None, typer.Option(help="SIP registrar/proxy host.")] = None,
    port: Annotated[int | None, typer.Option(help="SIP port (default 5060).")] = None,
    password: Annotated[str | None, typer.Option(help="SIP password of the probe user.")] = None,
    store: Annotated[bool, typer.Option(help="Store the result in probe_run.")] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Place one probe call now; exit 1 unless it passed."""
    script = _load(script_file)
    settings = ProbeSettings()
    try:
        account = account_for(script, settings, server=server, port=port, password=password)
    except ProbeConfigError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def work(engine: AsyncEngine) -> ProbeReport:
        report = await run_probe(script, account, engine=engine, recordings=settings.recordings_dir)
        if store:
            from guichet.probe.store import ProbeStore

            await ProbeStore(engine).save(report)
        return report

    report = asyncio.run(with_engine(database_url, work))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_report(report)
    if report.outcome != PASSED:
        raise typer.Exit(1)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _print_report(report: ProbeReport) -> None:
    console = Console()
    table = Table(title=f"Probe {report.script} → {report.target} ({report.outcome})")
    table.add_column("measure")
    table.add_column("value")
    table.add_row("started", report.started_at.isoformat(timespec="seconds"))
    table.add_row("answered after", _seconds(report.answered_s))
    table.add_row(f"in the menus ({report.ivr_source or '—'})", _seconds(report.ivr_s))
    table.add_row("agent after", _seconds(report.agent_s))
    greeting = "—" if report.greeting_ok is None else ("ok" if report.greeting_ok else "WRONG")
    table.add_row("greeting", f"{greeting} (score {report.greeting_score})")
    table.add_row("DTMF sent", report.digits or "—")
    table.add_row("recording", report.recording or "—")
    console.print(table)
    for line in report.detail:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@probe_app.command("history")
def history_command(
    script: Annotated[str | None, typer.Option(help="Only this script's runs.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    lang: Lang = "en",
    database_url: DatabaseUrl = None,
) -> None:
    """Past probe calls, newest first, with the wallboard's sentence."""
    from console.i18n import Translator
    from guichet.probe.display import run_view
    from guichet.probe.store import ProbeStore

    async def work(engine: AsyncEngine) -> list[dict[str, object]]:
        translator = Translator.load()
        runs = await ProbeStore(engine).history(script, limit)
        return [run_view(r, translator, lang) for r in runs]

    views = asyncio.run(with_engine(database_url, work))
    if as_json:
        typer.echo(json.dumps(views, indent=2, default=str))
        return
    table = Table(title="Probe runs")
    for column in ("started", "script", "outcome", "summary"):
        table.add_column(column, overflow="fold")
    for view in views:
        table.add_row(
            str(view["started_at"]),
            str(view["script"]),
            str(view["outcome_label"]),
            str(view["text"]),
        )
    Console().print(table)


__all__ = ["probe_app"]
