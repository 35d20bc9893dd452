"""The FastAGI server: one asyncio task per call, each running a flow over an `AgiLeg`.

Asterisk never closes a FastAGI socket: the channel (its AMI Hangup, its CDR, the Queue()
that follows AGI()) waits until we do. So every connection ends with our close, whatever
happened: the flow finished, the caller hung up, Asterisk vanished, or our code failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from crm_bridge.ports import CaseSink, CrmPort
from ivr.agi_leg import AgiLeg
from ivr.agi_protocol import (
    ENV_TIMEOUT,
    AgiChannel,
    AgiProtocolError,
    ConnectionLost,
    parse_script,
    read_environment,
)
from ivr.engine import run_call
from ivr.loader import LoadedFlow

log = logging.getLogger("guichet.agi")

STOP_GRACE = 10.0  # seconds running calls get to finish when the server stops
BACKLOG = 4096  # a burst of calls (a queue overflowing into the IVR) must not hit SYN retries
LINE_LIMIT = 64 * 1024


class FlowSource(Protocol):
    """What the server needs of `ivr.registry.FlowRegistry`."""

    def get(self, name: str) -> LoadedFlow | None: ...


class FastAgiServer:
    """Serves `agi://host:port/<flow>[?var=value]` for every flow of `registry`."""

    def __init__(
        self,
        registry: FlowSource,
        crm: CrmPort,
        *,
        host: str,
        port: int,
        clock: Callable[[], datetime] | None = None,
        sounds_prefix: str | None = None,
        env_timeout: float = ENV_TIMEOUT,
        cases: CaseSink | None = None,
    ) -> None:
        if sounds_prefix is None:
            from guichet.settings import get_settings

            sounds_prefix = get_settings().asterisk_sounds_prefix
        self._registry = registry
        self._crm = crm
        self._host = host
        self._port = port
        self._clock = clock
        self._sounds_prefix = sounds_prefix
        self._env_timeout = env_timeout
        self._cases = cases  # where a queued call's case goes (the outbox); None: no cases
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with `port=0`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("FastAGI server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, backlog=BACKLOG, limit=LINE_LIMIT
        )
        log.debug("FastAGI listening on %s:%d", self._host, self.port)

    async def wait_idle(self) -> None:
        """Return once no call is running (journeys of finished calls included)."""
        while self._calls:
            await asyncio.wait(set(self._calls))

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting, give running calls `grace` seconds, then cut the rest (their
        sockets are closed, so Asterisk continues each channel's dialplan)."""
        if self._server is not None:
            self._server.close()
        calls = set(self._calls)
        if calls:
            _, pending = await asyncio.wait(calls, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("FastAGI stop: %d call(s) cut after %.0f s", len(pending), grace)
                await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        channel = AgiChannel(reader, writer)
        call_id = "-"
        try:
            env = await read_environment(reader, timeout=self._env_timeout)
            call_id = env.uniqueid or "-"
            name, args = parse_script(env.script)
            loaded = self._registry.get(name)
            if loaded is None:
                log.error("call %s: no flow %r (agi_network_script %r)", call_id, name, env.script)
                return
            leg = AgiLeg(channel, env, sounds_prefix=self._sounds_prefix)
            result = await run_call(
                loaded, leg, self._crm, clock=self._clock, args=args, cases=self._cases
            )
            log.info("call %s: flow %s ended, outcome %s", call_id, loaded.name, result.outcome)
        except ConnectionLost as exc:
            log.info("call %s: FastAGI connection lost (%s)", call_id, exc)
        except AgiProtocolError as exc:
            log.warning("call %s: FastAGI protocol error: %s", call_id, exc)
        except asyncio.CancelledError:
            log.warning("call %s: cut by server stop", call_id)
            raise
        except Exception:
            log.exception("call %s: FastAGI session failed", call_id)
        finally:
            if task is not None:
                self._calls.discard(task)
            await channel.close()  # the close itself is synchronous: even a cancel cannot skip it
