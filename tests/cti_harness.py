"""Guichet's side of the AMI tests: the real client, state, bus and Pbx against an AmiPeer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ami_peer import AmiPeer

from cti.ami import AmiClient, AmiConfig, ConnectionState
from cti.bridge import CtiBridge
from cti.bus import LocalBus, Subscription
from cti.events import AgentStateChanged, CallEvent, Event
from cti.pbx import Pbx
from cti.state import CtiState

DEADLINE = 10.0  # seconds: "promptly", generously; never a timing assertion

E = TypeVar("E", bound=Event)


def config_for(port: int, **overrides: Any) -> AmiConfig:
    """Guichet's client settings for a local peer, with short backoffs for quick tests."""
    base = AmiConfig(
        host="127.0.0.1",
        port=port,
        username="guichet",
        secret="guichet-secret",
        connect_timeout=2.0,
        login_timeout=5.0,
        fully_booted_timeout=2.0,
        action_timeout=5.0,
        list_timeout=5.0,
        ping_interval=30.0,
        ping_timeout=5.0,
        backoff_initial=0.02,
        backoff_max=0.2,
    )
    return replace(base, **overrides)


@dataclass
class Cti:
    client: AmiClient
    bridge: CtiBridge
    bus: LocalBus
    sub: Subscription
    pbx: Pbx
    events: list[Event] = field(default_factory=list)
    states: list[tuple[ConnectionState, str]] = field(default_factory=list)

    async def next(self, kind: type[E], timeout: float = DEADLINE, **match: Any) -> E:
        """The next event of `kind` whose fields equal `match` (earlier ones are kept)."""

        async def find() -> E:
            while True:
                event = await self.sub.get()
                self.events.append(event)
                if isinstance(event, kind) and all(
                    getattr(event, k) == v for k, v in match.items()
                ):
                    return event

        return await asyncio.wait_for(find(), timeout)

    async def rebuilt(self, count: int, timeout: float = DEADLINE) -> None:
        """Until the bridge completed `count` state rebuilds (one per login)."""

        async def poll() -> None:
            while self.bridge.resyncs < count:
                self.bridge.resynced.clear()
                await self.bridge.resynced.wait()

        await asyncio.wait_for(poll(), timeout)

    def drain(self) -> list[Event]:
        self.events.extend(self.sub.pending())
        return self.events

    async def close(self) -> list[Event]:
        """Log off (the peer answers once its recording reached the Logoff), flush, and
        return every event seen."""
        await self.client.close()
        await self.bridge.stop()
        return self.drain()

    def of(self, *kinds: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kinds)]

    def calls(self) -> list[tuple[str, ...]]:
        """Call events as (type, call id, queue, agent id or detail)."""
        out: list[tuple[str, ...]] = []
        for e in self.events:
            if not isinstance(e, CallEvent):
                continue
            agent = getattr(e, "agent", None)
            detail = getattr(e, "reason", None) or getattr(e, "kind", None)
            row = [type(e).__name__, e.call_id, e.queue or ""]
            if agent is not None:
                row.append(agent.id)
            if isinstance(detail, str):
                row.append(detail)
            out.append(tuple(row))
        return out

    def agent_states(self, agent_id: str) -> list[str]:
        return [
            e.state
            for e in self.events
            if isinstance(e, AgentStateChanged) and e.agent.id == agent_id
        ]


@asynccontextmanager
async def running(
    peer: AmiPeer, *, connect: bool = True, state: CtiState | None = None, **overrides: Any
) -> AsyncIterator[Cti]:
    # CtiBridge queries CoreShowChannels, QueueStatus and QueueSummary right after login:
    # the peer answers them before streaming the call (the recorded PBX was idle then).
    peer.settle = 3
    client = AmiClient(config_for(peer.port, **overrides))
    bus = LocalBus()
    cti = Cti(client, CtiBridge(client, bus, state=state), bus, bus.subscribe(), Pbx(client))
    client.on_state(lambda s, d: cti.states.append((s, d)))
    await cti.bridge.start()
    try:
        if connect:  # logged in and state rebuilt
            await asyncio.wait_for(client.connect(), DEADLINE)
            await asyncio.wait_for(cti.bridge.resynced.wait(), DEADLINE)
        yield cti
    finally:
        await client.close()
        await cti.bridge.stop()
        await bus.close()
