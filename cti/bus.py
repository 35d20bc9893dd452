"""The event bus between the CTI and its consumers (console websockets, reports, other nodes).

Two backends behind one interface:
* `LocalBus` (default): in-process fan-out, for a single Guichet node.
* `RedisBus`: Redis pub/sub, for several nodes; events travel as JSON (`cti.events.to_json`)
  and come back as the same dataclasses. Every node, the publisher included, receives each
  event once, from Redis.

Each subscriber has its own bounded queue: a slow consumer (a stalled websocket) loses its
oldest events and is told how many (`dropped`), instead of holding the CTI back. Live events
are notifications; the state can always be read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cti.events import Event, from_json, to_json

log = logging.getLogger("guichet.cti.bus")

DEFAULT_CHANNEL = "guichet:cti:events"


class SubscriptionClosed(Exception):
    """The subscription was closed."""


class Subscription:
    """An async iterator of events for one consumer; `close()` (or `async with`) ends it."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def deliver(self, event: Event) -> None:
        if self.closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        """The next event; SubscriptionClosed once closed and emptied."""
        if self.closed and self._queue.empty():
            raise SubscriptionClosed
        event = await self._queue.get()
        if event is None:
            raise SubscriptionClosed
        return event

    def pending(self) -> list[Event]:
        """The events already delivered, without waiting."""
        out: list[Event] = []
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event is not None:
                out.append(event)
        return out

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._unsubscribe(self)
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)  # wake a waiting consumer

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventBus(ABC):
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def subscribe(self, *, maxsize: int = 10000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def _deliver(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.deliver(event)

    async def start(self) -> None:  # noqa: B027  (optional hook: nothing to start in process)
        """Connect (Redis); nothing to do in process."""

    async def close(self) -> None:
        for sub in list(self._subscribers):
            sub.close()

    @abstractmethod
    async def publish(self, event: Event) -> None: ...


class LocalBus(EventBus):
    """In-process fan-out."""

    async def publish(self, event: Event) -> None:
        self._deliver(event)


class RedisBus(EventBus):
    """Redis pub/sub between Guichet nodes (`redis` package, asyncio API)."""

    def __init__(
        self, url: str, *, channel: str = DEFAULT_CHANNEL, reconnect_delay: float = 1.0
    ) -> None:
        super().__init__()
        self.url = url
        self.channel = channel
        self.reconnect_delay = reconnect_delay
        self._redis: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: aioredis.client.PubSub
        self.publish_errors = 0
        self.bad_messages = 0

    async def start(self) -> None:
        """Connect and subscribe; returns once Redis confirmed the subscription, so nothing
        published after start() is missed."""
        self._redis = aioredis.from_url(self.url)
        self._pubsub = self._redis.pubsub()
        await self._subscribe(self._pubsub)
        self._reader = asyncio.create_task(self._read(), name="redis-bus")

    async def _subscribe(self, pubsub: aioredis.client.PubSub) -> None:
        await pubsub.subscribe(self.channel)
        while True:  # the confirmation is the first message
            message = await pubsub.get_message(timeout=5.0)
            if message is None:
                raise RedisError(f"no confirmation of SUBSCRIBE {self.channel}")
            if message.get("type") == "subscribe":
                return

    async def _read(self) -> None:
        while True:
            pubsub = self._pubsub
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError, RuntimeError) as exc:
                log.warning("Redis bus read failed (%s); resubscribing", exc)
                await asyncio.sleep(self.reconnect_delay)
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                self._pubsub = self._redis_client().pubsub()
                with contextlib.suppress(RedisError, OSError):
                    await self._subscribe(self._pubsub)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                event = from_json(message["data"])
            except ValueError as exc:
                self.bad_messages += 1
                log.warning("Redis bus: message dropped: %s", str(exc).splitlines()[0])
                continue
            self._deliver(event)

    def _redis_client(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisBus not started")
        return self._redis

    async def publish(self, event: Event) -> None:
        """Publish to every node; a Redis outage loses the event (logged, counted), it
        never stops the caller."""
        try:
            await self._redis_client().publish(self.channel, to_json(event))
        except (RedisError, OSError) as exc:
            self.publish_errors += 1
            log.warning("Redis bus: %s not published: %s", type(event).__name__, exc)

    async def close(self) -> None:
        await super().close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        client, self._redis = self._redis, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()


async def consume(sub: Subscription, handle: Callable[[Event], Awaitable[None]], name: str) -> None:
    """Feed every event of ``sub`` to ``handle`` until the subscription closes. An event that
    fails is logged and skipped (one bad event must not stop a console service), and events
    the subscription had to drop because this consumer fell behind are logged once per gap."""
    seen = 0
    async for event in sub:
        if sub.dropped != seen:
            log.error("%s fell behind: %d CTI events dropped", name, sub.dropped - seen)
            seen = sub.dropped
        try:
            await handle(event)
        except Exception:
            log.exception("%s failed on %s", name, type(event).__name__)
