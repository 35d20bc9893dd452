"""Screen-pop latency and AMI throughput of a whole Guichet, over real sockets.

A real `guichet.runtime.Guichet` (temporary SQLite, case spool in a temporary folder, the
console served by uvicorn) runs in one process pinned to one core. Another process, pinned
to the other core, plays both Asterisk and the agents:

* an AMI server that Guichet logs in to (Login, FullyBooted, Ping, the rebuild's empty
  CoreShowChannels/QueueStatus/QueueSummary), then streams calls synthesised from the
  `inbound-answered` recording (shipped in guichet/replay/recordings): per call fresh Uniqueids, channel
  names, bridge id and case reference, and the ringing member rotated over the agents
  (`Local/agent1@agents`, `Agent One`, `PJSIP/agent1` -> agent N);
* `--agents` console users (interface `PJSIP/agentN`), each signed in with a bearer token
  (`POST /api/auth/token`) and holding one websocket (`/ws?token=`, hello with
  `last_seq: null`, until `ready`).

Both clocks are this process's `time.monotonic` (the AMI writer and the websocket clients
share one event loop), so a pop's latency is: the `AgentCalled` block handed to the AMI
socket -> the matching `screen_pop` read by the agent's websocket client. The load process's
own loop lag is printed: it is part of every latency figure.

Two phases per round:

* **latency**: `--rate` new calls/s (20) for `--duration` s (60: a steady minute, so the
  websockets' once-a-minute session re-check falls inside it), each call's events at the
  recorded pace (`--speed 1`; 0 sends a call's events at once). Target: pop p99 <= 25 ms.
* **capacity**: `--capacity-calls` calls streamed back to back as fast as the socket takes
  them. The server counts the AMI events it routed between two marker events around them.
  Target: >= 30,000 events/s on one core, judged per server CPU-second (the machine is
  shared: wall-clock rates are printed too, with the CPU other processes took from the
  server's core), twice: the AMI read path (parse, route, CTI state: between the markers)
  and the whole pipeline (until the last `call_ended` reached its agent's websocket).

Cases are pre-created with a citizen each (`--cases created`, as the IVR would have done)
or left out (`--cases pending`: the pop shows what the AMI variables say). Rounds repeat
(`--repeat`, fresh processes and database each) and print the median with the min-max
spread: the machine is shared. Loopback only; every wait is bounded and the run stops by
itself.

    .venv/bin/python bench/screenpop.py [--agents 500] [--rate 20] [--duration 60]
        [--capacity-calls 1000] [--repeat 3] [--cases created|pending]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import cProfile
import json
import multiprocessing as mp
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from _harness import (  # noqa: E402
    AMI_SECRET,
    HOST,
    MARKER,
    PASSWORD,
    _cell,
    _core_times,
    _cores,
    _lag_probe,
    _lags_between,
    _marker,
    _percentile,
    _pin,
    _recv,
    _row,
    _run_delay,
    _value_at,
    _verdict,
    close_load,
    health,
    run_processes,
    run_rounds,
    serve_guichet,
    tokens,
    wait_until,
)

from guichet.replay.agi_caller import BUNDLED_RECORDINGS  # noqa: E402
from guichet.replay.ami_server import Block, Script  # noqa: E402

RECORDINGS = BUNDLED_RECORDINGS  # inbound-answered ships with Guichet (byte-exact copy)
SCENARIO = "inbound-answered"
SECRET_KEY = "bench-screenpop-secret-key-0123456789abcdef"
TARGET_P99_MS = 25.0
TARGET_EVENTS = 30_000
SESSION_EVENTS = (b"Event: FullyBooted\r\n", b"Event: SuccessfulAuth\r\n")  # per login
LISTS = {
    "coreshowchannels": ("Channels will follow", "CoreShowChannelsComplete"),
    "queuestatus": ("Queue status will follow", "QueueStatusComplete"),
    "queuesummary": ("Queue summary will follow", "QueueSummaryComplete"),
}


# --- the calls ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One recorded call: its event blocks and when each came, from the first one."""

    blocks: tuple[bytes, ...]
    offsets: tuple[float, ...]
    called: int  # index of the AgentCalled block

    @classmethod
    def load(cls, path: Path) -> Template:
        script = Script.load(path)
        kept = [
            item
            for item in script.items
            if isinstance(item, Block)
            and item.raw.startswith(b"Event: ")
            and not item.raw.startswith(SESSION_EVENTS)
        ]
        if not kept:
            raise SystemExit(f"no events in {path}")
        t0 = kept[0].t
        blocks = tuple(item.raw for item in kept)
        called = next(i for i, b in enumerate(blocks) if b.startswith(b"Event: AgentCalled\r\n"))
        return cls(blocks, tuple(item.t - t0 for item in kept), called)


