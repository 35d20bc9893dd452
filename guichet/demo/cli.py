"""`guichet demo ...`: demo data and the demo PBX (mounted by guichet.cli as `demo`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserService
from guichet.demo.pbx import (
    DEFAULT_AMI_PORT,
    DEFAULT_INTERVAL,
    LOOPBACK,
    DemoPbx,
    DemoRefused,
    refuse_real_asterisk,
    start_demo_pbx,
)
from guichet.demo.seed import SeedReport, seed_demo
from guichet.logging_setup import setup_logging
from guichet.settings import Settings, get_settings

__all__ = ["demo_app", "run_demo_pbx", "start_demo_pbx"]

demo_app = typer.Typer(help="Demo data and a demo PBX (no Asterisk needed).", no_args_is_help=True)


@demo_app.callback()
def _demo() -> None:
    """Demo data and a demo PBX, for trying Guichet without Asterisk."""


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"error: {message}", style="red", markup=False, highlight=False)
    return typer.Exit(code=1)


def _print_seed(report: SeedReport) -> None:
    out = Console(highlight=False)
    if report.passwords:
        table = Table(title="Demo console users — passwords shown ONCE, note them now")
        for column in ("user", "password"):
            table.add_column(column)
        for username, password in report.passwords.items():
            table.add_row(username, password)
        out.print(table)
    if report.users_kept:
        out.print(
            f"users already there, passwords unchanged: {', '.join(report.users_kept)}"
            " (--reset-passwords to get new ones)",
            markup=False,
        )
    c = report.citizens
    out.print(
        f"demo citizens: {c.inserted} added, {c.updated} updated, {c.unchanged} unchanged",
        markup=False,
    )
    for error in c.errors:
        out.print(f"  {error}", markup=False)
    out.print(
        f"knowledge articles: {len(report.articles_written)} written,"
        f" {len(report.articles_kept)} unchanged",
        markup=False,
    )
    out.print(
        f"queues: {len(report.queues_added)} added, {len(report.queues_kept)} already there",
        markup=False,
    )


@demo_app.command("seed")
def seed_command(
    reset_passwords: Annotated[
        bool, typer.Option(help="Give the existing demo users new passwords (printed).")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Seed even though GUICHET_AMI_HOST names a real Asterisk.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Database URL (default: DATABASE_URL / the server settings).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Demo users (agent1, agent2, supervisor, admin), citizens, articles and the flows'
    queues. Safe to run again: what exists is left alone."""
    settings = get_settings()
    if settings.ami_host and not force:
        raise _fail(
            f"GUICHET_AMI_HOST is set ({settings.ami_host}): this looks like a real"
            " installation; demo users and data are not seeded there (--force to insist)"
        )

    async def work() -> SeedReport:
        engine = make_engine(database_url or settings.database_url)
        try:
            await init_db(engine)
            return await seed_demo(
                engine,
                flows_dir=settings.flows_dir,
                users=UserService(engine),
                reset_passwords=reset_passwords,
            )
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(work())
    except Exception as exc:  # a broken flow file, an unreachable database: say it, exit 1
        raise _fail(f"demo seed failed: {exc}") from None
    _print_seed(report)


async def run_demo_pbx(
    settings: Settings,
    *,
    ami_port: int,
    agi_host: str,
    agi_port: int,
    interval: float,
    calls: int | None,
    pace: float = 1.0,
) -> DemoPbx:
    """The standalone demo PBX until `calls` are placed (forever if None) or cancelled."""
    refuse_real_asterisk(settings, demo_port=ami_port)
    pbx = DemoPbx(
        username=settings.ami_username,
        secret=settings.ami_secret,
        interval=interval,
        pace=pace,
    )
    await pbx.start(ami_port)
    try:
        pbx.start_calls(agi_host, agi_port, calls=calls)
        if calls is None:
            await asyncio.Event().wait()  # until cancelled (Ctrl-C)
        else:
            await pbx.finished.wait()
    finally:
        await pbx.stop()
    return pbx


@demo_app.command("pbx")
def pbx_command(
    ami_port: Annotated[
        int, typer.Option(help="AMI port on 127.0.0.1 (0: a free one).")
    ] = DEFAULT_AMI_PORT,
    agi_host: Annotated[
        str | None, typer.Option(help="Guichet's FastAGI host (default from settings).")
    ] = None,
    agi_port: Annotated[
        int | None, typer.Option(help="Guichet's FastAGI port (default from settings).")
    ] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between the starts of two calls.")
    ] = DEFAULT_INTERVAL,
    calls: Annotated[
        int | None, typer.Option(help="Stop after this many calls (default: never).")
    ] = None,
    pace: Annotated[
        float, typer.Option(help="Caller and Asterisk timing: 1 human, 0 as fast as possible.")
    ] = 1.0,
) -> None:
    """A demo PBX for a Guichet without Asterisk: AMI on loopback, scripted citizen calls
    into Guichet's FastAGI server. Start Guichet with GUICHET_AMI_HOST=127.0.0.1 and
    GUICHET_AMI_PORT=<this port> (`guichet serve` alone starts its own demo PBX)."""
    settings = get_settings()
    setup_logging(settings.log_level)
    try:
        refuse_real_asterisk(settings, demo_port=ami_port)
    except DemoRefused as exc:
        raise _fail(str(exc)) from None
    Console(highlight=False).print(
        f"[demo] demo PBX: point Guichet at it with GUICHET_AMI_HOST={LOOPBACK}"
        f" GUICHET_AMI_PORT={ami_port or '<the port logged below>'}"
        f" GUICHET_AMI_USERNAME={settings.ami_username} and the same GUICHET_AMI_SECRET",
        markup=False,
    )
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(
                run_demo_pbx(
                    settings,
                    ami_port=ami_port,
                    agi_host=agi_host or settings.agi_host,
                    agi_port=settings.agi_port if agi_port is None else agi_port,
                    interval=interval,
                    calls=calls,
                    pace=pace,
                )
            )
        except (DemoRefused, OSError) as exc:
            raise _fail(str(exc)) from None
