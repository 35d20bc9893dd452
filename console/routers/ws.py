"""``/ws``: the console's push channel (protocol in console/WEBSOCKET.md).

The handshake is always accepted and a refusal is a close code, because a browser cannot
read the HTTP status of a refused handshake: 4401 (no valid session), 4403 (not allowed:
another origin riding on the cookie, a topic above the user's role), 4400 (no valid hello).
Then the client's ``hello`` says where it stopped; the hub queues what it missed (or a
``resync``), a ``ready`` frame, then live messages. Three small tasks run per socket:
one sends queued frames, one reads the client (``ping``, disconnect), one re-checks the
session every minute so a password changed from the CLI or an expired session ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket

from console.deps import ConsoleState, Principal, authenticate, console_state
from console.push import (
    CLOSE_FORBIDDEN,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNAUTHENTICATED,
    Subscription,
    SubscriptionClosed,
    refused_topics,
)
from console.security import InvalidToken, same_origin
from crm_bridge.case_models import ROLES

log = logging.getLogger("guichet.console.ws")

router = APIRouter(tags=["push"])

MAX_CLIENT_MESSAGE = 4096  # hello and ping are tiny; anything bigger is a broken client
MAX_TOPICS = 8


@dataclass(frozen=True, slots=True)
class Hello:
    last_seq: int | None
    epoch: str | None
    topics: dict[str, int | None]


class ProtocolError(ValueError):
    pass


def _optional_seq(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{what} must be a non-negative integer or null")
    return value


def parse_hello(text: str) -> Hello:
    """``{"type":"hello","last_seq":N|null,"epoch":"…"?,"topics":{"role:supervisor":M}?}``."""
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("the first message must be JSON") from None
    if not isinstance(message, dict) or message.get("type") != "hello":
        raise ProtocolError('the first message must be {"type":"hello",...}')
    epoch = message.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise ProtocolError("epoch must be a string")
    topics = message.get("topics") or {}
    if not isinstance(topics, dict) or len(topics) > MAX_TOPICS:
        raise ProtocolError(f"topics must be an object of at most {MAX_TOPICS} entries")
    return Hello(
        last_seq=_optional_seq(message.get("last_seq"), "last_seq"),
        epoch=epoch,
        topics={str(name): _optional_seq(seq, f"topics.{name}") for name, seq in topics.items()},
    )


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # the peer may already be gone
        await websocket.close(code, reason[:120])


async def _receive_text(websocket: WebSocket) -> str | None:
    """The next text message, or None when the client has gone."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        raise ProtocolError("binary messages are not part of the protocol")
    if len(text) > MAX_CLIENT_MESSAGE:
        raise ProtocolError("message too large")
    return str(text)


@router.websocket("/ws")
async def push_socket(websocket: WebSocket) -> None:
    state = console_state(websocket)
    await websocket.accept()
    try:
        principal = await authenticate(websocket, allow_query=True)
    except InvalidToken as exc:
        await _close(websocket, CLOSE_UNAUTHENTICATED, str(exc))
        return
    if principal.via == "cookie" and not same_origin(websocket.scope, state.config.trusted_origins):
        # Cross-site websocket hijacking: a page elsewhere on the same site would ride on
        # the cookie (SameSite does not stop same-site pages).
        await _close(websocket, CLOSE_FORBIDDEN, "origin not allowed")
        return
    user = principal.user
    try:
        text = await asyncio.wait_for(_receive_text(websocket), state.config.ws_hello_timeout)
        if text is None:
            return
        hello = parse_hello(text)
    except TimeoutError:
        await _close(websocket, CLOSE_PROTOCOL_ERROR, "no hello")
        return
    except ProtocolError as exc:
        await _close(websocket, CLOSE_PROTOCOL_ERROR, str(exc))
        return
    refused = refused_topics(hello.topics, lambda role: role in ROLES and user.can(role))
    if refused:
        await _close(websocket, CLOSE_FORBIDDEN, f"topic not allowed: {refused[0]}")
        return
    subscription = state.hub.subscribe(
        user.id, last_seq=hello.last_seq, epoch=hello.epoch, topics=hello.topics
    )
    log.debug(
        "websocket of %s: %s", user.username, [(s.stream, s.resync) for s in subscription.starts]
    )
    try:
        closed = await _serve(websocket, subscription, principal, state)
        if closed is not None:
            await _close(websocket, closed.code, closed.reason)
    finally:
        subscription.close()


async def _serve(
    websocket: WebSocket, subscription: Subscription, principal: Principal, state: ConsoleState
) -> SubscriptionClosed | None:
    """Run until the client leaves (None) or the subscription ends (its close code)."""
    pump = asyncio.create_task(_pump(websocket, subscription))
    listen = asyncio.create_task(_listen(websocket, subscription))
    watch = asyncio.create_task(_watch(principal, state, subscription))
    ended = asyncio.create_task(subscription.wait_closed())
    tasks = (pump, listen, watch, ended)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            log.debug("websocket task ended: %r", result)
    client_left = (
        listen.done()
        and not listen.cancelled()
        and listen.exception() is None
        and listen.result() is False
    )
    if client_left:
        return None
    return subscription.closed


async def _pump(websocket: WebSocket, subscription: Subscription) -> None:
    """Send queued frames in order; returns when the subscription is closed."""
    async for frame in subscription:
        await websocket.send_text(frame)


async def _listen(websocket: WebSocket, subscription: Subscription) -> bool:
    """Answer pings; returns False when the client disconnects, True on a protocol error."""
    while True:
        try:
            text = await _receive_text(websocket)
        except ProtocolError as exc:
            subscription.close(CLOSE_PROTOCOL_ERROR, str(exc))
            return True
        if text is None:
            return False
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            subscription.send_control("pong", {"echo": message.get("data")} if message else None)
        else:
            subscription.send_control("error", {"reason": f"unexpected message {kind!r}"})


async def _watch(principal: Principal, state: ConsoleState, subscription: Subscription) -> None:
    """Re-check the session now and then; close 4401 once it is expired or revoked."""
    interval = state.config.ws_revalidate_interval
    # Spread the checks: hundreds of agents connected at once must not all query together.
    first = interval * random.uniform(0.5, 1.0)
    while True:
        until_expiry = principal.session.claims.expires_at - time.time()
        await asyncio.sleep(max(0.0, min(first, until_expiry + 1)))
        first = interval
        try:
            await state.sessions.resolve(principal.session.token)
        except InvalidToken as exc:
            subscription.close(CLOSE_UNAUTHENTICATED, str(exc))
            return
        except Exception:  # the database away for a moment must not cut agents off
            log.exception("could not re-check the session of %s", principal.user.username)
