"""FastAGI load benchmark: Guichet's asyncio server against a thread-per-call baseline.

Two runs answer the two questions the targets ask:

* **latency**: `--calls` (1,000) concurrent calls paced like Asterisk: every media command
  (STREAM FILE, GET DATA, WAIT FOR DIGIT) is answered after a random 0.5-1.5 s, as a prompt
  plays or a caller types; SET VARIABLE is answered at once, as Asterisk does. The figure is
  the server time per AGI command (our answer written -> the server's next command read),
  p50/p99 over a steady window in which every call is up. Target: p99 <= 5 ms.
* **capacity**: the same number of concurrent calls in a closed loop with every answer sent
  at once, so the server always has work: the calls/s it completes in a steady window is the
  most it sustains on its one core. Target: Guichet >= 3x the baseline.

Servers, each in its own process pinned to one core: Guichet wired as `guichet serve` does
(FlowRegistry, BufferedCrm over SqlCrm on a temporary SQLite seeded with `--citizens`
citizens, logging at INFO to a file), Guichet with a CRM that answers from memory and stores
nothing (the engine and the wire alone), and the baseline: a `socketserver.ThreadingTCPServer`,
a thread and a blocking socket per call, sending the same command sequence with no database.

Every call follows the sample flow's happy path (`2`, `1`, `1`, `85073003328#`, citizen
found, queued). The command sequence is recorded once through Guichet with the test suite's
Asterisk stand-in, then the load generator replays it with pre-encoded answers from one
asyncio process per `--generators` (pinned to the other core): cheap enough not to be the
bottleneck, and it still checks every command byte for byte, so a server that strays from
the flow counts failed calls. Its CPU use and event-loop lag are printed: a saturated
generator would make the server look slower than it is. Capacity runs repeat `--repeat`
times, interleaved, and print the median with the min-max spread: the machine is shared, and
the spread says how far to trust a figure. Loopback only; every run stops by itself.

    .venv/bin/python bench/agi_load.py [--calls 1000] [--repeat 3] [--latency-window 20]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import random
import resource
import shutil
import socketserver
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agi_peer import HANGUP, MEDIA, Press, ScriptedPeer, asterisk_env, verb_of  # noqa: E402

HOST = "127.0.0.1"
HAPPY_NN = "85073003328"
HAPPY_PATH = [Press("2"), Press("1"), Press("1"), Press(HAPPY_NN + "#")]
OPEN_HOURS = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Brussels"))  # a Monday
PLACEHOLDER = b"{uniqueid}"
CALIBRATION_ID = "bench.calibration"
TARGET_CONCURRENT, TARGET_P99_MS, TARGET_RATIO = 1000, 5.0, 3.0
LAG_TICK = 0.01  # seconds between the generator's event-loop lag probes
SATURATED = 0.9  # a generator busier than this share of its core may hold the server back


# --- process plumbing -----------------------------------------------------------------------


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def _percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


# --- what every call does ---------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """One recorded call: the environment and, per command, its bytes and our answer's.

    `PLACEHOLDER` stands for the call's uniqueid wherever it appears."""

    env: bytes
    commands: tuple[bytes, ...]
    answers: tuple[bytes, ...]
    media: tuple[bool, ...]  # Asterisk plays or listens before answering this command

    @property
    def texts(self) -> list[str]:
        return [
            c.decode().rstrip("\n").replace(PLACEHOLDER.decode(), "{uniqueid}")
            for c in self.commands
        ]


def _script_of(peer: ScriptedPeer) -> Script:
    commands: list[bytes] = []
    answers: list[list[bytes]] = []
    for direction, line in peer.wire:
        if direction == "<<":
            commands.append(line)
            answers.append([])
        elif line != HANGUP:  # a HANGUP line is Asterisk's, not an answer: none on this path
            answers[-1].append(line)
    uid = CALIBRATION_ID.encode()
    return Script(
        env=asterisk_env(uniqueid=PLACEHOLDER.decode()),
        commands=tuple(c.replace(uid, PLACEHOLDER) for c in commands),
        answers=tuple(b"".join(a).replace(uid, PLACEHOLDER) for a in answers),
        media=tuple(verb_of(c.decode()) in MEDIA for c in commands),
    )


