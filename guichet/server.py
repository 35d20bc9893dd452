"""`guichet serve`: wires the store, the flows, the FastAGI server and the console in one loop."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from console.deps import ConsoleConfig
from console.factory import create_console_app
from console.push import PushHub
from crm_bridge.buffered import BufferedCrm
from crm_bridge.store import SqlCrm
from crm_bridge.users import UserService
from guichet.logging_setup import setup_logging
from guichet.settings import Settings, get_settings
from ivr.fastagi import FastAgiServer
from ivr.registry import FlowRegistry

log = logging.getLogger("guichet")


async def serve(
    settings: Settings, *, agi_port: int | None = None, console_port: int | None = None
) -> None:
    store = await SqlCrm.connect(settings.database_url)
    crm = BufferedCrm(store)
    await crm.start()
    registry = FlowRegistry(
        settings.flows_dir, interval=settings.reload_interval, sounds_dir=settings.sounds_dir
    )
    await registry.start()
    if not registry.names():
        log.warning("no flow could be loaded from %s: calls will be refused", settings.flows_dir)
    agi = FastAgiServer(
        registry,
        crm,
        host=settings.agi_host,
        port=settings.agi_port if agi_port is None else agi_port,
    )
    await agi.start()
    log.info(
        "FastAGI listening on %s:%s (flows: %s)",
        settings.agi_host,
        agi.port,
        ", ".join(registry.names()) or "none",
    )
    hub = PushHub(
        replay_size=settings.ws_replay_size,
        replay_age=settings.ws_replay_age,
        queue_size=settings.ws_queue_size,
    )
    app = create_console_app(
        engine=store.engine,
        users=UserService(store.engine),
        hub=hub,
        registry=registry,
        config=ConsoleConfig.from_settings(settings),
    )
    console = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.console_host,
            port=settings.console_port if console_port is None else console_port,
            log_level=settings.log_level.lower(),
            log_config=None,
        )
    )
    try:
        await console.serve()
    finally:
        await agi.stop()
        await registry.stop()
        await crm.stop()
        await store.close()


def run_server(*, agi_port: int | None = None, console_port: int | None = None) -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    asyncio.run(serve(settings, agi_port=agi_port, console_port=console_port))