# Everything in the recording that names this call, its agent or its case.
_IDS = re.compile(
    rb"1795370006\.[01]|1795370018\.[23]|from-citizen-00000000;|agents-00000001;"
    rb"|agent1(?![0-9])|Agent One|5d2fc6e6-486b-4e10-befa-2ee575cb7cc2|case-1001"
)


def call_id(index: int) -> str:
    """GUICHET_CALL_ID (the citizen channel's Uniqueid) of the `index`th synthesised call."""
    return f"{1795370006 + index // 20}.{4 * index + 1}"


def render(template: Template, index: int, agent: int, reference: str) -> list[bytes]:
    """The recorded call as call `index`: its own ids, ringing agent `agent`, case
    `reference`."""
    epoch = 1795370006 + index // 20
    names = {
        b"1795370006.0": f"{epoch}.{4 * index}",
        b"1795370006.1": f"{epoch}.{4 * index + 1}",
        b"1795370018.2": f"{epoch}.{4 * index + 2}",
        b"1795370018.3": f"{epoch}.{4 * index + 3}",
        b"from-citizen-00000000;": f"from-citizen-{2 * index:08x};",
        b"agents-00000001;": f"agents-{2 * index + 1:08x};",
        b"agent1": f"agent{agent}",
        b"Agent One": f"Agent {agent}",
        b"5d2fc6e6-486b-4e10-befa-2ee575cb7cc2": f"5d2fc6e6-486b-4e10-befa-{index:012x}",
        b"case-1001": reference,
    }
    table = {k: v.encode() for k, v in names.items()}
    body = _IDS.sub(lambda m: table[m.group(0)], b"".join(template.blocks))
    blocks = [b + b"\r\n\r\n" for b in body.split(b"\r\n\r\n")[:-1]]
    assert len(blocks) == len(template.blocks)
    return blocks


def agent_of(index: int, agents: int) -> int:
    return index % agents + 1


# --- the load process: Asterisk's AMI and the agents' websockets -----------------------------


