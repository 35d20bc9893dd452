"""The AMI connection: panoramisk's `Manager` behind a small interface, with its gaps closed.

`AmiClient` connects, logs in, keeps the link alive, reconnects with backoff, sends actions
(`send_action(dict) -> Message | list[Message]`) and routes events to subscribers by name.
Everything else in Guichet talks to Asterisk through it (actions through `cti.pbx.Pbx`).

What panoramisk 1.4 does (read in its source) and what we do about it:

* **Keep-alive** (`Manager.ping`): sends `Action: Ping` every `ping_interval` and never looks
  at the answer, so a half-open socket (peer frozen, NAT entry gone, cable cut: no FIN, no
  RST) stays "connected" for as long as TCP retransmits. We ping with a deadline and abort
  the transport when no Pong comes back; the reconnect path takes over.
* **Reconnect** (`Manager.connection_lost`): retries every `reconnect_timeout` seconds
  forever, whatever the cause, with no backoff, and `create_connection` has no timeout. A
  refused login closes the socket (Asterisk does, ~1 s after `Authentication failed`) and
  panoramisk's `login()` only sets `authenticated = False`: a reconnect storm that never
  says why. We back off exponentially (with jitter), and a refused login is a fatal
  `AmiLoginError`: no retry until an operator fixes the secret.
* **Replay** (`AMIProtocol.close` + `Manager.send_awaiting_actions`): actions still waiting
  for their Response when the socket closes are queued and re-sent, with the same ActionID,
  on the next `FullyBooted`. An Originate whose Response was lost with the socket may already
  be ringing a phone: re-sending it dials the citizen twice. Actions that had a partial
  answer (an EventList cut in the middle) and the "forgettable" Ping/Login are dropped
  without resolving their future, so awaiting them hangs forever. We fail every pending
  action with `ActionNotConfirmed` instead; read-only actions (Ping, QueueStatus,
  CoreShowChannels...) are re-sent by `send_action` with a fresh ActionID, never the rest.
  ActionIDs are ours (`guichet.<random>.<n>`): unique across Guichet nodes, because
  `OriginateResponse` is broadcast to every AMI session; an explicit ActionID that was
  already sent for a non-idempotent action is refused (`DuplicateAction`).
* **Completion heuristics** (`Action.multi`): `msg.endswith('successfully queued') and
  self['async'] != 'false'` raises `KeyError('async')` inside `data_received` when the
  action has no `Async` header, i.e. for a synchronous Originate and for **every Atxfer**
  ("Atxfer successfully queued"): asyncio then closes the transport. `Added interface to
  queue` (QueueAdd) is taken for a multi-part answer that never completes, so its future
  never resolves. We decide completion from the Response alone: EventList start/Complete,
  Originate's `OriginateResponse` (correlated by ActionID; we always send `Async: true`),
  otherwise the Response itself.
* **Parsing** (`Message.from_line`): a header seen once is a `str`, seen twice a `list`;
  `getdict()` raises `TypeError` on the `str`. With one `channelvars` entry every
  `ChanVariable` is a string, with two a list. We turn every `*ChanVariable` family
  (ChanVariable, DestChanVariable, TransfererChanVariable, TransfereeChanVariable,
  OrigTransfererChanVariable, SecondTransfererChanVariable, TransferTargetChanVariable,
  SpyerChanVariable, SpyeeChanVariable, LocalOneChanVariable, LocalTwoChanVariable, and
  OriginateResponse's `ChanVariable(<channel>)`) into a `dict[name, value]`, always. Other
  repeated headers (`Variable:` of Status) stay lists.
* **Decoding** (`AMIProtocol.data_received`): each TCP segment is decoded on its own with
  `errors='ignore'`, so a UTF-8 character split across two segments silently disappears
  ("Françoise" -> "Franoise"). We decode incrementally.
* **Speed**: panoramisk builds a case-insensitive dict per message through
  `MutableMapping.update` and matches every event against fnmatch patterns: ~30k events/s
  on one core here, for a stream where four out of five events (Newexten, DTMF, AGIExec,
  VarSet of dialplan variables) interest nobody. We look at the event name first and parse
  only what a subscriber asked for (see bench/ami_events.py).
* **Shutdown**: panoramisk closes the socket on `Event: Shutdown` (good: Asterisk closes it
  ~14 ms later anyway, without Goodbye); we do the same, then reconnect after the initial
  backoff (Asterisk restarts in ~0.5 s; the first attempt may be accepted by the dying
  process and reset: see ami-reconnect).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import itertools
import logging
import operator
import random
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from panoramisk import actions
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

log = logging.getLogger("guichet.cti.ami")

HeaderValue: TypeAlias = str | list[str] | dict[str, str]
Headers: TypeAlias = dict[str, HeaderValue]
ActionValue: TypeAlias = str | int | bool | Sequence[str]
EventCallback: TypeAlias = Callable[["AmiMessage"], None]
StateCallback: TypeAlias = Callable[["ConnectionState", str], None]

BANNER = "Asterisk Call Manager/"
# Read-only actions: re-sending them after a reconnect cannot change anything in Asterisk.
SAFE_TO_REPEAT = frozenset(
    {
        "ping",
        "queuestatus",
        "queuesummary",
        "coreshowchannels",
        "status",
        "getvar",
        "corestatus",
        "coresettings",
        "listcommands",
        "extensionstate",
        "extensionstatelist",
        "devicestatelist",
        "pjsipshowendpoints",
        "pjsipshowcontacts",
        "pjsipshowendpoint",
        "bridgelist",
        "bridgeinfo",
    }
)
_KEY = re.compile(r"[A-Za-z0-9._:-]{1,80}")


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"  # opening the socket, waiting for the banner, logging in
    READY = "ready"  # logged in and FullyBooted: actions may be sent
    DISCONNECTED = "disconnected"  # lost; a reconnect is scheduled
    FAILED = "failed"  # login refused: no reconnect until the configuration is fixed
    CLOSED = "closed"  # closed by Guichet


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


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "guichet"
    secret: str = ""
    events: str = "on"  # the Login's `Events:` (an event class list also works)
    connect_timeout: float = 5.0
    login_timeout: float = 10.0  # Asterisk answers a bad secret after a deliberate 1 s
    fully_booted_timeout: float = 5.0
    action_timeout: float = 10.0  # until the Response
    list_timeout: float = 30.0  # until the `...Complete` event of an EventList
    originate_margin: float = 10.0  # beyond the Originate's own Timeout
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_factor: float = 2.0
    action_id_prefix: str = "guichet"


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


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as retrieved: nobody may be awaiting it any more."""
    if not future.cancelled():
        future.exception()


