"""`guichet serve`: one Guichet (`guichet.runtime`) plus the console's HTTP server."""

from __future__ import annotations

import asyncio
import gc
import logging

import uvicorn

from guichet.logging_setup import setup_logging
from guichet.runtime import Guichet
from guichet.settings import Settings, get_settings

log = logging.getLogger("guichet")


async def serve(
    settings: Settings, *, agi_port: int | None = None, console_port: int | None = None
) -> None:
    guichet = Guichet(settings, agi_port=agi_port)
    await guichet.start()
    # What start-up allocated lives as long as the process: keep it out of every later full
    # collection (shorter GC pauses in the middle of calls).
    gc.collect()
    gc.freeze()
    console = uvicorn.Server(
        uvicorn.Config(
            guichet.app,
            host=settings.console_host,
            port=settings.console_port if console_port is None else console_port,
            log_level=settings.log_level.lower(),
            log_config=None,
        )
    )
    try:
        await console.serve()
    finally:
        await guichet.stop()


def run_server(*, agi_port: int | None = None, console_port: int | None = None) -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    asyncio.run(serve(settings, agi_port=agi_port, console_port=console_port))