class AmiReplay:
    """The AMI server Guichet connects to: answers its actions, streams what it is given."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.sessions = 0
        self.lost = 0  # events written while Guichet was disconnected
        self.ready = asyncio.Event()  # logged in and the rebuild's lists answered
        self.actions: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def write(self, data: bytes) -> None:
        """Send now; while Guichet is away (it reconnects by itself) the events are lost,
        and counted."""
        if self.writer is None or self.writer.is_closing():
            self.lost += data.count(b"\r\n\r\n")
            return
        self.writer.write(data)

    async def drain(self) -> None:
        if self.writer is not None:
            await self.writer.drain()

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size() if self.writer else 0

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self.ready.clear()
        if self.writer is not None:
            self.writer.transport.abort()
        self.writer = writer
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        lists = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line
                )
                name = headers.get("Action", "").lower()
                self.actions[name] = self.actions.get(name, 0) + 1
                aid = headers.get("ActionID", "")
                if name == "login":
                    ok = headers.get("Secret") == AMI_SECRET
                    writer.write(
                        f"Response: {'Success' if ok else 'Error'}\r\nActionID: {aid}\r\n"
                        f"Message: Authentication {'accepted' if ok else 'failed'}\r\n\r\n"
                        "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 2\r\n"
                        "LastReload: 2\r\nStatus: Fully Booted\r\n\r\n".encode()
                    )
                elif name == "ping":
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n"
                        f"Timestamp: {time.time():.6f}\r\n\r\n".encode()
                    )
                elif name in LISTS:
                    message, complete = LISTS[name]
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                        f"Message: {message}\r\n\r\nEvent: {complete}\r\nActionID: {aid}\r\n"
                        "EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                    )
                    lists += 1
                    if lists >= len(LISTS):
                        self.ready.set()
                elif name == "logoff":
                    writer.write(
                        f"Response: Goodbye\r\nActionID: {aid}\r\n"
                        "Message: Thanks for all the fish.\r\n\r\n".encode()
                    )
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(
                        f"Response: Error\r\nActionID: {aid}\r\n"
                        "Message: Invalid/unknown command\r\n\r\n".encode()
                    )


@dataclass
class Book:
    """What happened to each call, by index: AgentCalled written, pop read, end read."""

    agents: int
    calls: int
    index: dict[str, int] = field(default_factory=dict)
    written: list[float] = field(default_factory=list)
    popped: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    wrong_agent: int = 0
    duplicates: int = 0
    frames: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        nan = float("nan")
        self.index = {call_id(i): i for i in range(self.calls)}
        self.written = [nan] * self.calls
        self.popped = [nan] * self.calls
        self.ended = [nan] * self.calls

    def frame(self, agent: int, text: str, at: float) -> None:
        self.frames += 1
        if '"screen_pop"' not in text and '"call_ended"' not in text:
            return
        message = json.loads(text)
        kind = message.get("type")
        if kind not in ("screen_pop", "call_ended"):
            return
        i = self.index.get(str((message.get("data") or {}).get("call_id")))
        if i is None:
            return
        if agent_of(i, self.agents) != agent:
            self.wrong_agent += 1
        slots = self.popped if kind == "screen_pop" else self.ended
        if slots[i] == slots[i]:  # not NaN: seen already
            self.duplicates += 1
            return
        slots[i] = at
        self.changed.set()

    def done(self, calls: range) -> bool:
        return all(
            self.ended[i] == self.ended[i] and self.popped[i] == self.popped[i] for i in calls
        )

    async def wait(self, calls: range, deadline: float, idle: float = 5.0) -> None:
        """Until every call has its pop and its end, nothing came for `idle` s (some were
        lost), or `deadline`."""
        await wait_until(lambda: self.done(calls), self.changed, deadline, idle)

    def phase(self, calls: range, first_write: float, last_write: float) -> dict[str, Any]:
        latencies = [
            (self.popped[i] - self.written[i]) * 1000
            for i in calls
            if self.popped[i] == self.popped[i] and self.written[i] == self.written[i]
        ]
        ends = [self.ended[i] for i in calls if self.ended[i] == self.ended[i]]
        slowest = sorted(
            (
                ((self.popped[i] - self.written[i]) * 1000, self.written[i] - first_write, i)
                for i in calls
                if self.popped[i] == self.popped[i] and self.written[i] == self.written[i]
            ),
            reverse=True,
        )[:3]
        return {
            "slowest": slowest,
            "calls": len(calls),
            "pops": sum(1 for i in calls if self.popped[i] == self.popped[i]),
            "ends": len(ends),
            "latencies_ms": latencies,
            "first_write": first_write,
            "last_write": last_write,
            "last_end": max(ends) if ends else float("nan"),
        }


@dataclass(frozen=True)
class LoadSpec:
    agents: int
    calls: int  # latency phase
    rate: float
    speed: float
    capacity_calls: int
    references: tuple[str, ...]  # one per call, both phases
    grace: float  # seconds to wait for the last pops after a phase's last write


async def _login(base_url: str, agents: int) -> list[str]:
    return await tokens(base_url, [f"agent{n}" for n in range(1, agents + 1)])


async def _agent(n: int, ws: Any, book: Book) -> None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        async for text in ws:
            book.frame(n, str(text), time.monotonic())


async def _connect(ws_url: str, tokens: list[str], book: Book) -> tuple[list[Any], list[Any]]:
    """One websocket per agent, past its hello and `ready`; then a reader task each."""
    from websockets.asyncio.client import connect

    limit = asyncio.Semaphore(32)

    async def one(token: str) -> Any:
        async with limit:
            ws = await connect(
                f"{ws_url}?token={token}", proxy=None, ping_interval=None, open_timeout=30
            )
            await ws.send(json.dumps({"type": "hello", "last_seq": None}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message.get("type") == "ready":
                    return ws

    sockets = list(await asyncio.gather(*(one(t) for t in tokens)))
    readers = [asyncio.create_task(_agent(n, ws, book)) for n, ws in enumerate(sockets, start=1)]
    return sockets, readers


async def _paced(
    replay: AmiReplay, calls: list[list[bytes]], template: Template, spec: LoadSpec, book: Book
) -> tuple[float, float]:
    """Start call i at i/rate s, each block at its recorded offset / speed; stamp every
    AgentCalled just before its bytes are handed to the socket."""
    start = time.monotonic() + 0.2
    items = sorted(
        (
            start + i / spec.rate + (offset / spec.speed if spec.speed > 0 else 0.0),
            i,
            k,
        )
        for i in range(len(calls))
        for k, offset in enumerate(template.offsets)
    )
    replay.write(_marker("latency-start"))
    first = time.monotonic()
    pos = 0
    while pos < len(items):
        now = time.monotonic()
        due = items[pos][0]
        if due > now:
            await asyncio.sleep(due - now)
            continue
        batch: list[bytes] = []
        called: list[int] = []
        while pos < len(items) and items[pos][0] <= now:
            _, i, k = items[pos]
            batch.append(calls[i][k])
            if k == template.called:
                called.append(i)
            pos += 1
        stamp = time.monotonic()
        replay.write(b"".join(batch))
        for i in called:
            book.written[i] = stamp
        if replay.buffered() > 1 << 20:
            await replay.drain()
    last = time.monotonic()
    replay.write(_marker("latency-end"))
    return first, last


async def _flat_out(
    replay: AmiReplay, calls: list[list[bytes]], template: Template, offset: int, book: Book
) -> tuple[float, float]:
    """Every call's events at once, back to back, as fast as the socket drains."""
    replay.write(_marker("capacity-start"))
    first = time.monotonic()
    for n, blocks in enumerate(calls):
        head = b"".join(blocks[: template.called])
        replay.write(head)
        book.written[offset + n] = time.monotonic()
        replay.write(b"".join(blocks[template.called :]))
        if replay.buffered() > 1 << 20:
            await replay.drain()
    last = time.monotonic()
    replay.write(_marker("capacity-end"))
    return first, last