class _PendingAction(actions.Action):  # type: ignore[misc]
    """One action in flight. panoramisk's completion heuristics are replaced (see the module
    docstring); `ack` resolves on the Response, `future` when the answer is complete."""

    def __init__(self, fields: dict[str, str | list[str]]) -> None:
        super().__init__(fields)
        loop = asyncio.get_running_loop()
        self.ack: asyncio.Future[AmiMessage] = loop.create_future()
        self.future = loop.create_future()
        for future in (self.ack, self.future):
            future.add_done_callback(_consume)
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


class _Protocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with its reading side replaced: incremental UTF-8 decoding,
    banner check, lazy parsing routed by event name, no replay on close."""

    version: str | None
    closed: bool
    responses: dict[str, _PendingAction]
    transport: asyncio.Transport

    def __init__(self, client: AmiClient) -> None:
        super().__init__()
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[str] = loop.create_future()
        self.fully_booted: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        for future in (self.banner, self.fully_booted):
            future.add_done_callback(_consume)
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
            self.client._route(name, block)
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

    def _feed(self, action: _PendingAction, message: AmiMessage) -> None:
        if action.add_message(message):
            self.responses.pop(action.actionid, None)

    # writing and closing

    def forget(self, action: _PendingAction) -> None:
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


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager, one per AmiClient: it wires each new protocol (responses dict,
    encoding, factory) and writes actions. Its own reconnect, keep-alive and replay are
    switched off here; `AmiClient` does them (see the module docstring)."""

    def ping(self) -> None:
        """panoramisk would send a Ping and never check the Pong: AmiClient pings with a
        deadline instead."""

    def connection_lost(self, exc: Exception | None) -> None:
        """panoramisk would retry every `reconnect_timeout` s forever: AmiClient decides."""

    async def send_awaiting_actions(self, *_: object) -> None:
        """Never replay actions after a reconnect (an Originate would dial twice)."""
        self.awaiting_actions.clear()


