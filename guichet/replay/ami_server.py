"""An Asterisk stand-in for AMI: the tests and the demo PBX drive Guichet's AMI client with it
over real TCP, playing the bytes recorded from Asterisk 22.10.

* `Script.load(ami.log, "c1")` turns one recorded connection into what Asterisk sent
  (`Block`s, byte for byte), the actions the recording client sent at that point
  (`Expect`s) and how the connection ended (`Close`, `Reset`).
* `AmiPeer` listens on 127.0.0.1 (port 0 unless told), plays one script per accepted
  connection (the last one repeats): the banner, the Login check, then the blocks. At an
  `Expect` the stream waits until the client sends the same action (same headers but
  ActionID) and goes on with Asterisk's recorded answer, ActionID rewritten to the client's.
  Other actions get what Asterisk answers: Pong, an empty EventList (or one given in
  `lists`), Goodbye, or an error.
* It records every action (the last `keep` per connection, for a long-running peer), and
  can drop a connection, stop answering (a half-open socket), or act on an action through a
  hook (drop the line when an Originate arrives...).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guichet.replay.agi_caller import read_log, transcripts_dir

__all__ = [
    "BANNER",
    "EOL",
    "LIST_ACTIONS",
    "Action",
    "AmiPeer",
    "Block",
    "Close",
    "Drop",
    "Expect",
    "Hook",
    "Item",
    "Reset",
    "Script",
    "Session",
    "parse_headers",
    "recorded_answer",
    "recording",
]

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
EOL = b"\r\n"

# Empty-list answers, as Asterisk 22 words them (agent-pause).
LIST_ACTIONS = {
    "coreshowchannels": ("Channels will follow", "CoreShowChannelsComplete"),
    "queuestatus": ("Queue status will follow", "QueueStatusComplete"),
    "queuesummary": ("Queue summary will follow", "QueueSummaryComplete"),
    "status": ("Channel status will follow", "StatusComplete"),
}


def recording(scenario: str, root: Path | str | None = None) -> Path:
    """`ami.log` of a scenario folder under `root` (default: `transcripts_dir()`)."""
    return transcripts_dir(root) / scenario / "ami.log"


# --- scripts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One message Asterisk sent, with its blank line."""

    t: float
    raw: bytes


@dataclass(frozen=True)
class Expect:
    """An action the recording client sent here."""

    t: float
    headers: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return dict(self.headers).get("Action", "").lower()

    @property
    def action_id(self) -> str | None:
        return dict(self.headers).get("ActionID")


@dataclass(frozen=True)
class Close:
    """Asterisk closed the socket (FIN)."""

    t: float


@dataclass(frozen=True)
class Reset:
    """Asterisk reset the connection (RST), e.g. accepted by a dying process."""

    t: float


Item = Block | Expect | Close | Reset


def parse_headers(raw: bytes) -> tuple[tuple[str, str], ...]:
    out = []
    for line in raw.decode().split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            out.append((key, value))
    return tuple(out)