def run_load(conn: Connection, spec: LoadSpec, core: int) -> None:
    _pin(core)
    asyncio.run(_load(conn, spec))


async def _load(conn: Connection, spec: LoadSpec) -> None:
    template = Template.load(RECORDINGS / SCENARIO / "ami.log")
    total = spec.calls + spec.capacity_calls
    rendered = [
        render(template, i, agent_of(i, spec.agents), spec.references[i]) for i in range(total)
    ]
    book = Book(spec.agents, total)
    replay = AmiReplay()
    conn.send(await replay.start())
    base_url = await _recv(conn, 600)
    lags: array.array[float] = array.array("d")
    probe: asyncio.Task[None] | None = None
    sockets: list[Any] = []
    readers: list[Any] = []
    try:
        await asyncio.wait_for(replay.ready.wait(), 60)
        tokens = await _login(base_url, spec.agents)
        sockets, readers = await _connect(
            base_url.replace("http://", "ws://") + "/ws", tokens, book
        )
        connected = time.monotonic()
        probe = asyncio.create_task(_lag_probe(lags))
        call_length = template.offsets[-1] / spec.speed if spec.speed > 0 else 0.0
        latency = range(spec.calls)
        first, last = await _paced(replay, rendered[: spec.calls], template, spec, book)
        await book.wait(latency, time.monotonic() + call_length + spec.grace)
        phases = {"latency": book.phase(latency, first, last)}
        capacity = range(spec.calls, total)
        if spec.capacity_calls:
            await asyncio.sleep(0.5)  # the server's follow-up writes (audit, assign) settle
            first, last = await _flat_out(
                replay, rendered[spec.calls :], template, spec.calls, book
            )
            await book.wait(capacity, time.monotonic() + spec.grace + spec.capacity_calls / 20)
            phases["capacity"] = book.phase(capacity, first, last)
        probe.cancel()
        for figures in phases.values():
            figures["since_connect"] = figures["first_write"] - connected
            figures["load_lags_ms"] = _lags_between(
                lags, figures["first_write"], figures["last_end"] if figures["ends"] else 1e18
            )
        conn.send(
            {
                "phases": phases,
                "wrong_agent": book.wrong_agent,
                "duplicates": book.duplicates,
                "frames": book.frames,
                "ami_sessions": replay.sessions,
                "ami_lost": replay.lost,
                "calls": {"written": book.written, "popped": book.popped, "ended": book.ended},
                "ami_actions": replay.actions,
                "events_per_call": len(template.blocks),
                "call_seconds": template.offsets[-1],
            }
        )
        await _recv(conn, 120)  # "finish": the server has taken its snapshot
    finally:
        await close_load(probe, readers, sockets, replay)


# --- the server process: Guichet as `guichet serve` wires it ---------------------------------


@dataclass(frozen=True)
class ServerSpec:
    tmp: str
    ami_port: int
    agents: int
    references: tuple[str, ...]
    cases: str  # "created" | "pending"
    profile: str | None
    core: int  # the one it is pinned to
    synchronous: str  # SQLite's PRAGMA synchronous: "normal" (Guichet's) or "full"


