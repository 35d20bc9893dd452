"""The AMI wire under `cti.ami.AmiClient`: messages, their parsing, one action's answer, and
panoramisk's protocol and Manager with their faulty parts replaced (the module docstring of
`cti.ami` says what panoramisk does and why each part is replaced).
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

from panoramisk import actions
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

log = logging.getLogger("guichet.cti.ami")

HeaderValue: TypeAlias = str | list[str] | dict[str, str]
Headers: TypeAlias = dict[str, HeaderValue]
Router: TypeAlias = Callable[[str, str], None]  # (event name, raw message) -> None

BANNER = "Asterisk Call Manager/"


class AmiError(Exception):
    """Base of everything the AMI layer raises."""


class AmiLoginError(AmiError):
    """Asterisk refused the credentials (manager.conf secret, permit/deny)."""


class AmiProtocolError(AmiError):
    """The peer does not speak AMI (no `Asterisk Call Manager/` banner)."""


class AmiNotConnected(AmiError):
    """The link is not ready: the action was not sent, so retrying it later is safe."""


class AmiClosed(AmiNotConnected):
    """The client was closed."""


class ActionTimeout(AmiError):
    """No (complete) answer within the deadline; the action may have been executed."""


class DuplicateAction(AmiError):
    """An action with this ActionID was already sent: it is not sent again."""


class ActionNotConfirmed(AmiError):
    """The connection dropped after the action was written and before Asterisk's answer
    completed: it may or may not have been executed, and it is not re-sent."""

    def __init__(self, action: str, action_id: str, reason: str, *, queued: bool) -> None:
        self.action = action
        self.action_id = action_id
        self.reason = reason
        self.queued = queued  # Asterisk had acknowledged it (e.g. Originate queued)
        state = "was acknowledged but its outcome was lost" if queued else "got no answer"
        super().__init__(
            f"{action} {action_id} {state} ({reason}); not re-sent: it may or may not "
            "have been executed"
        )


# --- messages -------------------------------------------------------------------------------


class AmiMessage(Message):  # type: ignore[misc]  # panoramisk ships no type information
    """A panoramisk `Message` whose headers are parsed once into `headers` (wire case, as
    Asterisk 22 writes them): our state reads that plain dict. panoramisk's case-insensitive
    API (`msg['actionid']`, `msg.event`, `msg.success`) still works: its store is built on
    first use."""

    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.manager = None

    @property
    def _store(self) -> dict[str, tuple[str, HeaderValue]]:
        store: dict[str, tuple[str, HeaderValue]] | None = self.__dict__.get("_ci")
        if store is None:
            store = {key.lower(): (key, value) for key, value in self.headers.items()}
            self.__dict__["_ci"] = store
        return store

    def __setitem__(self, key: str, value: HeaderValue) -> None:
        self.headers[key] = value
        self._store[key.lower()] = (key, value)

    @property
    def name(self) -> str:
        """The event name, or `Response:` value for a response."""
        value = self.headers.get("Event", self.headers.get("Response", ""))
        return value if isinstance(value, str) else ""

    def text(self, key: str, default: str = "") -> str:
        value = self.headers.get(key, default)
        return value if isinstance(value, str) else default

    def chanvars(self, family: str = "ChanVariable") -> dict[str, str]:
        value = self.headers.get(family)
        return value if isinstance(value, dict) else {}


_FAMILIES: dict[str, str | None] = {}
_UNKNOWN = "\0"  # not cached yet (no header name contains NUL)
_KEY_VALUE = operator.itemgetter(0, 2)


def _chanvar_family(key: str) -> str | None:
    """`DestChanVariable` -> itself, `ChanVariable(PJSIP/a-01)` -> `ChanVariable`, else None."""
    base = key.split("(", 1)[0]
    family = base if base.lower().endswith("chanvariable") else None
    if len(_FAMILIES) < 4096:  # `ChanVariable(<channel>)` keys are unbounded
        _FAMILIES[key] = family
    return family


def _merge(pairs: list[tuple[str, str]]) -> Headers:
    """Headers with repeats kept: `*ChanVariable` families as dicts, others as lists."""
    headers: Headers = {}
    cache = _FAMILIES
    for key, value in pairs:
        family = cache.get(key, _UNKNOWN)
        if family == _UNKNOWN:
            family = _chanvar_family(key)
        if family is None:
            previous = headers.get(key)
            if previous is None:
                headers[key] = value
            elif isinstance(previous, list):
                previous.append(value)
            elif isinstance(previous, str):
                headers[key] = [previous, value]
        else:
            name, _, val = value.partition("=")
            found = headers.get(family)
            if isinstance(found, dict):
                found[name] = val
            else:
                headers[family] = {name: val}
    return headers


def parse_message(block: str) -> AmiMessage:
    """One AMI message (without its blank line) -> AmiMessage; repeated headers are kept.
    `Key: value` splits at the first `": "` (values may contain one: `RequestType: Action:
    Ping`; keys may contain a colon: `ChanVariable(IAX2/10.0.0.1:4569-1)`)."""
    pairs = [_KEY_VALUE(line.partition(": ")) for line in block.split("\r\n") if ": " in line]
    if "ChanVariable" in block:
        return AmiMessage(_merge(pairs))
    headers: Headers = dict(pairs)
    if len(headers) != len(pairs):
        headers = _merge(pairs)
    return AmiMessage(headers)


# --- actions --------------------------------------------------------------------------------


def consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as retrieved: nobody may be awaiting it any more."""
    if not future.cancelled():
        future.exception()