# --- the client -----------------------------------------------------------------------------


@dataclass
class _Subscription:
    callback: EventCallback
    contains: str | None


class AmiClient:
    """One logged-in AMI session, kept alive and re-established; see the module docstring."""

    def __init__(self, config: AmiConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._manager = _Manager(
            host=config.host,
            port=config.port,
            encoding="utf8",
            protocol_factory=lambda: _Protocol(self),
            ping_delay=86400,  # panoramisk's pinger is a no-op here anyway
        )
        self._protocol: _Protocol | None = None
        self._state = ConnectionState.DISCONNECTED
        self._state_detail = "not started"
        self._changed = asyncio.Event()
        self._fatal: AmiError | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._routes: dict[str, list[_Subscription]] = {}
        self._all: list[_Subscription] = []
        self._state_callbacks: list[StateCallback] = []
        self._token = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._sent: OrderedDict[str, None] = OrderedDict()
        self.connections = 0  # sockets opened, for logs and tests
        self.events_seen = 0
        self.events_parsed = 0

    # --- state ---

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is ConnectionState.READY

    @property
    def version(self) -> str | None:
        """The AMI protocol version from the banner (`11.0.0` for Asterisk 22)."""
        return self._protocol.version if self._protocol is not None else None

    def on_state(self, callback: StateCallback) -> Callable[[], None]:
        """Call `callback(state, detail)` on every connection state change."""
        self._state_callbacks.append(callback)
        return lambda: self._state_callbacks.remove(callback)

    def _set_state(self, state: ConnectionState, detail: str) -> None:
        if state is self._state and detail == self._state_detail:
            return
        self._state, self._state_detail = state, detail
        level = logging.WARNING if state in (ConnectionState.DISCONNECTED,) else logging.INFO
        if state is ConnectionState.FAILED:
            level = logging.ERROR
        log.log(level, "AMI %s:%s %s: %s", self.config.host, self.config.port, state.value, detail)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for callback in list(self._state_callbacks):
            try:
                callback(state, detail)
            except Exception:
                log.exception("AMI state callback failed")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until the link is READY; AmiLoginError if the login was refused, AmiClosed if
        closed, AmiNotConnected when `timeout` runs out first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._state is ConnectionState.READY:
                return
            if self._state is ConnectionState.FAILED and self._fatal is not None:
                raise self._fatal
            if self._state is ConnectionState.CLOSED:
                raise AmiClosed("the AMI client is closed")
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise AmiNotConnected(f"AMI not ready ({self._state_detail})")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                raise AmiNotConnected(f"AMI not ready ({self._state_detail})") from None

    # --- lifecycle ---

    def start(self) -> None:
        """Start connecting in the background (reconnecting as needed); returns at once."""
        if self._supervisor is None or self._supervisor.done():
            self._fatal, self._closing = None, False
            self._supervisor = asyncio.create_task(self._run(), name="ami-supervisor")

    async def connect(self) -> None:
        """Start and wait until logged in. A refused login raises AmiLoginError and is not
        retried; an unreachable Asterisk is retried with backoff (bound this call with
        `asyncio.wait_for` if the caller cannot wait)."""
        self.start()
        await self.wait_ready()

    async def close(self) -> None:
        self._closing = True
        supervisor, self._supervisor = self._supervisor, None
        protocol = self._protocol
        if protocol is not None and self.ready and not protocol.closed:
            # a clean end of session: Asterisk answers Goodbye and closes
            with contextlib.suppress(AmiError, OSError):
                await self._request(protocol, {"Action": "Logoff"}, timeout=1.0)
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if protocol is not None:
            protocol.close()
        self._set_state(ConnectionState.CLOSED, "closed by Guichet")

    async def _run(self) -> None:
        delay = self.config.backoff_initial
        try:
            while True:
                try:
                    reached, reason = await self._session()
                except AmiLoginError as exc:
                    self._fatal = exc
                    self._set_state(ConnectionState.FAILED, str(exc))
                    return
                except (OSError, TimeoutError, AmiError) as exc:
                    reached, reason = False, _describe(exc)
                if self._closing:
                    return
                if reached:
                    delay = self.config.backoff_initial
                wait = delay * self._rng.uniform(0.8, 1.2)
                self._set_state(
                    ConnectionState.DISCONNECTED, f"{reason}; reconnecting in {wait:.2f} s"
                )
                await asyncio.sleep(wait)
                if not reached:
                    delay = min(delay * self.config.backoff_factor, self.config.backoff_max)
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()
            if self._protocol is not None:
                self._protocol.close()

    async def _session(self) -> tuple[bool, str]:
        """One connection: connect, banner, login, FullyBooted, then serve until lost.
        Returns (reached READY, why it ended)."""
        cfg = self.config
        self._set_state(ConnectionState.CONNECTING, f"connecting to {cfg.host}:{cfg.port}")
        loop = asyncio.get_running_loop()
        self._manager.loop = loop
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(self._manager.config["protocol_factory"], cfg.host, cfg.port),
            cfg.connect_timeout,
        )
        self.connections += 1
        done: asyncio.Future[tuple[asyncio.BaseTransport, _Protocol]] = loop.create_future()
        done.set_result((transport, protocol))
        self._manager.connection_made(done)  # panoramisk wires protocol <-> manager
        self._manager.pinger.cancel()  # its keep-alive: ours is `_keep_alive`
        self._protocol = protocol
        try:
            try:
                await asyncio.wait_for(asyncio.shield(protocol.banner), cfg.connect_timeout)
            except TimeoutError:
                raise AmiProtocolError("no AMI banner (is this the AMI port?)") from None
            await self._login(protocol)
            booted = asyncio.shield(protocol.fully_booted)
            try:
                await asyncio.wait_for(booted, cfg.fully_booted_timeout)
            except TimeoutError:
                log.warning("AMI: no FullyBooted within %s s; going on", cfg.fully_booted_timeout)
            self._set_state(ConnectionState.READY, f"logged in (AMI {protocol.version})")
            self._keepalive = asyncio.create_task(self._keep_alive(protocol), name="ami-ping")
            reason = await asyncio.shield(protocol.lost)
            return True, reason
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()
                self._keepalive = None
            protocol.drop("session ended")

    async def _login(self, protocol: _Protocol) -> None:
        fields = {
            "Action": "Login",
            "Username": self.config.username,
            "Secret": self.config.secret,
            "Events": self.config.events,
        }
        try:
            response = await self._request(protocol, fields, timeout=self.config.login_timeout)
        except ActionNotConfirmed as exc:
            raise ConnectionError(f"connection lost during login: {exc.reason}") from None
        except ActionTimeout:
            raise ConnectionError("no answer to Login") from None
        assert isinstance(response, AmiMessage)
        if response.text("Response") != "Success":
            raise AmiLoginError(
                f"Asterisk refused the AMI login of {self.config.username!r} at "
                f"{self.config.host}:{self.config.port}: {response.text('Message') or 'error'}"
                " (check the secret and permit/deny in manager.conf, GUICHET_AMI_SECRET)"
            )

    async def _keep_alive(self, protocol: _Protocol) -> None:
        """Ping with a deadline: no Pong means a half-open socket, so drop it."""
        cfg = self.config
        while not protocol.closed:
            await asyncio.sleep(cfg.ping_interval)
            try:
                pong = await self._request(protocol, {"Action": "Ping"}, timeout=cfg.ping_timeout)
            except ActionTimeout:
                protocol.drop(f"no Pong within {cfg.ping_timeout} s: half-open connection")
                return
            except AmiError:
                return
            if isinstance(pong, AmiMessage) and pong.text("Response") != "Success":
                protocol.drop(f"Ping refused: {pong.text('Message')}")
                return

    # --- actions ---

    def new_action_id(self, key: str | None = None) -> str:
        """A fresh ActionID, or one derived from a caller's idempotency `key` (a request id:
        the same key always gives the same ActionID, and a second send is refused)."""
        prefix = self.config.action_id_prefix
        if key is None:
            return f"{prefix}.{self._token}.{next(self._counter)}"
        if not _KEY.fullmatch(key):
            raise ValueError(f"idempotency key {key!r}: 1-80 of A-Z a-z 0-9 . _ : -")
        return f"{prefix}.key.{key}"

    def _prepare(self, action: Mapping[str, ActionValue]) -> dict[str, str | list[str]]:
        fields: dict[str, str | list[str]] = {}
        for key, value in action.items():
            if isinstance(value, bool):
                text: str | list[str] = "true" if value else "false"
            elif isinstance(value, (str, int)):
                text = str(value)
            else:
                text = [str(v) for v in value]
            for item in [key, *(text if isinstance(text, list) else [text])]:
                if "\r" in item or "\n" in item:
                    raise ValueError(f"AMI header {key!r}: CR/LF would inject headers")
            fields[key] = text
        name = fields.get("Action")
        if not isinstance(name, str) or not name:
            raise ValueError("an AMI action needs an `Action` header")
        if name.lower() == "originate":
            if str(fields.get("Async", "true")).lower() not in ("true", "yes", "1"):
                raise ValueError(
                    "a synchronous Originate blocks the AMI session until the call is "
                    "answered: always Async (its OriginateResponse is correlated by ActionID)"
                )
            fields["Async"] = "true"
        return fields

    async def send_action(
        self, action: Mapping[str, ActionValue], *, timeout: float | None = None
    ) -> AmiMessage | list[AmiMessage]:
        """Send one action and return its answer: the Response, or for an EventList the
        Response, the events and the `...Complete` event, or for an Originate
        [Response, OriginateResponse]. An Error Response is returned, not raised.

        Raises AmiNotConnected (not sent), ActionTimeout, DuplicateAction, or
        ActionNotConfirmed (connection lost mid-way; read-only actions are re-sent once the
        link is back instead, within `timeout`)."""
        fields = self._prepare(action)
        kind = str(fields["Action"]).lower()
        repeatable = kind in SAFE_TO_REPEAT
        explicit = fields.get("ActionID")
        if isinstance(explicit, str) and not repeatable and explicit in self._sent:
            raise DuplicateAction(f"{fields['Action']} {explicit} was already sent")
        loop = asyncio.get_running_loop()
        budget = self.config.action_timeout if timeout is None else timeout
        deadline = loop.time() + budget
        while True:
            protocol = self._protocol
            if not self.ready or protocol is None or protocol.closed:
                if not repeatable:
                    raise AmiNotConnected(f"AMI not ready ({self._state_detail}): not sent")
                await self.wait_ready(max(0.0, deadline - loop.time()))
                continue
            try:
                return await self._request(protocol, fields, timeout=budget)
            except ActionNotConfirmed:
                if not repeatable or loop.time() >= deadline:
                    raise
                log.info("AMI %s re-sent after reconnect (read-only)", fields["Action"])
                fields = dict(fields, ActionID=self.new_action_id())

    async def _request(
        self, protocol: _Protocol, fields: Mapping[str, str | list[str]], *, timeout: float
    ) -> AmiMessage | list[AmiMessage]:
        fields = dict(fields)
        action_id = fields.get("ActionID")
        if not isinstance(action_id, str) or not action_id:
            fields["ActionID"] = action_id = self.new_action_id()
        pending = _PendingAction(fields)
        if protocol.closed:
            raise AmiNotConnected("AMI connection closed: not sent")
        if pending.kind not in SAFE_TO_REPEAT and pending.kind not in ("login", "logoff"):
            self._remember(action_id)
        protocol.send(pending, as_list=None)
        try:
            try:
                await asyncio.wait_for(asyncio.shield(pending.ack), timeout)
            except TimeoutError:
                raise ActionTimeout(
                    f"{fields['Action']} {action_id}: no Response within {timeout} s"
                ) from None
            if pending.collecting:
                wait = self.config.list_timeout
            elif pending.awaiting_originate:
                wait = _originate_wait(fields) + self.config.originate_margin
            else:
                wait = timeout
            try:
                result: AmiMessage | list[AmiMessage] = await asyncio.wait_for(
                    asyncio.shield(pending.future), wait
                )
            except TimeoutError:
                what = "OriginateResponse" if pending.awaiting_originate else "end of list"
                raise ActionTimeout(
                    f"{fields['Action']} {action_id}: no {what} within {wait:.0f} s"
                ) from None
            return result
        finally:
            protocol.forget(pending)

    def _remember(self, action_id: str) -> None:
        self._sent[action_id] = None
        while len(self._sent) > 10000:
            self._sent.popitem(last=False)

    # --- events ---

    def subscribe(
        self,
        callback: EventCallback,
        names: Iterable[str] | None = None,
        *,
        contains: str | None = None,
    ) -> Callable[[], None]:
        """Call `callback(message)` for each event named in `names` (all events if None),
        optionally only when the raw message contains `contains` (e.g.
        `"\\r\\nVariable: GUICHET_"` for VarSet): events nobody wants are never parsed.
        Callbacks run in the reading path: keep them short, never block."""
        sub = _Subscription(callback, contains)
        if names is None:
            self._all.append(sub)
            return lambda: self._all.remove(sub)
        keys = list(dict.fromkeys(names))
        for name in keys:
            self._routes.setdefault(name, []).append(sub)

        def unsubscribe() -> None:
            for name in keys:
                subs = self._routes.get(name, [])
                if sub in subs:
                    subs.remove(sub)
                if not subs:
                    self._routes.pop(name, None)

        return unsubscribe

    def _route(self, name: str, block: str) -> None:
        self.events_seen += 1
        subs = self._routes.get(name)
        if subs is None and not self._all:
            return
        message: AmiMessage | None = None
        for sub in [*subs, *self._all] if subs and self._all else subs or self._all:
            if sub.contains is not None and sub.contains not in block:
                continue
            if message is None:
                message = parse_message(block)
                self.events_parsed += 1
            try:
                sub.callback(message)
            except Exception:
                log.exception("AMI event subscriber failed on %s", name)


def _originate_wait(fields: Mapping[str, str | list[str]]) -> float:
    """Seconds until Asterisk must have sent OriginateResponse: the action's Timeout (ms,
    default 30000) is how long the first channel may ring."""
    raw = fields.get("Timeout", "30000")
    try:
        return float(raw if isinstance(raw, str) else "30000") / 1000.0
    except ValueError:
        return 30.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, AmiError) else f"{type(exc).__name__}: {text}"