def _sqlite_synchronous(engine: Any, level: str) -> None:
    """`PRAGMA synchronous` on every new connection of `engine` (a what-if: Guichet sets
    NORMAL; FULL syncs the WAL at every commit)."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA synchronous={level.upper()}")
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)


def run_server(conn: Connection, spec: ServerSpec, core: int) -> None:
    _pin(core)
    asyncio.run(_server(conn, spec))


async def _seed(guichet: Any, spec: ServerSpec) -> None:
    """Agents, one citizen per call, each call's case (unless pending), one article."""
    from argon2 import PasswordHasher
    from sqlalchemy import insert, select
    from sqlmodel import SQLModel, col

    from crm_bridge.case_facts import CallFacts
    from crm_bridge.knowledge import KnowledgeBase
    from crm_bridge.models import Citizen

    guichet.users.hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    for n in range(1, spec.agents + 1):
        await guichet.users.create_user(
            f"agent{n}", PASSWORD, interface=f"PJSIP/agent{n}", ui_language="nl"
        )
    await KnowledgeBase(guichet.store.engine).upsert(
        "household-certificate",
        "population",
        titles={"nl": "Attest gezinssamenstelling", "fr": "Composition de ménage"},
        bodies={"nl": "Downloaden via IRISbox.", "fr": "Téléchargeable via IRISbox."},
    )
    if spec.cases != "created":
        return
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "national_number": f"{90_000_000_000 + n:011d}",
            "first_name": "Bench",
            "last_name": f"Citizen {n}",
            "preferred_language": "nl",
            "street": f"Rue {n}",
            "postal_code": "1000",
            "city": "Bruxelles",
            "phone": f"+3247{n:07d}",
            "created_at": at,
            "updated_at": at,
        }
        for n in range(len(spec.references))
    ]
    engine = guichet.store.engine
    async with engine.begin() as db:
        await db.execute(insert(SQLModel.metadata.tables["citizen"]), rows)
        ids = [
            row[0] for row in await db.execute(select(col(Citizen.id)).order_by(col(Citizen.id)))
        ]
    for n, reference in enumerate(spec.references):
        await guichet.cases.open_case_for_call(
            CallFacts(
                call_id=call_id(n),
                caller="0470123456",
                lang="nl",
                request_type="population",
                citizen_id=ids[n],
                queue="population-nl",
                reference=reference,
            )
        )


async def _server(conn: Connection, spec: ServerSpec) -> None:
    async with serve_guichet(conn, Path(spec.tmp), spec.ami_port, SECRET_KEY) as served:
        guichet = served.guichet
        if spec.synchronous != "normal":  # an experiment: Guichet itself sets NORMAL
            _sqlite_synchronous(guichet.store.engine, spec.synchronous)
            await guichet.store.engine.dispose()  # pooled connections reopen with it
        markers: dict[str, dict[str, float]] = {}
        profiler = cProfile.Profile() if spec.profile else None

        def on_marker(message: Any) -> None:
            assert guichet.ami is not None
            phase = message.text("Phase")
            busy, stolen = _core_times(spec.core)
            markers[phase] = {
                "t": time.monotonic(),
                "seen": guichet.ami.events_seen,
                "parsed": guichet.ami.events_parsed,
                "cpu": time.process_time(),
                "core_busy": busy,
                "core_stolen": stolen,
                "run_delay": _run_delay(),
            }
            if profiler is not None and phase == "capacity-start":
                profiler.enable()

        def snapshot() -> dict[str, Any]:
            cpu = time.process_time()
            busy, stolen = _core_times(spec.core)
            if profiler is not None and spec.profile:
                profiler.disable()
                profiler.dump_stats(spec.profile)
            pop_sub = guichet.pop._sub  # private: how many bus events the pop lost
            return {
                "markers": markers,
                "cpu": cpu,
                "core_busy": busy,
                "core_stolen": stolen,
                "t": time.monotonic(),
                "lags": served.lags.tolist(),
                "gc": served.gc.tolist(),
                "cpu_trace": served.cpu_trace.tolist(),
                "pushed": guichet.pop.pushed,
                "slow_cut": guichet.hub.slow_consumers_cut,
                "bus_dropped": pop_sub.dropped if pop_sub is not None else 0,
                "ami_connections": guichet.ami.connections,
            }

        await _seed(guichet, spec)
        guichet.ami.subscribe(on_marker, [MARKER])
        conn.send(await served.url())
        await served.commands(conn, snapshot)


# --- one round, and the report ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    agents: int
    calls: int
    rate: float
    speed: float
    capacity_calls: int
    cases: str
    repeat: int
    profile: str | None
    tmp_dir: str | None
    dump: str | None
    synchronous: str