@dataclass(frozen=True)
class Script:
    banner: bytes | None
    items: tuple[Item, ...]

    @classmethod
    def load(cls, path: Path | str, conn: str = "c1") -> Script:
        banner: bytes | None = None
        items: list[Item] = []
        pending: dict[str, tuple[float, list[bytes]]] = {}
        for t, c, direction, raw in read_log(path):
            if c != conn:
                continue
            if direction == "--":
                note = raw.decode().strip()
                if "ConnectionResetError" in note:
                    items.append(Reset(t))
                elif note.startswith("EOF") and not any(isinstance(i, Reset) for i in items):
                    items.append(Close(t))
                continue
            if direction == ">>" and banner is None and raw.startswith(b"Asterisk Call Manager/"):
                banner = raw
                continue
            t0, lines = pending.setdefault(direction, (t, []))
            lines.append(raw)
            if raw == EOL:
                del pending[direction]
                body = b"".join(lines)
                items.append(
                    Block(t0, body) if direction == ">>" else Expect(t0, parse_headers(body))
                )
        return cls(banner, tuple(items))

    @classmethod
    def login_only(cls, scenario: str = "ami-reconnect") -> Script:
        """Banner, Login, its answer, FullyBooted and SuccessfulAuth: an idle session."""
        full = cls.load(recording(scenario))
        items: list[Item] = []
        for item in full.items:
            if isinstance(item, Block) and b"Event: Shutdown" in item.raw:
                break
            items.append(item)
        return cls(full.banner, tuple(items))

    def until(self, t: float) -> Script:
        """Only what was recorded up to `t` (then the connection stays open, idle)."""
        return Script(self.banner, tuple(i for i in self.items if i.t <= t))

    def after(self, t: float) -> Script:
        """The session from its login up to its FullyBooted, then only what came after `t`
        (a client connecting in the middle of the recording)."""
        head: list[Item] = []
        for item in self.items:
            head.append(item)
            if isinstance(item, Block) and b"Event: FullyBooted" in item.raw:
                break
        tail = [i for i in self.items[len(head) :] if i.t > t]
        return Script(self.banner, tuple(head + tail))


def recorded_answer(path: Path | str, action_id: str, conn: str = "c1") -> list[bytes]:
    """The Response to `action_id` and the list events that carry it, as recorded."""
    marker = f"ActionID: {action_id}\r\n".encode()
    script = Script.load(path, conn)
    return [i.raw for i in script.items if isinstance(i, Block) and marker in i.raw]


# --- the peer -----------------------------------------------------------------------------


@dataclass
class Action:
    headers: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.headers:
            if k.lower() == key.lower():
                return v
        return default

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == key.lower()]

    @property
    def name(self) -> str:
        return self.get("Action").lower()

    @property
    def action_id(self) -> str:
        return self.get("ActionID")


Hook = Callable[["Session", Action], "bytes | Drop | None"]


class Drop:
    """Hook answer: reset the connection instead of answering."""