# --- the servers ------------------------------------------------------------------------------


def _open_clock() -> datetime:
    return OPEN_HOURS


class MemoryCrm:
    """A CrmPort that finds the happy path's citizen in memory and stores nothing: the
    engine and the wire alone, with the same command sequence as the SQLite run."""

    def __init__(self) -> None:
        self.saved = 0

    async def find_citizen_by_national_number(self, number: str) -> Any:
        from crm_bridge.ports import CitizenSummary

        return (
            CitizenSummary(id=1, first_name="Bench", last_name="Citizen")
            if (number == HAPPY_NN)
            else None
        )

    async def find_citizen_by_phone(self, phone: str) -> None:
        return None

    async def record_callback(self, request: object) -> None:
        return None

    async def save_journey(self, journey: object) -> None:
        self.saved += 1


async def _seed(db_url: str, citizens: int) -> None:
    """The citizen directory the lookups search: the happy path's citizen first (id 1)."""
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    from crm_bridge.store import SqlCrm

    store = await SqlCrm.connect(db_url)
    at = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
    rows = [
        {
            "national_number": HAPPY_NN if n == 0 else f"{n:011d}",
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
        for n in range(max(1, citizens))
    ]
    async with store.engine.begin() as db:
        await db.execute(insert(SQLModel.metadata.tables["citizen"]), rows)
    await store.close()


@contextlib.asynccontextmanager
async def _guichet(flows_dir: Path, db_url: str, log_path: str | None) -> Any:
    """Guichet as `guichet serve` wires it (`db_url` empty: the in-memory CRM)."""
    from crm_bridge.buffered import BufferedCrm
    from crm_bridge.store import SqlCrm
    from guichet.logging_setup import setup_logging
    from ivr.fastagi import FastAgiServer
    from ivr.registry import FlowRegistry

    # a blocking open, once, before any call: as `guichet serve` opens its log stream
    log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115, ASYNC230
    if log_file:
        setup_logging("INFO", stream=log_file)
    registry = FlowRegistry(flows_dir, interval=0)
    await registry.start()
    store = await SqlCrm.connect(db_url) if db_url else None
    crm: Any = BufferedCrm(store) if store else MemoryCrm()
    if store:
        await crm.start()
    server = FastAgiServer(
        registry, crm, host=HOST, port=0, clock=_open_clock, sounds_prefix="guichet"
    )
    await server.start()
    try:
        yield server, crm, store
    finally:
        await server.stop(grace=5.0)
        await registry.stop()
        if store:
            await crm.stop(timeout=120)
            await store.close()
        if log_file:
            logging.getLogger().handlers.clear()
            log_file.close()


def serve_guichet(conn: Connection, flows_dir: str, db_url: str, log_path: str, core: int) -> None:
    _pin(core)
    asyncio.run(_serve_guichet(conn, Path(flows_dir), db_url, log_path))


async def _serve_guichet(conn: Connection, flows_dir: Path, db_url: str, log_path: str) -> None:
    async with _guichet(flows_dir, db_url, log_path) as (server, crm, store):
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.active_calls)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        cpu0 = await _control(conn, server.port)
        cpu_load = time.process_time() - cpu0
        watcher.cancel()
        backlog = crm.pending if store else 0
        await server.stop(grace=5.0)
        if store:
            await crm.flush()  # the writes of the calls served are part of their cost
        cpu = time.process_time() - cpu0
        saved = await _count_journeys(store) if store else crm.saved
        rejected = len(crm.rejected) if store else 0
    conn.send(
        {
            "cpu": cpu,
            "cpu_load": cpu_load,
            "peak": peak,
            "journeys": saved,
            "backlog": backlog,
            "rejected": rejected,
        }
    )