@dataclass
class Round:
    load: dict[str, Any]
    server: dict[str, Any]
    end: dict[str, Any]

    def phase(self, name: str) -> dict[str, Any] | None:
        phases: dict[str, dict[str, Any]] = self.load["phases"]
        return phases.get(name)

    def events(self, name: str) -> tuple[int, int, float, float]:
        """(routed, parsed, wall seconds, CPU seconds) between the phase's markers."""
        m = self.server["markers"]
        start, end = m.get(f"{name}-start"), m.get(f"{name}-end")
        if start is None or end is None:
            return 0, 0, float("nan"), float("nan")
        routed = int(end["seen"] - start["seen"]) - 1  # the end marker itself
        parsed = int(end["parsed"] - start["parsed"]) - 1
        return routed, parsed, end["t"] - start["t"], end["cpu"] - start["cpu"]


def run_round(ctx: SpawnContext, opts: Options, tmp: Path, cores: list[int]) -> Round:
    from crm_bridge.references import new_reference

    total = opts.calls + opts.capacity_calls
    references = tuple(new_reference() for _ in range(total))
    server_core, load_core = cores[0], cores[-1]
    grace = 30.0
    load_spec = LoadSpec(
        opts.agents, opts.calls, opts.rate, opts.speed, opts.capacity_calls, references, grace
    )
    call_length = 18.0 / opts.speed if opts.speed > 0 else 0.0
    budget = 300 + opts.calls / opts.rate + call_length + 2 * grace + opts.capacity_calls / 10

    def server_spec(ami_port: int) -> ServerSpec:
        return ServerSpec(
            str(tmp),
            ami_port,
            opts.agents,
            references,
            opts.cases,
            opts.profile,
            server_core,
            opts.synchronous,
        )

    return Round(
        *run_processes(
            ctx,
            (run_load, load_spec, load_core),
            (run_server, server_spec, server_core),
            600 + total / 20,
            budget,
        )
    )


def _slowest(phases: list[dict[str, Any]]) -> None:
    """Where the worst pops of each round fell: seconds into the phase, and since the
    websockets opened (they re-check their session every minute)."""
    for n, p in enumerate(phases, start=1):
        worst = ", ".join(
            f"{ms:,.0f} ms at +{t:.1f} s ({t + p['since_connect']:.0f} s after connect)"
            for ms, t, _ in p["slowest"]
        )
        print(f"    round {n} slowest: {worst}")


def _rates(rounds: list[Round], name: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "routed",
            "parsed",
            "read_rate",
            "sustained",
            "cpu_rate",
            "read_cpu_rate",
            "cpu_share",
            "others",
            "stolen",
            "waited",
        )
    }
    for r in rounds:
        phase = r.phase(name)
        routed, parsed, wall, cpu = r.events(name)
        out["routed"].append(routed)
        out["parsed"].append(parsed)
        out["read_rate"].append(routed / wall if wall > 0 else float("nan"))
        if phase is None:
            continue
        span = phase["last_end"] - phase["first_write"]
        out["sustained"].append(routed / span if span > 0 else float("nan"))
        start = r.server["markers"].get(f"{name}-start")
        if start is not None:
            busy = cpu
            if name == "capacity":  # until the last call_ended reached its agent
                busy = _value_at(r.server["cpu_trace"], phase["last_end"]) - start["cpu"]
            out["cpu_rate"].append(routed / busy if busy > 0 else float("nan"))
            out["read_cpu_rate"].append(routed / cpu if cpu > 0 else float("nan"))
            out["cpu_share"].append(100 * cpu / wall if wall > 0 else float("nan"))
            end = r.server["markers"].get(f"{name}-end")
            if end is not None and wall >= 1.0:  # /proc/stat counts in 10 ms ticks
                busy_core = end["core_busy"] - start["core_busy"]
                others = 100 * (busy_core - cpu) / wall
                out["others"].append(min(100.0, max(0.0, others)))
                out["stolen"].append(100 * (end["core_stolen"] - start["core_stolen"]) / wall)
                out["waited"].append(100 * (end["run_delay"] - start["run_delay"]) / wall)
    return out


def _contention(rates: dict[str, list[float]]) -> None:
    _row(
        "others on the server's core (stolen)",
        _cell(rates["others"], ".0f") + " % (" + _cell(rates["stolen"], ".0f") + " %)",
        "other processes, hypervisor",
    )
    _row(
        "server threads runnable, waiting for the core",
        _cell(rates["waited"], ".0f") + " %",
        "thread-seconds per second",
    )


