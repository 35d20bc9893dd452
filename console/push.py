"""The websocket push hub: per-user streams with sequence numbers, replay and fan-out.

Every user (agent) has one *stream*; a message published to it gets the next sequence
number and is kept in a bounded replay buffer (count and age). Every open websocket of the
user (one per browser tab) holds a `Subscription` and receives every message, so all tabs
agree. A console that reconnects says which sequence number it saw last and gets exactly
what it missed, or a ``resync`` when the gap is older than the buffer (reload the state).

Topic streams (``role:supervisor`` via `PushHub.publish_role`, or any name via
`PushHub.publish_topic`) work the same way with their own numbering; who may read which
topic is the websocket router's decision, not the hub's.

Nothing here awaits: `PushHub.publish` encodes the message once, appends it to the buffer
and offers the frame to each subscription's bounded queue. A socket that cannot keep up
overflows its own queue and is closed (`CLOSE_SLOW_CONSUMER`); it reconnects and resumes
from its last sequence number, and no other socket ever waits for it. Call the hub from
the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

# Close codes (RFC 6455 leaves 4000-4999 to applications; ours mirror HTTP statuses).
CLOSE_GOING_AWAY = 1001  # server shutting down: reconnect
CLOSE_PROTOCOL_ERROR = 4400  # no or malformed hello: fix the client
CLOSE_UNAUTHENTICATED = 4401  # no, invalid, expired or revoked session: sign in again
CLOSE_FORBIDDEN = 4403  # authenticated, but not allowed (topic, origin): do not retry
CLOSE_SLOW_CONSUMER = 4429  # too many messages queued for this socket: reconnect and resume

USER_STREAM = "user"  # how a client names its own stream in envelopes and in hello
ROLE_TOPIC_PREFIX = "role:"
CONTROL_TYPES = frozenset({"hello", "ready", "resync", "ping", "pong", "error"})
_TYPE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_TOPIC = re.compile(r"^[a-z][a-z0-9_.-]{0,31}:[a-z0-9_.-]{1,64}$")


def _json_default(value: Any) -> Any:
    """Encode what domain events carry: datetimes, enums, dataclasses, pydantic models."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(message: Mapping[str, Any]) -> str:
    """One compact JSON text frame (UTF-8 kept: FR/NL names travel as they are)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def role_topic(role: str) -> str:
    return f"{ROLE_TOPIC_PREFIX}{role}"


@dataclass(frozen=True, slots=True)
class PushMessage:
    """A published message; ``frame`` is its JSON envelope as sent on every socket."""

    stream: str
    seq: int
    type: str
    at: str
    frame: str
    published: float  # the hub's monotonic clock, for the replay age


@dataclass(frozen=True, slots=True)
class StreamStart:
    """How one stream starts on a new subscription: replayed messages, or a resync."""

    stream: str
    seq: int  # the stream's last sequence number when the subscription started
    replayed: int
    resync: str | None  # None, or why: "fresh", "gap", "restart", "ahead"


class SubscriptionClosed(Exception):
    """The subscription ended: ``code`` is the websocket close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Subscription:
    """One websocket's view of the hub: a bounded FIFO of frames, replay first.

    The bound applies to live frames only, so a long replay never counts as slowness.
    """

    def __init__(self, hub: PushHub, user_id: int, streams: tuple[str, ...], limit: int) -> None:
        self.hub = hub
        self.user_id = user_id
        self.streams = streams
        self.starts: list[StreamStart] = []
        self._limit = limit
        self._frames: deque[str] = deque()
        self._backlog = 0  # frames at the head of the queue that are replay/control frames
        self._wakeup = asyncio.Event()
        self._ended = asyncio.Event()
        self.closed: SubscriptionClosed | None = None

    @property
    def pending(self) -> int:
        return len(self._frames)

    def _preload(self, frame: str) -> None:
        self._frames.append(frame)
        self._backlog += 1
        self._wakeup.set()

    def _offer(self, frame: str) -> bool:
        """Queue a live frame; False (and the subscription closed) when it would overflow."""
        if self.closed is not None:
            return False
        if len(self._frames) - self._backlog >= self._limit:
            self.hub._cut(self)
            return False
        self._frames.append(frame)
        self._wakeup.set()
        return True

    def send_control(self, type: str, data: Any = None) -> bool:
        """Queue a frame outside every stream (``pong``, ``error``); counts as live, so a
        client that only sends and never reads still overflows."""
        return self._offer(encode({"type": type, "at": _now_iso(), "data": data}))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """End the subscription; the consumer gets `SubscriptionClosed` with this code."""
        if self.closed is None:
            self.closed = SubscriptionClosed(code, reason)
            self._frames.clear()
            self._backlog = 0
            self.hub._forget(self)
        self._wakeup.set()
        self._ended.set()

    async def wait_closed(self) -> SubscriptionClosed:
        """Wait until the hub or the owner closes this subscription (cut, logout, shutdown)."""
        await self._ended.wait()
        assert self.closed is not None
        return self.closed

    async def next_frame(self) -> str:
        """The next frame to send; raises `SubscriptionClosed` once closed (pending dropped)."""
        while True:
            if self.closed is not None:
                raise self.closed
            if self._frames:
                if self._backlog:
                    self._backlog -= 1
                return self._frames.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        try:
            return await self.next_frame()
        except SubscriptionClosed:
            raise StopAsyncIteration from None