async def _count_journeys(store: Any) -> int:
    from sqlalchemy import func, select

    from crm_bridge.models import CallJourneyRecord

    async with store.engine.connect() as db:
        return int((await db.execute(select(func.count()).select_from(CallJourneyRecord))).scalar())


async def _control(conn: Connection, port: int) -> float:
    """Report the port, wait for `start` then `stop`; return the CPU clock at `start`."""
    loop = asyncio.get_running_loop()
    conn.send(port)
    ready = asyncio.Event()
    loop.add_reader(conn.fileno(), ready.set)
    cpu0 = time.process_time()
    try:
        while True:
            await ready.wait()
            ready.clear()
            while conn.poll():
                message = conn.recv()
                if message == "start":
                    cpu0 = time.process_time()
                elif message == "stop":
                    return cpu0
    finally:
        loop.remove_reader(conn.fileno())


def serve_baseline(conn: Connection, commands: list[str], core: int) -> None:
    """The baseline: socketserver.ThreadingTCPServer, a thread and blocking socket per call,
    sending the same command sequence and reading one answer per command."""
    _pin(core)
    active = peak = 0
    guard = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            nonlocal active, peak
            with guard:
                active += 1
                peak = max(peak, active)
            try:
                uniqueid = ""
                for line in self.rfile:
                    if line in (b"\n", b"\r\n"):
                        break
                    if line.startswith(b"agi_uniqueid: "):
                        uniqueid = line[14:].strip().decode()
                for command in commands:
                    self.wfile.write(command.replace("{uniqueid}", uniqueid).encode() + b"\n")
                    answer = self.rfile.readline()
                    while answer == HANGUP:
                        answer = self.rfile.readline()
                    if not answer:
                        return
            except ConnectionError:
                return  # a call cut at the end of a run
            finally:
                with guard:
                    active -= 1

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 4096

    with Server((HOST, 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        conn.send(server.server_address[1])
        cpu0 = time.process_time()
        while (message := conn.recv()) != "stop":
            if message == "start":
                cpu0 = time.process_time()
        cpu = time.process_time() - cpu0
        server.shutdown()
    conn.send(
        {"cpu": cpu, "cpu_load": cpu, "peak": peak, "journeys": None, "backlog": 0, "rejected": 0}
    )


# --- the load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    kind: str  # "latency" | "capacity"
    calls: int  # concurrent calls, held in a closed loop (a call that ends is replaced)
    ramp: float  # seconds over which the calls start
    window: float  # seconds measured once the ramp is over; then every call left is cut
    media_min: float  # answer delay of a media command, seconds
    media_max: float
    seed: int


class _Load:
    """One generator process: `spec.calls` slots, each running calls back to back."""

    def __init__(self, script: Script, port: int, spec: LoadSpec, start_at: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.script = script
        self.port = port
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.steps = len(script.commands)
        self.t_start = start_at
        self.t_window = start_at + spec.ramp
        self.t_end = self.t_window + spec.window
        self.stopping = False
        self.live: set[_Session] = set()
        self.serial = 0
        self.completed = self.completed_in_window = self.failed = self.cut = 0
        self.active = self.peak = 0
        self.min_in_window = spec.calls
        self.latencies = array.array("d")
        self.lags = array.array("d")
        self.cpu_window = 0.0
        self.slots_done = asyncio.Event()
        self.slots_left = spec.calls

    def delay(self, step: int) -> float:
        if not self.script.media[step] or self.spec.media_max <= 0:
            return 0.0
        return self.rng.uniform(self.spec.media_min, self.spec.media_max)

    async def run(self) -> dict[str, Any]:
        await self._warm_up()
        loop = self.loop
        lag_task = asyncio.create_task(self._probe_lag())
        for slot in range(self.spec.calls):
            loop.call_at(self.t_start + self.spec.ramp * slot / self.spec.calls, self._start)
        await asyncio.sleep(max(0.0, self.t_window - loop.time()))
        cpu0 = time.process_time()
        self.min_in_window = self.active
        await asyncio.sleep(max(0.0, self.t_end - loop.time()))
        self.cpu_window = time.process_time() - cpu0
        self.stopping = True
        lag_task.cancel()
        for session in list(self.live):
            session.cut()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.slots_done.wait(), 30)
        return {
            "completed": self.completed,
            "completed_in_window": self.completed_in_window,
            "failed": self.failed,
            "cut": self.cut,
            "peak": self.peak,
            "min_in_window": self.min_in_window,
            "window": self.spec.window,
            "cpu": self.cpu_window,
            "latencies": self.latencies.tobytes(),
            "lags": self.lags.tobytes(),
        }

    async def _warm_up(self) -> None:
        """One call first, uncounted: first-call costs (imports, calendars) are not load."""
        done: asyncio.Future[bool] = self.loop.create_future()

        def warmed(session: _Session) -> None:
            if not done.done():
                done.set_result(session.step == self.steps and not session.failed)

        session = _Session(self, b"bench.warmup", warmed)
        await self.loop.create_connection(lambda: session, HOST, self.port)
        if not await asyncio.wait_for(done, 60):
            raise RuntimeError("the warm-up call failed: the server strays from the script")

    async def _probe_lag(self) -> None:
        loop = self.loop
        while True:
            due = loop.time() + LAG_TICK
            await asyncio.sleep(LAG_TICK)
            now = loop.time()
            if self.t_window <= now <= self.t_end:
                self.lags.append(now - due)
                self.min_in_window = min(self.min_in_window, self.active)

    def _start(self) -> None:
        if self.stopping:
            self._slot_done()
            return
        self.serial += 1
        uid = f"bench.{os.getpid()}.{self.serial}".encode()
        session = _Session(self, uid, self.ended)
        self.live.add(session)
        self.active += 1
        self.peak = max(self.peak, self.active)
        task = self.loop.create_task(self._connect(session))
        task.add_done_callback(lambda _: None)

    async def _connect(self, session: _Session) -> None:
        try:
            await self.loop.create_connection(lambda: session, HOST, self.port)
        except OSError:
            session.transport = None
            session.connection_lost(None)

    def ended(self, session: _Session) -> None:
        self.live.discard(session)
        self.active -= 1
        now = self.loop.time()
        if session.step == self.steps and not session.failed:
            self.completed += 1
            if self.t_window <= now <= self.t_end:
                self.completed_in_window += 1
        elif self.stopping and not session.failed:
            self.cut += 1
        else:
            self.failed += 1
        if self.stopping:
            self._slot_done()
        else:
            self._start()

    def _slot_done(self) -> None:
        self.slots_left -= 1
        if self.slots_left <= 0:
            self.slots_done.set()


class _Session(asyncio.Protocol):
    """One call as Asterisk makes it: the environment, then each expected command answered
    with its recorded answer (after a delay for media commands). Any other byte fails it."""

    def __init__(self, load: _Load, uid: bytes, on_end: Callable[[_Session], None]) -> None:
        self.load = load
        self.uid = uid
        self.on_end = on_end
        self.step = 0
        self.failed = False
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.last_write = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.load.script.env.replace(PLACEHOLDER, self.uid))
        self.last_write = self.load.loop.time()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while (end := buffer.find(b"\n")) >= 0:
            self._command(buffer[: end + 1])
            buffer = buffer[end + 1 :]
        self.buffer = buffer

    def _command(self, line: bytes) -> None:
        load = self.load
        now = load.loop.time()
        if load.t_window <= self.last_write and now <= load.t_end:
            load.latencies.append(now - self.last_write)
        step = self.step
        script = load.script
        if (
            self.failed
            or self.timer is not None
            or step >= load.steps
            or line != script.commands[step].replace(PLACEHOLDER, self.uid)
        ):
            self._fail()
            return
        delay = load.delay(step)
        if delay > 0:
            self.timer = load.loop.call_later(delay, self._answer)
        else:
            self._answer()

    def _answer(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(self.load.script.answers[self.step].replace(PLACEHOLDER, self.uid))
        self.last_write = self.load.loop.time()
        self.step += 1

    def _fail(self) -> None:
        self.failed = True
        if self.transport is not None:
            self.transport.abort()

    def cut(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the server closed: that ends the call (Asterisk never closes first)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.on_end(self)


def run_generator(
    conn: Connection, port: int, script: Script, spec: LoadSpec, start_at: float, core: int
) -> None:
    _pin(core)
    conn.send(asyncio.run(_generate(port, script, spec, start_at)))


async def _generate(port: int, script: Script, spec: LoadSpec, start_at: float) -> dict[str, Any]:
    # loop.time() is CLOCK_MONOTONIC: the same clock in every generator process
    return await _Load(script, port, spec, start_at).run()


# --- orchestration ------------------------------------------------------------------------------


@dataclass
class Run:
    """One server under one load: the generators' figures merged, and the server's own."""

    server_name: str
    spec: LoadSpec
    generators: list[dict[str, Any]]
    server: dict[str, Any]
    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for g in self.generators:
            self.latencies_ms.extend(x * 1000 for x in array.array("d", g["latencies"]))
            self.lags_ms.extend(x * 1000 for x in array.array("d", g["lags"]))
        self.latencies_ms.sort()
        self.lags_ms.sort()

    def total(self, key: str) -> int:
        return sum(int(g[key]) for g in self.generators)

    @property
    def rate(self) -> float:
        return self.total("completed_in_window") / self.spec.window

    @property
    def generator_cpu(self) -> float:
        """The busiest generator's share of its core during the window."""
        return max(float(g["cpu"]) / self.spec.window for g in self.generators)

    @property
    def server_cpu(self) -> float:
        return float(self.server["cpu_load"]) / (self.spec.ramp + self.spec.window)

    @property
    def cpu_per_call_ms(self) -> float:
        calls = self.total("completed") + self.total("cut")
        return 1000 * float(self.server["cpu"]) / calls if calls else float("nan")

    def p(self, share: float) -> float:
        return _percentile(self.latencies_ms, share)


def measure(
    ctx: mp.context.SpawnContext,
    name: str,
    target: Any,
    target_args: tuple[Any, ...],
    script: Script,
    spec: LoadSpec,
    server_core: int,
    generator_cores: list[int],
) -> Run:
    """Start a server process, run the generators against it, stop it."""
    ours, theirs = ctx.Pipe()
    server: Any = ctx.Process(target=target, args=(theirs, *target_args, server_core), daemon=True)
    server.start()
    generators: list[tuple[Any, Connection]] = []
    try:
        if not ours.poll(60):
            raise RuntimeError(f"{name}: the server did not start")
        port = ours.recv()
        ours.send("start")
        start_at = time.monotonic() + 1.5  # generators spawned and warmed up by then
        shares = [spec.calls // len(generator_cores)] * len(generator_cores)
        shares[0] += spec.calls - sum(shares)
        for n, (core, share) in enumerate(zip(generator_cores, shares, strict=True)):
            part = LoadSpec(
                spec.kind,
                share,
                spec.ramp,
                spec.window,
                spec.media_min,
                spec.media_max,
                spec.seed * 100 + n,
            )
            mine, its = ctx.Pipe()
            proc = ctx.Process(
                target=run_generator, args=(its, port, script, part, start_at, core), daemon=True
            )
            proc.start()
            generators.append((proc, mine))
        budget = 1.5 + spec.ramp + spec.window + 60
        figures = []
        for proc, mine in generators:
            if not mine.poll(budget):
                raise RuntimeError(f"{name}: the load generator did not finish in {budget:.0f} s")
            figures.append(mine.recv())
            proc.join(10)
        ours.send("stop")
        if not ours.poll(180):
            raise RuntimeError(f"{name}: the server did not report")
        return Run(name, spec, figures, ours.recv())
    finally:
        for proc, _ in generators:
            if proc.is_alive():
                proc.kill()
        server.join(10)
        if server.is_alive():
            server.kill()


async def _record_call(flows: Path, db_url: str) -> Script:
    async with _guichet(flows, db_url, None) as (server, _, _):
        peer = ScriptedPeer(HAPPY_PATH, uniqueid=CALIBRATION_ID)
        await peer.run(HOST, server.port, deadline=30)
    if not peer.closed_by_server or not peer.commands:
        raise RuntimeError("calibration call failed: is the sample flow in flows/?")
    return _script_of(peer)


def calibrate(flows: Path, db_url: str) -> Script:
    """Record the happy path once through Guichet with SQLite and once with the in-memory
    CRM: the two must send the very same commands, or the runs would not compare."""
    with_sql = asyncio.run(_record_call(flows, db_url))
    in_memory = asyncio.run(_record_call(flows, ""))
    if with_sql.commands != in_memory.commands:
        raise RuntimeError("the SQLite and in-memory CRMs lead the flow down different paths")
    return with_sql


SERVERS = ("sqlite", "memory", "baseline")
NAMES = {
    "sqlite": "guichet (SQLite)",
    "memory": "guichet (in-memory CRM)",
    "baseline": "baseline (threads)",
}


@dataclass(frozen=True)
class Options:
    calls: int
    latency_window: float
    media_min: float
    media_max: float
    latency_servers: list[str]
    capacity_window: float
    capacity_warmup: float
    capacity_calls: int
    capacity_media_min: float
    capacity_media_max: float
    capacity_servers: list[str]
    repeat: int
    generators: int
    seed: int
    citizens: int


def _cell(values: list[float], fmt: str) -> str:
    """The median, and the min-max spread when there are several runs."""
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _row(name: str, cells: list[str], note: str = "", width: int = 24) -> None:
    print("".join([f"{name:28}", *(f"{c:>{width}}" for c in cells), f"  {note}" if note else ""]))


def report_latency(runs: list[Run], script: Script, opts: Options) -> tuple[bool, bool]:
    spec = runs[0].spec
    media = sum(script.media)
    print(
        f"\nLATENCY RUN: {spec.calls} concurrent calls (closed loop, started over "
        f"{spec.ramp:.0f} s), media commands answered after "
        f"{opts.media_min * 1000:g}-{opts.media_max * 1000:g} ms, SET VARIABLE at once; "
        f"{len(script.commands)} commands/call ({media} media); window {spec.window:g} s"
    )
    _row("", [r.server_name for r in runs], "target")
    guichet = next((r for r in runs if r.server_name == NAMES["sqlite"]), runs[0])
    p99 = guichet.p(0.99)
    concurrent = min(guichet.total("min_in_window"), int(guichet.server["peak"]))
    _row(
        "calls completed / cut / failed",
        [f"{r.total('completed')} / {r.total('cut')} / {r.total('failed')}" for r in runs],
    )
    _row(
        "concurrent calls (min)",
        [str(r.total("min_in_window")) for r in runs],
        f">= {TARGET_CONCURRENT:,}: {_verdict(concurrent >= TARGET_CONCURRENT)}",
    )
    _row("commands measured", [str(len(r.latencies_ms)) for r in runs])
    _row("server time/command p50", [f"{r.p(0.5):.2f} ms" for r in runs])
    _row(
        "server time/command p99",
        [f"{r.p(0.99):.2f} ms" for r in runs],
        f"<= {TARGET_P99_MS:g} ms: {_verdict(p99 <= TARGET_P99_MS)}",
    )
    _row("server time/command p99.9", [f"{r.p(0.999):.2f} ms" for r in runs])
    _row("server time/command max", [f"{r.p(1.0):.2f} ms" for r in runs])
    _row("server CPU (its core)", [f"{100 * r.server_cpu:.0f} %" for r in runs])
    _row("generator CPU (its core)", [f"{100 * r.generator_cpu:.0f} %" for r in runs])
    _row(
        "generator loop lag p99",
        [f"{_percentile(r.lags_ms, 0.99):.2f} ms" for r in runs],
        "part of every latency figure",
    )
    _row("journeys stored", [_journeys(r) for r in runs])
    return concurrent >= TARGET_CONCURRENT, p99 <= TARGET_P99_MS


def _journeys(run: Run) -> str:
    saved = run.server["journeys"]
    if saved is None:
        return "-"
    return f"{saved} (backlog {run.server['backlog']}, refused {run.server['rejected']})"


def report_capacity(rounds: dict[str, list[Run]], script: Script, opts: Options) -> bool | None:
    first = next(iter(rounds.values()))[0]
    print(
        f"\nCAPACITY RUN: {first.spec.calls} concurrent calls in a closed loop, every answer "
        f"at once; {first.spec.window:g} s window after {first.spec.ramp:g} s of warm-up; "
        f"{opts.repeat} round(s): median (min-max)"
    )
    names = list(rounds)
    _row("", names, "", 30)
    _row("calls/s sustained", [_cell([r.rate for r in rounds[n]], ".0f") for n in names], "", 30)
    _row(
        "server CPU (its core)",
        [_cell([100 * r.server_cpu for r in rounds[n]], ".0f") + " %" for n in names],
        "",
        30,
    )
    _row(
        "server CPU per call",
        [_cell([r.cpu_per_call_ms for r in rounds[n]], ".2f") + " ms" for n in names],
        "writes flushed after the window included",
        30,
    )
    _row(
        "server time/command p50",
        [_cell([r.p(0.5) for r in rounds[n]], ".1f") + " ms" for n in names],
        "queueing at saturation",
        30,
    )
    _row(
        "generator CPU (its core)",
        [_cell([100 * r.generator_cpu for r in rounds[n]], ".0f") + " %" for n in names],
        f"> {100 * SATURATED:.0f} %: the generator may be the limit",
        30,
    )
    _row("calls failed", [str(sum(r.total("failed") for r in rounds[n])) for n in names], "", 30)
    _row(
        "journeys: backlog at end",
        [_cell([float(r.server["backlog"]) for r in rounds[n]], ".0f") for n in names],
        "",
        30,
    )
    base_name = NAMES["baseline"]
    if base_name not in rounds:
        return None
    verdict = None
    for name in names:
        if name == base_name:
            continue
        ratios = [
            a.rate / b.rate for a, b in zip(rounds[name], rounds[base_name], strict=True) if b.rate
        ]
        median_ratio = statistics.median(ratios) if ratios else float("nan")
        judged = name == NAMES["sqlite"]
        if judged:
            verdict = median_ratio >= TARGET_RATIO
        print(
            f"{name} / {base_name}: {_cell(ratios, '.2f')}x calls/s"
            + (f"   target >= {TARGET_RATIO:g}x: {_verdict(bool(verdict))}" if judged else "")
        )
    return verdict


def _servers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown server(s) {sorted(unknown)}: use {SERVERS}")
    return names


def _options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--calls", type=int, default=1000, help="concurrent calls (latency run)")
    add("--latency-window", type=float, default=20.0, help="seconds measured (0: no latency run)")
    add("--media-min-ms", type=float, default=500.0, help="media command answer delay, minimum")
    add("--media-max-ms", type=float, default=1500.0, help="media command answer delay, maximum")
    add("--latency-servers", type=_servers, default=["sqlite"], help="sqlite,memory,baseline")
    add("--capacity-window", type=float, default=6.0, help="seconds measured (0: no capacity run)")
    add("--capacity-warmup", type=float, default=2.0, help="seconds before each window")
    add("--capacity-calls", type=int, default=None, help="concurrent calls (default: --calls)")
    add("--capacity-media-min-ms", type=float, default=0.0, help="media delay (default: none)")
    add("--capacity-media-max-ms", type=float, default=0.0)
    add("--capacity-servers", type=_servers, default=list(SERVERS), help="sqlite,memory,baseline")
    add("--repeat", type=int, default=3, help="rounds of capacity runs, interleaved")
    add("--generators", type=int, default=1, help="load generator processes")
    add("--citizens", type=int, default=10_000, help="citizen directory size (SQLite)")
    add("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return Options(
        calls=args.calls,
        latency_window=args.latency_window,
        media_min=args.media_min_ms / 1000,
        media_max=args.media_max_ms / 1000,
        latency_servers=args.latency_servers,
        capacity_window=args.capacity_window,
        capacity_warmup=args.capacity_warmup,
        capacity_calls=args.capacity_calls or args.calls,
        capacity_media_min=args.capacity_media_min_ms / 1000,
        capacity_media_max=args.capacity_media_max_ms / 1000,
        capacity_servers=args.capacity_servers,
        repeat=max(1, args.repeat),
        generators=max(1, args.generators),
        seed=args.seed,
        citizens=args.citizens,
    )


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    ctx = mp.get_context("spawn")
    cores = _cores()
    server_core = cores[0]
    generator_cores = [
        cores[1 + n % (len(cores) - 1)] if len(cores) > 1 else cores[0]
        for n in range(opts.generators)
    ]
    if len(cores) == 1:
        print("warning: one CPU core only; server and load share it", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="guichet-agi-bench-"))
    started = time.monotonic()
    try:
        flows = tmp / "flows"
        shutil.copytree(ROOT / "flows", flows)
        template = tmp / "template.db"
        asyncio.run(_seed(f"sqlite+aiosqlite:///{template}", opts.citizens))
        shutil.copyfile(template, tmp / "calibration.db")
        script = calibrate(flows, f"sqlite+aiosqlite:///{tmp / 'calibration.db'}")
        runs_made = iter(range(10**6))
        log = str(tmp / "guichet.log")

        def run(server: str, spec: LoadSpec) -> Run:
            """One server process under `spec`; each SQLite run gets a fresh copy of the
            seeded database."""
            target: Callable[..., None]
            args: tuple[Any, ...]
            if server == "sqlite":
                db = tmp / f"run{next(runs_made)}.db"
                shutil.copyfile(template, db)
                target, args = serve_guichet, (str(flows), f"sqlite+aiosqlite:///{db}", log)
            elif server == "memory":
                target, args = serve_guichet, (str(flows), "", log)
            else:
                target, args = serve_baseline, (script.texts,)
            return measure(
                ctx, NAMES[server], target, args, script, spec, server_core, generator_cores
            )

        held = p99_ok = None
        if opts.latency_window > 0 and opts.latency_servers:
            call_length = sum(script.media) * (opts.media_min + opts.media_max) / 2
            spec = LoadSpec(
                "latency",
                opts.calls,
                max(1.0, call_length),
                opts.latency_window,
                opts.media_min,
                opts.media_max,
                opts.seed,
            )
            latency_runs = [run(server, spec) for server in opts.latency_servers]
            held, p99_ok = report_latency(latency_runs, script, opts)
        ratio_ok = None
        if opts.capacity_window > 0 and opts.capacity_servers:
            spec = LoadSpec(
                "capacity",
                opts.capacity_calls,
                opts.capacity_warmup,
                opts.capacity_window,
                opts.capacity_media_min,
                opts.capacity_media_max,
                opts.seed,
            )
            rounds: dict[str, list[Run]] = {NAMES[s]: [] for s in opts.capacity_servers}
            for _ in range(opts.repeat):
                for server in opts.capacity_servers:
                    rounds[NAMES[server]].append(run(server, spec))
            ratio_ok = report_capacity(rounds, script, opts)
        print(f"\nTARGETS (one core per server; {time.monotonic() - started:.0f} s in all)")
        for label, ok in [
            (f">= {TARGET_CONCURRENT:,} concurrent calls held in the latency run", held),
            (f"p99 server time/command <= {TARGET_P99_MS:g} ms at Asterisk pacing", p99_ok),
            (f">= {TARGET_RATIO:g}x the baseline's calls/s (Guichet with SQLite)", ratio_ok),
        ]:
            print(f"  {label}: {'not measured' if ok is None else _verdict(ok)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