def report(rounds: list[Round], opts: Options) -> tuple[bool, bool | None, bool | None]:
    first = rounds[0].load
    per_call = first["events_per_call"]
    print(
        f"SCREEN-POP: {opts.agents} agents (one websocket each, bearer token), "
        f"{SCENARIO} synthesised ({per_call} AMI events/call over "
        f"{first['call_seconds']:.1f} s recorded), cases {opts.cases}, SQLite synchronous="
        f"{opts.synchronous}; Guichet on one core, "
        f"AMI replay + websocket clients on the other; {len(rounds)} round(s): median (min-max)"
    )

    lat = [r.phase("latency") or {} for r in rounds]
    p99s = [_percentile(p["latencies_ms"], 0.99) for p in lat]
    pace = "recorded pace" if opts.speed == 1 else f"speed x{opts.speed:g}"
    print(f"\nLATENCY PHASE: {opts.calls} calls, {opts.rate:g} new calls/s, {pace}")
    _row("pops received / expected", _cell([p["pops"] for p in lat], ".0f") + f" / {opts.calls}")
    _row("call_ended received", _cell([p["ends"] for p in lat], ".0f"))
    _row(
        "AgentCalled written -> screen_pop read p50",
        _cell([_percentile(p["latencies_ms"], 0.5) for p in lat], ".2f") + " ms",
    )
    _row(
        "  p99",
        _cell(p99s, ".2f") + " ms",
        f"target <= {TARGET_P99_MS:g} ms: {_verdict(statistics.median(p99s) <= TARGET_P99_MS)}",
    )
    _row("  max", _cell([_percentile(p["latencies_ms"], 1.0) for p in lat], ".2f") + " ms")
    _slowest(lat)
    rates = _rates(rounds, "latency")
    _row(
        "AMI events routed (parsed) by the server",
        f"{_cell(rates['routed'], '.0f')} ({_cell(rates['parsed'], '.0f')})",
    )
    _row(
        "  events/s, phase average",
        _cell(rates["read_rate"], ",.0f"),
        f"steady: {opts.rate * per_call:,.0f} offered",
    )
    _row("server CPU (its core)", _cell(rates["cpu_share"], ".0f") + " %")
    _contention(rates)
    _row("  events per server CPU-second", _cell(rates["cpu_rate"], ",.0f"), "fixed costs included")
    _row(
        "server loop lag p99",
        _cell(
            [
                _percentile(_lags_between(r.server["lags"], p["first_write"], p["last_end"]), 0.99)
                for r, p in zip(rounds, lat, strict=True)
            ],
            ".2f",
        )
        + " ms",
    )
    gcs = [
        _lags_between(r.server["gc"], p["first_write"], p["last_end"])
        for r, p in zip(rounds, lat, strict=True)
    ]
    _row(
        "server full GC pauses: count / max",
        _cell([len(g) for g in gcs], ".0f")
        + " / "
        + _cell([max(g, default=0.0) for g in gcs], ".1f")
        + " ms",
    )
    _row(
        "load loop lag p99",
        _cell([_percentile(p["load_lags_ms"], 0.99) for p in lat], ".2f") + " ms",
        "inside every latency figure",
    )
    p99_ok = statistics.median(p99s) <= TARGET_P99_MS

    read_ok: bool | None = None
    pipeline_ok: bool | None = None
    if opts.capacity_calls:
        cap = [r.phase("capacity") or {} for r in rounds]
        rates = _rates(rounds, "capacity")
        print(f"\nCAPACITY PHASE: {opts.capacity_calls} calls back to back, no pacing")
        _row(
            "pops received / expected",
            _cell([p["pops"] for p in cap], ".0f") + f" / {opts.capacity_calls}",
        )
        _row("call_ended received", _cell([p["ends"] for p in cap], ".0f"))
        _row(
            "AMI events routed (parsed)",
            f"{_cell(rates['routed'], '.0f')} ({_cell(rates['parsed'], '.0f')})",
        )
        read_ok = statistics.median(rates["read_cpu_rate"]) >= TARGET_EVENTS
        pipeline_ok = statistics.median(rates["cpu_rate"]) >= TARGET_EVENTS
        print("  AMI read path (parse, route, CTI state), between the markers:")
        _row(
            "  events per server CPU-second",
            _cell(rates["read_cpu_rate"], ",.0f"),
            f"target >= {TARGET_EVENTS:,}: {_verdict(read_ok)}",
        )
        _row("  events/s, wall clock", _cell(rates["read_rate"], ",.0f"))
        _row("  server CPU share", _cell(rates["cpu_share"], ".0f") + " %")
        _contention(rates)
        print("  whole pipeline (pops and call ends delivered to the agents):")
        _row(
            "  events per server CPU-second",
            _cell(rates["cpu_rate"], ",.0f"),
            f"target >= {TARGET_EVENTS:,}: {_verdict(pipeline_ok)}",
        )
        _row("  events/s, wall clock (first byte -> last end)", _cell(rates["sustained"], ",.0f"))
        _row(
            "  pop latency under saturation p50 / p99",
            _cell([_percentile(p["latencies_ms"], 0.5) for p in cap], ",.0f")
            + " / "
            + _cell([_percentile(p["latencies_ms"], 0.99) for p in cap], ",.0f")
            + " ms",
        )
    print()
    _row(
        "bus events the pop lost (dropped)", _cell([r.server["bus_dropped"] for r in rounds], ".0f")
    )
    _row("websockets cut as slow consumers", _cell([r.server["slow_cut"] for r in rounds], ".0f"))
    _row(
        "pops on a wrong agent / duplicates",
        f"{sum(r.load['wrong_agent'] for r in rounds)} / {sum(r.load['duplicates'] for r in rounds)}",
    )
    health([r.load for r in rounds], [r.end for r in rounds])
    return p99_ok, read_ok, pipeline_ok