class PendingAction(actions.Action):  # type: ignore[misc]
    """One action in flight. panoramisk's completion heuristics are replaced (see the module
    docstring of `cti.ami`); `ack` resolves on the Response, `future` when the answer is
    complete."""

    def __init__(self, fields: dict[str, str | list[str]]) -> None:
        super().__init__(fields)
        loop = asyncio.get_running_loop()
        self.ack: asyncio.Future[AmiMessage] = loop.create_future()
        self.future = loop.create_future()
        for future in (self.ack, self.future):
            future.add_done_callback(consume_exception)
        self.kind = str(fields["Action"]).lower()
        self.collecting = False
        self.awaiting_originate = False

    def __str__(self) -> str:
        # panoramisk sorts the headers; keep ours in the given order (Action first), as in
        # the recordings, so the wire reads like Asterisk's documentation.
        lines = []
        for key, value in self.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {item}")
        return "\r\n".join(lines) + "\r\n\r\n"

    def add_message(self, message: AmiMessage) -> bool:
        """Take one message with our ActionID; True when the answer is complete."""
        self.responses.append(message)
        headers = message.headers
        if not self.ack.done():
            response = headers.get("Response")
            if response is None:
                return False
            self.ack.set_result(message)
            if response != "Success":  # Error, Fail, Failure, Goodbye: nothing follows
                self.future.set_result(message)
                return True
            if (
                str(headers.get("EventList", "")).lower() == "start"
                or "will follow" in str(headers.get("Message", "")).lower()
            ):
                self.collecting = True
                return False
            if self.kind == "originate":
                self.awaiting_originate = True
                return False
            self.future.set_result(message)
            return True
        if self.collecting:
            if str(headers.get("EventList", "")).lower() == "complete" or str(
                headers.get("Event", "")
            ).endswith("Complete"):
                self.future.set_result(list(self.responses))
                return True
            return False
        if self.awaiting_originate and headers.get("Event") == "OriginateResponse":
            self.future.set_result(list(self.responses))
            return True
        return False

    def fail(self, exc: Exception) -> None:
        for future in (self.ack, self.future):
            if not future.done():
                future.set_exception(exc)


# --- protocol and manager -------------------------------------------------------------------


class WireProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with its reading side replaced: incremental UTF-8 decoding,
    banner check, lazy parsing routed by event name, no replay on close."""

    version: str | None
    closed: bool
    responses: dict[str, PendingAction]
    transport: asyncio.Transport

    def __init__(self, route: Router) -> None:
        super().__init__()
        self.route = route  # events nobody is waiting for go there, unparsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[str] = loop.create_future()
        self.fully_booted: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        for future in (self.banner, self.fully_booted):
            future.add_done_callback(consume_exception)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._drop_reason: str | None = None

    # reading

    def data_received(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if self._buf:
            text = self._buf + text
        if self.version is None:
            eol = text.find("\r\n")
            if eol < 0:
                self._buf = text
                if len(text) > 1024:
                    self._refuse(f"not an AMI server: {text[:60]!r}...")
                return
            first = text[:eol]
            if not first.startswith(BANNER):
                self._refuse(f"not an AMI server: first line {first[:80]!r}")
                return
            version = first[len(BANNER) :].strip()
            self.version = version
            if not self.banner.done():
                self.banner.set_result(version)
            text = text[eol + 2 :]
        blocks = text.split("\r\n\r\n")
        self._buf = blocks.pop()
        handle = self._handle_block
        for block in blocks:
            handle(block)

    def _handle_block(self, block: str) -> None:
        if block.startswith("Event: "):
            eol = block.find("\r\n")
            name = block[7:eol] if eol > 0 else block[7:]
            if self.responses:
                start = block.find("\r\nActionID: ")
                if start >= 0:
                    end = block.find("\r\n", start + 12)
                    action = self.responses.get(block[start + 12 : end if end > 0 else None])
                    if action is not None:
                        self._feed(action, parse_message(block))
                        return
            if name == "FullyBooted" and not self.fully_booted.done():
                self.fully_booted.set_result(None)
            self.route(name, block)
            if name == "Shutdown":
                restart = "Restart: True" in block
                self.drop(f"Asterisk shut down{' to restart' if restart else ''}")
        elif block.startswith("Response: "):
            message = parse_message(block)
            action_id = message.headers.get("ActionID")
            action = self.responses.get(action_id) if isinstance(action_id, str) else None
            if action is None:
                log.debug("AMI response to no pending action: %s", message.headers)
                return
            self._feed(action, message)
        elif block.strip():
            if block != block.strip():  # a stray CR LF before a message
                self._handle_block(block.strip())
            else:
                log.debug("AMI block ignored: %r", block[:80])

    def _feed(self, action: PendingAction, message: AmiMessage) -> None:
        if action.add_message(message):
            self.responses.pop(action.actionid, None)

    # writing and closing

    def forget(self, action: PendingAction) -> None:
        self.responses.pop(action.actionid, None)

    def _refuse(self, reason: str) -> None:
        if not self.banner.done():
            self.banner.set_exception(AmiProtocolError(reason))
        self.drop(reason)

    def drop(self, reason: str) -> None:
        """Abort the connection now (no flush, no FIN handshake wait)."""
        if self._drop_reason is None:
            self._drop_reason = reason
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def close(self) -> None:
        """panoramisk's `close()` queues unanswered actions for replay: fail them instead."""
        if self._drop_reason is None:
            self._drop_reason = "closed by Guichet"
        self._fail_pending()
        if not self.closed:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = self._drop_reason or (
            f"connection lost: {exc!r}" if exc else "connection closed by Asterisk"
        )
        self._drop_reason = reason
        self._fail_pending()
        if not self.banner.done():
            self.banner.set_exception(ConnectionError(f"{reason}, before the AMI banner"))
        if not self.fully_booted.done():
            self.fully_booted.set_exception(ConnectionError(reason))
        if not self.lost.done():
            self.lost.set_result(reason)

    def _fail_pending(self) -> None:
        reason = self._drop_reason or "connection closed"
        pending = {id(a): a for a in self.responses.values()}
        self.responses.clear()
        for action in pending.values():
            action.fail(
                ActionNotConfirmed(
                    str(action["Action"]), str(action.actionid), reason, queued=action.ack.done()
                )
            )


class WireManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager, one per AmiClient: it wires each new protocol (responses dict,
    encoding, factory) and writes actions. Its own reconnect, keep-alive and replay are
    switched off here; `AmiClient` does them (see the docstring of `cti.ami`)."""

    def ping(self) -> None:
        """panoramisk would send a Ping and never check the Pong: AmiClient pings with a
        deadline instead."""

    def connection_lost(self, exc: Exception | None) -> None:
        """panoramisk would retry every `reconnect_timeout` s forever: AmiClient decides."""

    async def send_awaiting_actions(self, *_: object) -> None:
        """Never replay actions after a reconnect (an Originate would dial twice)."""
        self.awaiting_actions.clear()
