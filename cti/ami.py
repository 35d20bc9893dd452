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
import contextlib
import enum
import itertools
import logging
import random
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from cti.ami_wire import (
    ActionNotConfirmed,
    ActionTimeout,
    AmiClosed,
    AmiError,
    AmiLoginError,
    AmiMessage,
    AmiNotConnected,
    AmiProtocolError,
    DuplicateAction,
    Headers,
    HeaderValue,
    PendingAction,
    WireManager,
    WireProtocol,
    parse_message,
)

__all__ = [
    "ActionNotConfirmed",
    "ActionTimeout",
    "ActionValue",
    "AmiClient",
    "AmiClosed",
    "AmiConfig",
    "AmiError",
    "AmiLoginError",
    "AmiMessage",
    "AmiNotConnected",
    "AmiProtocolError",
    "ConnectionState",
    "DuplicateAction",
    "HeaderValue",
    "Headers",
    "parse_message",
]

log = logging.getLogger("guichet.cti.ami")

ActionValue: TypeAlias = str | int | bool | Sequence[str]
EventCallback: TypeAlias = Callable[["AmiMessage"], None]
StateCallback: TypeAlias = Callable[["ConnectionState", str], None]

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
        self._manager = WireManager(
            host=config.host,
            port=config.port,
            encoding="utf8",
            protocol_factory=lambda: WireProtocol(self._route),
            ping_delay=86400,  # panoramisk's pinger is a no-op here anyway
        )
        self._protocol: WireProtocol | None = None
        self._state = ConnectionState.DISCONNECTED
        self._state_detail = "not started"
        self._changed = asyncio.Event()
        self._fatal: AmiError | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._subs: list[tuple[list[str] | None, _Subscription]] = []
        self._routes: dict[str, tuple[_Subscription, ...]] = {}
        self._every: tuple[_Subscription, ...] = ()
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
        done: asyncio.Future[tuple[asyncio.BaseTransport, WireProtocol]] = loop.create_future()
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

    async def _login(self, protocol: WireProtocol) -> None:
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

    async def _keep_alive(self, protocol: WireProtocol) -> None:
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
        self, protocol: WireProtocol, fields: Mapping[str, str | list[str]], *, timeout: float
    ) -> AmiMessage | list[AmiMessage]:
        fields = dict(fields)
        action_id = fields.get("ActionID")
        if not isinstance(action_id, str) or not action_id:
            fields["ActionID"] = action_id = self.new_action_id()
        pending = PendingAction(fields)
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
        keys = None if names is None else list(dict.fromkeys(names))
        self._subs.append((keys, sub))
        self._rebuild_routes()

        def unsubscribe() -> None:
            self._subs[:] = [(k, s) for k, s in self._subs if s is not sub]
            self._rebuild_routes()

        return unsubscribe

    def _rebuild_routes(self) -> None:
        """Event name -> its subscribers, `*` ones included: one lookup per event, and a
        tuple a callback may unsubscribe from while it is being walked."""
        every = tuple(s for k, s in self._subs if k is None)
        routes: dict[str, list[_Subscription]] = {}
        for keys, sub in self._subs:
            for name in keys or ():
                routes.setdefault(name, []).append(sub)
        self._routes = {name: (*subs, *every) for name, subs in routes.items()}
        self._every = every

    def _route(self, name: str, block: str) -> None:
        self.events_seen += 1
        subs = self._routes.get(name, self._every)
        if not subs:
            return
        message: AmiMessage | None = None
        for sub in subs:
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
