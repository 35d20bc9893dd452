"""The `guichet` command: one entry point, sub-commands per area."""

from __future__ import annotations

from typing import Annotated

import typer

from audio.cli import app as audio_app
from console.cli import users_app
from crm_bridge.cli import citizens_app, report_app
from guichet.asterisk_render import app as asterisk_app
from guichet.demo.cli import demo_app
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


if __name__ == "__main__":
    app()