@dataclass
class Session:
    """One accepted connection."""

    script: Script
    writer: asyncio.StreamWriter
    actions: list[Action] = field(default_factory=list)
    answered: list[Action] = field(default_factory=list)  # outside the script
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    ids: dict[str, str] = field(default_factory=dict)  # recorded ActionID -> the client's
    muted: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_by_client: bool = False
    logged_in: bool = False

    def write(self, raw: bytes) -> None:
        if self.muted or self.writer.is_closing():
            return
        if b"ActionID: " in raw and self.ids:
            raw = re.sub(
                rb"ActionID: ([^\r\n]*)\r\n",
                lambda m: (
                    b"ActionID: "
                    + self.ids.get(m.group(1).decode(), m.group(1).decode()).encode()
                    + EOL
                ),
                raw,
            )
        self.writer.write(raw)

    def reset(self) -> None:
        """Close with RST, as a dying Asterisk does."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


class AmiPeer:
    def __init__(
        self,
        scripts: Sequence[Script],
        *,
        username: str = "guichet",
        secret: str = "guichet-secret",
        speed: float | None = None,
        lists: Mapping[str, Sequence[bytes]] | None = None,
        auth_delay: float = 0.05,
        settle: int = 0,
        keep: int | None = None,
    ) -> None:
        self.scripts = list(scripts)
        self.username = username
        self.secret = secret
        self.speed = speed  # None: as fast as possible; 10: ten times the recorded pace
        self.lists = {k.lower(): list(v) for k, v in (lists or {}).items()}
        self.auth_delay = auth_delay  # Asterisk waits 1 s before refusing a login
        # After FullyBooted, wait for this many actions (a client's state queries) before
        # streaming on: they are answered as of the login, when the recorded PBX was idle.
        self.settle = settle
        # None: every action and connection stays recorded (tests look at them). A number:
        # only the last `keep` actions per connection, and closed connections are forgotten,
        # so a peer running for days (the demo PBX) holds bounded memory.
        self.keep = keep
        # Set by a test when the rest of the recording may play (e.g. once its own FastAGI
        # call has created the case the recorded events refer to).
        self.gate: asyncio.Event | None = None
        # Values our side made up during the call, rewritten in Asterisk's bytes as they are
        # sent (the case reference the IVR handed over as GUICHET_CASE_ID).
        self.rewrites: dict[bytes, bytes] = {}
        self.hooks: list[Hook] = []
        self.sessions: list[Session] = []
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            session.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> AmiPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what the tests look at ---

    @property
    def actions(self) -> list[Action]:
        return [a for s in self.sessions for a in s.actions]

    def sent(self, name: str) -> list[Action]:
        return [a for a in self.actions if a.name == name.lower()]

    @property
    def current(self) -> Session:
        return self.sessions[-1]

    def mute(self) -> None:
        """Stop writing and answering on the current connection, keep it open: what a
        client sees of a frozen host or a dead NAT entry."""
        self.current.muted = True

    def drop(self) -> None:
        """Reset the current connection (RST), e.g. a crash or a network cut."""
        self.current.reset()

    async def shutdown(self, *, restart: bool = True) -> None:
        """What `core restart now` / `core stop now` look like (ami-reconnect): the Shutdown
        event, then the socket closed without Goodbye."""
        session = self.current
        session.write(
            b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\n"
            b"Restart: " + (b"True" if restart else b"False") + b"\r\n\r\n"
        )
        await session.writer.drain()
        session.close()

    async def wait_sessions(self, n: int, timeout: float = 10.0) -> None:
        async def until() -> None:
            while len(self.sessions) < n:
                self.connected.clear()
                await self.connected.wait()

        await asyncio.wait_for(until(), timeout)

    # --- serving ---

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = min(len(self.sessions), len(self.scripts) - 1)
        session = Session(self.scripts[index], writer)
        self.sessions.append(session)
        self.connected.set()
        task = asyncio.create_task(self._serve(session, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, session: Session, reader: asyncio.StreamReader) -> None:
        script = session.script
        if script.banner is None or any(isinstance(i, Reset) for i in script.items[:1]):
            await asyncio.sleep(0.01)
            session.reset()
            session.closed.set()
            return
        session.write(script.banner)
        matched: asyncio.Queue[Action] = asyncio.Queue()
        expects = [i for i in script.items if isinstance(i, Expect)]
        state = {"next": 0}
        stream = asyncio.create_task(self._stream(session, matched))
        try:
            while True:
                raw = await reader.readuntil(EOL + EOL)
                action = Action(parse_headers(raw))
                session.actions.append(action)
                if self.keep is not None and len(session.actions) > self.keep:
                    del session.actions[: -self.keep]
                    del session.answered[: -self.keep]
                if session.muted:
                    continue
                if self._hooked(session, action):
                    continue
                n = state["next"]
                if n < len(expects) and _matches(expects[n], action):
                    state["next"] = n + 1
                    matched.put_nowait(action)
                else:
                    await self._answer(session, action)
                    session.answered.append(action)
                    session.progress.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            session.closed_by_client = not session.writer.is_closing()
        finally:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await stream
            session.closed.set()
            session.writer.transport.abort()
            if self.keep is not None and session in self.sessions:
                self.sessions.remove(session)

    def _hooked(self, session: Session, action: Action) -> bool:
        for hook in self.hooks:
            answer = hook(session, action)
            if isinstance(answer, Drop):
                session.reset()
                return True
            if answer is not None:
                session.write(answer.replace(b"{id}", action.action_id.encode()))
                return True
        return False

    async def _stream(self, session: Session, matched: asyncio.Queue[Action]) -> None:
        last: float | None = None
        for item in session.script.items:
            if self.speed and last is not None and item.t > last:
                await asyncio.sleep((item.t - last) / self.speed)
            last = item.t
            if isinstance(item, Expect):
                action = await matched.get()
                if item.action_id:
                    session.ids[item.action_id] = action.action_id
                if item.name == "login" and not self._credentials_ok(action):
                    await asyncio.sleep(self.auth_delay)
                    session.write(_response(action, "Error", "Authentication failed"))
                    await session.writer.drain()
                    session.close()
                    return
                if item.name == "login":
                    session.logged_in = True
                last = None  # the wait for the client does not count
            elif isinstance(item, Block):
                raw = item.raw
                for old, new in self.rewrites.items():
                    raw = raw.replace(old, new)
                session.write(raw)
                await session.writer.drain()
                if self.settle and b"Event: FullyBooted" in item.raw:
                    await self._settle(session)
                if self.gate is not None and b"Event: FullyBooted" in item.raw:
                    await self.gate.wait()
            elif isinstance(item, Close):
                await session.writer.drain()
                session.close()
                return
            elif isinstance(item, Reset):
                session.reset()
                return

    async def _settle(self, session: Session) -> None:
        async def until() -> None:
            while len(session.answered) < self.settle:
                session.progress.clear()
                await session.progress.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until(), 2.0)

    def _credentials_ok(self, action: Action) -> bool:
        return action.get("Username") == self.username and action.get("Secret") == self.secret

    async def _answer(self, session: Session, action: Action) -> None:
        """What Asterisk answers outside the script."""
        name = action.name
        if name == "login":
            if not self._credentials_ok(action):
                await asyncio.sleep(self.auth_delay)
                session.write(_response(action, "Error", "Authentication failed"))
                session.close()
                return
            session.logged_in = True
            session.write(_response(action, "Success", "Authentication accepted"))
            session.write(
                b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 0\r\n"
                b"LastReload: 0\r\nStatus: Fully Booted\r\n\r\n"
            )
        elif not session.logged_in:
            session.write(_response(action, "Error", "Permission denied"))
        elif name == "ping":
            session.write(
                f"Response: Success\r\nActionID: {action.action_id}\r\nPing: Pong\r\n"
                "Timestamp: 1795370000.000000\r\n\r\n".encode()
            )
        elif name in self.lists:
            session.ids.update(_ids_in(self.lists[name], action.action_id))
            for raw in self.lists[name]:
                session.write(raw)
        elif name in LIST_ACTIONS:
            message, complete = LIST_ACTIONS[name]
            session.write(
                f"Response: Success\r\nActionID: {action.action_id}\r\nEventList: start\r\n"
                f"Message: {message}\r\n\r\n"
                f"Event: {complete}\r\nActionID: {action.action_id}\r\nEventList: Complete\r\n"
                "ListItems: 0\r\n\r\n".encode()
            )
        elif name == "logoff":
            session.write(_response(action, "Goodbye", "Thanks for all the fish."))
            await session.writer.drain()
            session.close()
        else:
            session.write(_response(action, "Error", "Invalid/unknown command"))


def _ids_in(blocks: Sequence[bytes], client_id: str) -> dict[str, str]:
    found = {
        m.group(1).decode()
        for raw in blocks
        for m in re.finditer(rb"ActionID: ([^\r\n]*)\r\n", raw)
    }
    return {recorded: client_id for recorded in found}


def _response(action: Action, response: str, message: str) -> bytes:
    return (
        f"Response: {response}\r\nActionID: {action.action_id}\r\nMessage: {message}\r\n\r\n"
    ).encode()


def _matches(expect: Expect, action: Action) -> bool:
    """Same action with the same headers (ActionID aside; a Login by name only: the peer
    checks the credentials itself)."""
    if expect.name != action.name:
        return False
    if expect.name == "login":
        return True
    want = sorted((k.lower(), v) for k, v in expect.headers if k.lower() != "actionid")
    got = sorted((k.lower(), v) for k, v in action.headers if k.lower() != "actionid")
    return want == got
