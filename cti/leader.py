"""Which Guichet node publishes the CTI events when several share a Redis bus.

Every node keeps its own AMI session and `CtiState` (its routers read the live state to
authorise call actions), but if every node published what it saw, each consumer would get
every event once per node. So the nodes hold a lease in Redis (``SET key node NX PX ttl``,
renewed by its holder with a compare-and-extend script): only the holder publishes. When it
dies the lease expires and another node takes it within ``ttl``; events of that gap reach
nobody (the wallboard and pops catch up on the next events; the queue-call records are written
once per call whoever publishes its end).

Without Redis there is one node and it always publishes (`AlwaysLeader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("guichet.cti.leader")

DEFAULT_KEY = "guichet:cti-publisher"
DEFAULT_TTL = 5.0  # seconds: how long events may go unpublished after a node dies

# Extend the lease only if we still hold it (another node may have taken an expired one).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leader(Protocol):
    @property
    def is_leader(self) -> bool: ...


class AlwaysLeader:
    """One node: it publishes."""

    @property
    def is_leader(self) -> bool:
        return True


class RedisLease:
    def __init__(
        self,
        url: str,
        *,
        key: str = DEFAULT_KEY,
        ttl: float = DEFAULT_TTL,
        node: str | None = None,
    ) -> None:
        self.url, self.key, self.ttl = url, key, ttl
        self.node = node or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self._leader = False
        self._redis: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self.changes = 0  # how often leadership moved here or away (logs, tests)

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        """Try once at once (the first node leads from its start), then keep trying."""
        self._redis = aioredis.from_url(self.url)
        await self._round()
        self._task = asyncio.create_task(self._loop(), name="cti-lease")

    async def stop(self) -> None:
        """Stop renewing and hand the lease back, so another node takes over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            if self._leader:
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.eval(_RELEASE, 1, self.key, self.node)
            self._set(False)
            await self._redis.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self._round()

    async def _round(self) -> None:
        assert self._redis is not None
        ms = int(self.ttl * 1000)
        try:
            if self._leader:
                held = await self._redis.eval(_RENEW, 1, self.key, self.node, ms)
                self._set(bool(held))
            else:
                taken = await self._redis.set(self.key, self.node, nx=True, px=ms)
                self._set(bool(taken))
        except (RedisError, OSError) as exc:
            # Redis away: the bus is away too; stop publishing rather than risk two leaders.
            log.warning("CTI lease: Redis unavailable (%s)", exc)
            self._set(False)

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            self.changes += 1
            log.info(
                "CTI events %s published by this node (%s)",
                "now" if leader else "no longer",
                self.node,
            )