def _options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--agents", type=int, default=500, help="console users, one websocket each")
    add("--rate", type=float, default=20.0, help="new calls per second (latency phase)")
    add("--duration", type=float, default=60.0, help="seconds of new calls (latency phase)")
    add("--calls", type=int, default=None, help="latency-phase calls (default: rate x duration)")
    add("--speed", type=float, default=1.0, help="1: recorded pace within a call; 0: at once")
    add("--capacity-calls", type=int, default=1000, help="calls back to back (0: no phase)")
    add("--cases", choices=("created", "pending"), default="created")
    add("--repeat", type=int, default=3, help="rounds, each with fresh processes")
    add("--profile", default=None, help="write the server's cProfile of the capacity phase")
    add("--tmp-dir", default=None, help="where the database and spool go (default: system temp)")
    add("--dump", default=None, help="write every call's timestamps (JSON), per round")
    add(
        "--sqlite-synchronous",
        choices=("full", "normal"),
        default="normal",
        help="what-if: SQLite's PRAGMA synchronous (Guichet sets normal)",
    )
    args = parser.parse_args(argv)
    calls = args.calls if args.calls is not None else round(args.rate * args.duration)
    if args.agents < 1 or calls < 1 or args.rate <= 0 or args.speed < 0:
        parser.error("--agents, --calls and --rate must be positive, --speed >= 0")
    return Options(
        agents=args.agents,
        calls=calls,
        rate=args.rate,
        speed=args.speed,
        capacity_calls=max(0, args.capacity_calls),
        cases=args.cases,
        repeat=max(1, args.repeat),
        profile=args.profile,
        tmp_dir=args.tmp_dir,
        dump=args.dump,
        synchronous=args.sqlite_synchronous,
    )


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    cores = _cores()
    if len(cores) == 1:
        print("warning: one CPU core only; server and load share it", file=sys.stderr)
    ctx = mp.get_context("spawn")
    started = time.monotonic()

    def dump(n: int, last: Round) -> None:
        if opts.dump:
            with open(f"{opts.dump}.{n + 1}.json", "w", encoding="utf-8") as out:
                json.dump(
                    {
                        **last.load["calls"],
                        "server_lags": last.server["lags"],
                        "gc": last.server["gc"],
                    },
                    out,
                )

    rounds = run_rounds(
        opts.repeat,
        "guichet-screenpop-bench-",
        opts.tmp_dir,
        lambda tmp: run_round(ctx, opts, tmp, cores),
        dump,
    )
    p99_ok, read_ok, pipeline_ok = report(rounds, opts)
    print(f"\nTARGETS (medians; {time.monotonic() - started:.0f} s in all)")
    print(f"  pop p99 <= {TARGET_P99_MS:g} ms at {opts.rate:g} calls/s: {_verdict(p99_ok)}")
    for what, ok in (
        ("AMI events parsed and routed (read path)", read_ok),
        ("the whole pipeline, pops delivered", pipeline_ok),
    ):
        verdict = "not measured" if ok is None else _verdict(ok)
        print(f"  >= {TARGET_EVENTS:,} events/s on one core, {what}: {verdict}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