@dataclass(slots=True)
class _Stream:
    key: str
    seq: int = 0
    buffer: deque[PushMessage] = field(default_factory=deque)
    subscribers: set[Subscription] = field(default_factory=set)


class PushHub:
    """Streams keyed ``user:<id>`` and topics like ``role:supervisor``.

    ``replay_size`` and ``replay_age`` (seconds) bound each stream's replay buffer;
    ``queue_size`` bounds each socket's queue of live frames. ``epoch`` changes with every
    hub (server start): sequence numbers from another epoch mean nothing here.
    """

    def __init__(
        self,
        *,
        replay_size: int = 1000,
        replay_age: float = 15 * 60.0,
        queue_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if replay_size < 1 or queue_size < 1 or replay_age <= 0:
            raise ValueError("replay_size, replay_age and queue_size must be positive")
        self.replay_size = replay_size
        self.replay_age = replay_age
        self.queue_size = queue_size
        self.epoch = secrets.token_urlsafe(9)
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._by_user: dict[int, set[Subscription]] = {}
        self.slow_consumers_cut = 0

    # --- publishing -----------------------------------------------------------------------

    def publish(self, user_id: int, type: str, data: Any = None) -> PushMessage:
        """Send ``data`` to every open socket of one user, and keep it for replay."""
        return self._publish(f"user:{user_id}", USER_STREAM, type, data)

    def publish_role(self, role: str, type: str, data: Any = None) -> PushMessage:
        """Send to the ``role:<role>`` topic (e.g. the supervisors' wallboard)."""
        return self.publish_topic(role_topic(role), type, data)

    def publish_topic(self, topic: str, type: str, data: Any = None) -> PushMessage:
        if not _TOPIC.match(topic):
            raise ValueError(f"topic {topic!r} must look like 'kind:name', e.g. role:supervisor")
        return self._publish(f"topic:{topic}", topic, type, data)

    def _publish(self, key: str, name: str, type: str, data: Any) -> PushMessage:
        if not _TYPE.match(type) or type in CONTROL_TYPES:
            raise ValueError(f"message type {type!r} is reserved or malformed")
        stream = self._stream(key)
        now = self._clock()
        seq = stream.seq + 1
        at = _now_iso()
        frame = encode({"type": type, "stream": name, "seq": seq, "at": at, "data": data})
        stream.seq = seq  # only once encoding succeeded: no hole in the numbering
        message = PushMessage(name, seq, type, at, frame, now)
        stream.buffer.append(message)
        self._prune(stream, now)
        for subscription in list(stream.subscribers):
            subscription._offer(frame)
        return message

    # --- subscribing ----------------------------------------------------------------------

    def subscribe(
        self,
        user_id: int,
        *,
        last_seq: int | None = None,
        epoch: str | None = None,
        topics: Mapping[str, int | None] | None = None,
    ) -> Subscription:
        """A new socket of ``user_id``, resuming after ``last_seq`` (None: a fresh client).

        The replayed messages, any ``resync`` frames and a final ``ready`` frame are queued
        before any live message, in one step, so nothing is lost or sent twice.
        """
        wanted: list[tuple[str, str, int | None]] = [(f"user:{user_id}", USER_STREAM, last_seq)]
        for topic, seq in (topics or {}).items():
            if not _TOPIC.match(topic):
                raise ValueError(f"topic {topic!r} must look like 'kind:name'")
            wanted.append((f"topic:{topic}", topic, seq))
        subscription = Subscription(
            self, user_id, tuple(name for _, name, _ in wanted), self.queue_size
        )
        now = self._clock()
        replayed = 0
        for key, name, seq in wanted:
            stream = self._stream(key)
            self._prune(stream, now)
            start = self._start(stream, name, seq, epoch)
            subscription.starts.append(start)
            if start.resync is not None:
                subscription._preload(
                    encode(
                        {
                            "type": "resync",
                            "stream": name,
                            "at": _now_iso(),
                            "data": {
                                "epoch": self.epoch,
                                "seq": stream.seq,
                                "reason": start.resync,
                            },
                        }
                    )
                )
            else:
                for message in stream.buffer:
                    if seq is not None and message.seq > seq:
                        subscription._preload(message.frame)
                replayed += start.replayed
            stream.subscribers.add(subscription)
        subscription._preload(
            encode(
                {
                    "type": "ready",
                    "at": _now_iso(),
                    "data": {
                        "epoch": self.epoch,
                        "streams": {start.stream: start.seq for start in subscription.starts},
                        "replayed": replayed,
                    },
                }
            )
        )
        self._by_user.setdefault(user_id, set()).add(subscription)
        return subscription

    def _start(self, stream: _Stream, name: str, seq: int | None, epoch: str | None) -> StreamStart:
        def resync(reason: str) -> StreamStart:
            return StreamStart(name, stream.seq, 0, reason)

        if seq is None:
            return resync("fresh")
        if epoch is not None and epoch != self.epoch:
            return resync("restart")
        if seq > stream.seq or seq < 0:
            return resync("ahead")  # numbers from before a restart (a client without epoch)
        oldest = stream.buffer[0].seq if stream.buffer else stream.seq + 1
        if seq < oldest - 1:
            return resync("gap")
        return StreamStart(name, stream.seq, stream.seq - seq, None)

    # --- housekeeping ---------------------------------------------------------------------

    def connections(self, user_id: int) -> int:
        """Open subscriptions (sockets, tabs) of one user."""
        return len(self._by_user.get(user_id, ()))

    def last_seq(self, user_id: int) -> int:
        stream = self._streams.get(f"user:{user_id}")
        return 0 if stream is None else stream.seq

    def close_user(self, user_id: int, code: int, reason: str) -> int:
        """Close every socket of one user (logout, revoked session); returns how many."""
        subscriptions = list(self._by_user.get(user_id, ()))
        for subscription in subscriptions:
            subscription.close(code, reason)
        return len(subscriptions)

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        for subscriptions in list(self._by_user.values()):
            for subscription in list(subscriptions):
                subscription.close(code, reason)

    def _stream(self, key: str) -> _Stream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(key)
        return stream

    def _prune(self, stream: _Stream, now: float) -> None:
        buffer = stream.buffer
        while len(buffer) > self.replay_size:
            buffer.popleft()
        while buffer and now - buffer[0].published > self.replay_age:
            buffer.popleft()

    def _cut(self, subscription: Subscription) -> None:
        self.slow_consumers_cut += 1
        subscription.close(CLOSE_SLOW_CONSUMER, "too many messages queued; reconnect and resume")

    def _forget(self, subscription: Subscription) -> None:
        for name in subscription.streams:
            key = f"user:{subscription.user_id}" if name == USER_STREAM else f"topic:{name}"
            stream = self._streams.get(key)
            if stream is not None:
                stream.subscribers.discard(subscription)
        mine = self._by_user.get(subscription.user_id)
        if mine is not None:
            mine.discard(subscription)
            if not mine:
                del self._by_user[subscription.user_id]


def refused_topics(requested: Iterable[str], may_read_role: Callable[[str], bool]) -> list[str]:
    """The requested topics a user may not read: only ``role:<r>`` topics exist so far,
    readable when ``may_read_role(r)`` (a supervisor reads ``role:agent`` too)."""
    refused = []
    for topic in requested:
        if not topic.startswith(ROLE_TOPIC_PREFIX) or not may_read_role(
            topic.removeprefix(ROLE_TOPIC_PREFIX)
        ):
            refused.append(topic)
    return refused
