"""FastAGI load benchmark: Guichet's asyncio server against a thread-per-call baseline.

Two runs answer the two questions the targets ask:

* **latency**: `--calls` (1,000) concurrent calls paced like Asterisk: every media command
  (STREAM FILE, GET DATA, WAIT FOR DIGIT) is answered after a random 0.5-1.5 s, as a prompt
  plays or a caller types; SET VARIABLE is answered at once, as Asterisk does. The figure is
  the server time per AGI command (our answer written -> the server's next command read),
  p50/p99 over a window in which every call is up. Target: p99 <= 5 ms.
* **capacity**: `--capacity-calls` (200) concurrent calls in a closed loop, every answer sent
  at once: the server always has work, so the calls/s it completes in the window is the most
  it sustains on its one core (or, when its writes fall behind, what its core affords once
  they are paid: 1 s / CPU per call). Target: Guichet with SQLite >= 3x the baseline. More
  concurrency adds nothing but queueing (at 1,000, a command waits for ~1,000 others, and
  Guichet's citizen lookups then wait so long for the database that some time out).

Servers, each in its own process pinned to one core (`--*-servers` picks them):

* `sqlite`: Guichet's call path as `guichet.runtime` wires it: FlowRegistry, BufferedCrm
  over SqlCrm on a temporary SQLite seeded with `--citizens` citizens, the CaseOutbox that
  opens every queued call's case, logging at INFO to a file;
* `journeys`: the same without cases (what the call path cost before the case outbox);
* `memory`: a CRM that answers from memory and stores nothing: the engine and the wire alone;
* `baseline`: a `socketserver.ThreadingTCPServer`, a thread and a blocking socket per call,
  sending the same command sequence, parsing nothing and storing nothing.

Every call follows the sample flow's happy path (`2`, `1`, `1`, `85073003328#`, citizen
found, queued). The command sequence is recorded once through Guichet with the test suite's
Asterisk stand-in; the load generator then replays it with pre-encoded answers from a plain
epoll loop (one process per `--generators`, pinned to the other core): a few microseconds
per command, so it is not the bottleneck, and it still checks every command byte for byte,
so a server that strays from the flow counts failed calls. Its CPU use and timer lag are
printed: a saturated generator would make the server look slower than it is. Capacity runs
repeat `--repeat` times, interleaved, and print the median with the min-max spread: the
machine is shared, and the spread says how far to trust a figure. Loopback only; every run
stops by itself (about 3 minutes with the defaults).

    .venv/bin/python bench/agi_load.py [--calls 1000] [--repeat 3] [--latency-window 20]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import errno
import heapq
import logging
import multiprocessing as mp
import os
import random
import resource
import select
import shutil
import socket
import socketserver
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
LAG_TICK = 0.01  # seconds between two samples of the generator's concurrent calls
SATURATED = 0.9  # a generator busier than this share of its core may hold the server back
NOISY = 0.05  # other processes using this share of a core during a window make it noisy


# --- process plumbing -----------------------------------------------------------------------


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def _busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


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
    # Per command, b"" or the part that is the same on every call when the rest is not (the
    # case reference each queued call gets): the generator then checks only that part.
    fixed: tuple[bytes, ...] = ()

    def expects(self, step: int, line: bytes, uid: bytes) -> bool:
        prefix = self.fixed[step] if self.fixed else b""
        if prefix:
            return line.startswith(prefix) and line.endswith(b"\n")
        return line == self.commands[step].replace(PLACEHOLDER, uid)

    def varying(self, other: Script) -> Script:
        """This script, told which commands differ from `other`'s (another call's)."""
        if len(other.commands) != len(self.commands):
            raise RuntimeError("two calls of the happy path sent different numbers of commands")
        fixed = []
        for mine, theirs in zip(self.commands, other.commands, strict=True):
            if mine == theirs:
                fixed.append(b"")
                continue
            prefix = mine[: mine.find(b'"') + 1]
            if not prefix or not theirs.startswith(prefix):
                raise RuntimeError(f"two calls differ beyond a variable's value: {mine!r}")
            fixed.append(prefix)
        return replace(self, fixed=tuple(fixed))

    @property
    def texts(self) -> list[str]:
        return [
            c.decode().rstrip("\n").replace(PLACEHOLDER.decode(), "{uniqueid}")
            for c in self.commands
        ]


def _script_of(peer: ScriptedPeer, uniqueid: str) -> Script:
    commands: list[bytes] = []
    answers: list[list[bytes]] = []
    for direction, line in peer.wire:
        if direction == "<<":
            commands.append(line)
            answers.append([])
        elif line != HANGUP:  # a HANGUP line is Asterisk's, not an answer: none on this path
            answers[-1].append(line)
    uid = uniqueid.encode()
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
async def _guichet(flows_dir: Path, db_url: str, log_path: str | None, cases: bool = True) -> Any:
    """The call path as `guichet.runtime.Guichet` wires it: FlowRegistry, BufferedCrm over
    SqlCrm, and the CaseOutbox (spool file, then `CaseService`) that gives every queued call
    its case (`cases` false: no case, as a diagnostic). `db_url` empty: the in-memory CRM
    and no cases."""
    from crm_bridge.buffered import BufferedCrm
    from crm_bridge.cases import CaseService
    from crm_bridge.outbox import CaseOutbox
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
    outbox = None
    if store:
        await crm.start()
    if store and cases:
        spool = Path(db_url.removeprefix("sqlite+aiosqlite:///") + ".cases.jsonl")
        outbox = CaseOutbox(CaseService(store.engine).open_case_for_call, spool)
        await outbox.start()
    with_cases: dict[str, Any] = {"cases": outbox} if outbox else {}
    server = FastAgiServer(
        registry, crm, host=HOST, port=0, clock=_open_clock, sounds_prefix="guichet", **with_cases
    )
    await server.start()
    try:
        yield server, crm, store, outbox
    finally:
        await server.stop(grace=5.0)
        await registry.stop()
        if outbox:
            await outbox.stop(timeout=120)
        if store:
            await crm.stop(timeout=120)
            await store.close()
        if log_file:
            logging.getLogger().handlers.clear()
            log_file.close()


def serve_guichet(
    conn: Connection, flows_dir: str, db_url: str, log_path: str, cases: bool, core: int
) -> None:
    _pin(core)
    asyncio.run(_serve_guichet(conn, flows_dir, db_url, log_path, cases))


async def _serve_guichet(
    conn: Connection, flows_dir: str | Path, db_url: str, log: str, cases: bool = True
) -> None:
    async with _guichet(Path(flows_dir), db_url, log, cases) as (server, crm, store, outbox):
        loop = asyncio.get_running_loop()
        figures: dict[str, Any] = {"peak": 0, "backlog": 0}

        async def watch() -> None:
            while True:
                figures["peak"] = max(figures["peak"], server.active_calls)
                await asyncio.sleep(0.005)

        def window_start() -> None:
            figures["cpu_window"] = time.process_time()

        def window_end() -> None:  # the writes still queued when the measured window closes
            figures["backlog"] = (crm.pending if store else 0) + (outbox.pending if outbox else 0)
            figures["cpu_window"] = time.process_time() - figures["cpu_window"]

        watcher = asyncio.create_task(watch())
        conn.send(server.port)
        ready = asyncio.Event()
        loop.add_reader(conn.fileno(), ready.set)
        cpu0 = time.process_time()
        while (message := await _next_message(conn, ready)) != "stop":
            cpu0 = time.process_time()
            t_window, t_end = message  # loop.time() is time.monotonic(): the orchestrator's clock
            loop.call_at(t_window, window_start)
            loop.call_at(t_end, window_end)
        loop.remove_reader(conn.fileno())
        watcher.cancel()
        await server.stop(grace=5.0)
        if store:  # the writes of the calls served are part of their cost
            await crm.flush()
        if outbox:
            await outbox.flush()
        figures["cpu"] = time.process_time() - cpu0
        figures["journeys"] = await _count_journeys(store) if store else crm.saved
        figures["rejected"] = (len(crm.rejected) if store else 0) + (
            len(outbox.rejected) if outbox else 0
        )
        figures["cases"] = await _count_cases(store) if outbox else None
    conn.send(figures)


async def _next_message(conn: Connection, ready: asyncio.Event) -> Any:
    while not conn.poll():
        ready.clear()
        await ready.wait()
    return conn.recv()


async def _count_cases(store: Any) -> int:
    from sqlalchemy import func, select
    from sqlmodel import SQLModel

    async with store.engine.connect() as db:
        table = SQLModel.metadata.tables["interaction"]
        return int((await db.execute(select(func.count()).select_from(table))).scalar())


async def _count_journeys(store: Any) -> int:
    from sqlalchemy import func, select

    from crm_bridge.models import CallJourneyRecord

    async with store.engine.connect() as db:
        return int((await db.execute(select(func.count()).select_from(CallJourneyRecord))).scalar())


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
        t_window, t_end = conn.recv()
        cpu0 = time.process_time()
        time.sleep(max(0.0, t_window - time.monotonic()))
        cpu_window = time.process_time()
        time.sleep(max(0.0, t_end - time.monotonic()))
        cpu_window = time.process_time() - cpu_window
        conn.recv()  # stop
        cpu = time.process_time() - cpu0
        server.shutdown()
    conn.send(
        {
            "cpu": cpu,
            "cpu_window": cpu_window,
            "peak": peak,
            "journeys": None,
            "backlog": 0,
            "rejected": 0,
        }
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


class _Call:
    """One call as Asterisk makes it: the environment, then each expected command answered
    with its recorded answer (after a delay for media commands). Any other byte fails it."""

    __slots__ = ("buffer", "connecting", "failed", "last_write", "sock", "step", "uid", "waiting")

    def __init__(self, sock: socket.socket, uid: bytes) -> None:
        self.sock = sock
        self.uid = uid
        self.step = 0
        self.buffer = b""
        self.last_write = 0.0
        self.connecting = True
        self.waiting = False  # an answer is due on a timer
        self.failed = False


class _Load:
    """One generator process: `spec.calls` slots, each running calls back to back.

    A plain epoll loop over non-blocking sockets rather than asyncio: a few microseconds per
    command, so that one core of load can drive a server that is faster than Guichet."""

    def __init__(self, script: Script, port: int, spec: LoadSpec, start_at: float) -> None:
        self.script = script
        self.port = port
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.steps = len(script.commands)
        self.t_start = start_at
        self.t_window = start_at + spec.ramp
        self.t_end = self.t_window + spec.window
        self.epoll = select.epoll()
        self.calls: dict[int, _Call] = {}
        self.timers: list[tuple[float, int, int]] = []  # (due, sequence, fd or -1: a new call)
        self.sequence = 0
        self.serial = 0
        self.stopping = False
        self.completed = self.completed_in_window = self.failed = self.cut = 0
        self.peak = 0
        self.min_in_window = spec.calls
        self.latencies = array.array("d")
        self.lags = array.array("d")
        self.cpu_window = 0.0

    def delay(self, step: int) -> float:
        if not self.script.media[step] or self.spec.media_max <= 0:
            return 0.0
        return self.rng.uniform(self.spec.media_min, self.spec.media_max)

    def _timer(self, due: float, fd: int) -> None:
        self.sequence += 1
        heapq.heappush(self.timers, (due, self.sequence, fd))

    def run(self) -> dict[str, Any]:
        _warm_up(self.script, self.port)
        for slot in range(self.spec.calls):
            self._timer(self.t_start + self.spec.ramp * slot / self.spec.calls, -1)
        cpu0 = 0.0
        in_window = False
        next_probe = self.t_window
        while True:
            now = time.monotonic()
            if not in_window and now >= self.t_window:
                in_window, cpu0 = True, time.process_time()
                self.min_in_window = len(self.calls)
            if in_window and now >= next_probe and not self.stopping:
                self.min_in_window = min(self.min_in_window, len(self.calls))
                next_probe = now + LAG_TICK
            if not self.stopping and now >= self.t_end:
                self.cpu_window = time.process_time() - cpu0
                self.stopping = True
                self.timers.clear()
                for live in list(self.calls.values()):
                    self._end(live, cut=True)
            if self.stopping:
                break
            while self.timers and self.timers[0][0] <= now:
                due, _, fd = heapq.heappop(self.timers)
                if self.t_window <= due <= self.t_end:
                    self.lags.append(now - due)
                if fd < 0:
                    self._start()
                elif (waiting := self.calls.get(fd)) is not None:
                    self._answer(waiting)
            wait = min(self.t_end, self.timers[0][0] if self.timers else self.t_end) - now
            if in_window:
                wait = min(wait, next_probe - now)
            for fd, events in self.epoll.poll(max(0.0, wait)):
                ready = self.calls.get(fd)
                if ready is not None:
                    self._ready(ready, events)
        self.epoll.close()
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

    def _start(self) -> None:
        self.serial += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        call = _Call(sock, f"bench.{os.getpid()}.{self.serial}".encode())
        self.calls[sock.fileno()] = call
        self.peak = max(self.peak, len(self.calls))
        error = sock.connect_ex((HOST, self.port))
        if error not in (0, errno.EINPROGRESS):
            self._end(call, failed=True)
            return
        self.epoll.register(sock.fileno(), select.EPOLLOUT)

    def _ready(self, call: _Call, events: int) -> None:
        now = time.monotonic()
        if call.connecting:
            if events & (select.EPOLLERR | select.EPOLLHUP) or call.sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ERROR
            ):
                self._end(call, failed=True)
                return
            call.connecting = False
            self.epoll.modify(call.sock.fileno(), select.EPOLLIN)
            self._send(call, self.script.env.replace(PLACEHOLDER, call.uid))
            return
        try:
            data = call.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the server closed: that ends the call (Asterisk never closes first)
            self._end(call, failed=call.failed or call.step != self.steps)
            return
        buffer = call.buffer + data if call.buffer else data
        while (end := buffer.find(b"\n")) >= 0:
            self._command(call, buffer[: end + 1], now)
            buffer = buffer[end + 1 :]
        call.buffer = buffer

    def _command(self, call: _Call, line: bytes, now: float) -> None:
        if self.t_window <= call.last_write and now <= self.t_end:
            self.latencies.append(now - call.last_write)
        step = call.step
        if (
            call.failed
            or call.waiting
            or step >= self.steps
            or not self.script.expects(step, line, call.uid)
        ):
            call.failed = True  # counted when the socket closes
            return
        delay = self.delay(step)
        if delay > 0:
            call.waiting = True
            self._timer(now + delay, call.sock.fileno())
        else:
            self._answer(call)

    def _answer(self, call: _Call) -> None:
        call.waiting = False
        self._send(call, self.script.answers[call.step].replace(PLACEHOLDER, call.uid))
        call.step += 1

    def _send(self, call: _Call, data: bytes) -> None:
        try:
            call.sock.sendall(data)  # a line or two: the socket buffer always has room
        except OSError:
            call.failed = True
        call.last_write = time.monotonic()

    def _end(self, call: _Call, *, failed: bool = False, cut: bool = False) -> None:
        fd = call.sock.fileno()
        self.calls.pop(fd, None)
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        if cut:  # an abortive close, as Asterisk's would be on a hang-up mid-flow
            call.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        call.sock.close()
        if cut:
            self.cut += 1
        elif failed:
            self.failed += 1
        else:
            self.completed += 1
            if self.t_window <= time.monotonic() <= self.t_end:
                self.completed_in_window += 1
        if not self.stopping:
            self._start()


def _warm_up(script: Script, port: int) -> None:
    """One call first, uncounted: first-call costs (imports, calendars) are not load."""
    uid = b"bench.warmup"
    with socket.create_connection((HOST, port), timeout=60) as sock:
        stream = sock.makefile("rb")
        sock.sendall(script.env.replace(PLACEHOLDER, uid))
        for step, answer in enumerate(script.answers):
            if not script.expects(step, stream.readline(), uid):
                raise RuntimeError("the warm-up call failed: the server strays from the script")
            sock.sendall(answer.replace(PLACEHOLDER, uid))
        if stream.readline():
            raise RuntimeError("the warm-up call went on past the script")


def run_generator(
    conn: Connection, port: int, script: Script, spec: LoadSpec, start_at: float, core: int
) -> None:
    _pin(core)
    # time.monotonic() is CLOCK_MONOTONIC: the same clock in every generator process
    conn.send(_Load(script, port, spec, start_at).run())


# --- orchestration ------------------------------------------------------------------------------


@dataclass
class Run:
    """One server under one load: the generators' figures merged, and the server's own."""

    server_name: str
    spec: LoadSpec
    generators: list[dict[str, Any]]
    server: dict[str, Any]
    machine_busy: float  # CPU seconds used on the machine during the window, by anyone
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
        return float(self.server["cpu_window"]) / self.spec.window

    @property
    def others(self) -> float:
        """CPU other processes used during the window, in cores: the machine's busy time less
        the server's and the generators'. Anything but ~0 is noise in every figure."""
        ours = float(self.server["cpu_window"]) + sum(float(g["cpu"]) for g in self.generators)
        return max(0.0, self.machine_busy - ours) / self.spec.window

    @property
    def cpu_per_call_ms(self) -> float:
        calls = self.total("completed") + self.total("cut")
        return 1000 * float(self.server["cpu"]) / calls if calls else float("nan")

    def p(self, share: float) -> float:
        return _percentile(self.latencies_ms, share)

    @property
    def capacity(self) -> float:
        """The calls/s the server sustains: its rate, or when its writes fell behind, what its
        core can afford once every write is paid for (1 s / CPU per call)."""
        if self.sustained:
            return self.rate
        return min(self.rate, 1000 / self.cpu_per_call_ms)

    @property
    def sustained(self) -> bool:
        """Every call followed the flow, and the writes kept up: no more than a second's worth
        of journeys was waiting when the window closed."""
        return self.total("failed") == 0 and self.server["backlog"] <= max(10.0, self.rate)


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
        start_at = time.monotonic() + 1.5  # generators spawned and warmed up by then
        ours.send((start_at + spec.ramp, start_at + spec.ramp + spec.window))
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
        busy: list[float] = []
        sampler = threading.Thread(
            target=_sample_busy,
            args=(busy, start_at + spec.ramp, start_at + spec.ramp + spec.window),
        )
        sampler.start()
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
        sampler.join()
        return Run(name, spec, figures, ours.recv(), busy[1] - busy[0])
    finally:
        for proc, _ in generators:
            if proc.is_alive():
                proc.kill()
        server.join(10)
        if server.is_alive():
            server.kill()


def _sample_busy(out: list[float], *at: float) -> None:
    for t in at:
        time.sleep(max(0.0, t - time.monotonic()))
        out.append(_busy_cpu_seconds())


async def _record_calls(flows: Path, db_url: str, cases: bool) -> list[Script]:
    scripts = []
    async with _guichet(flows, db_url, None, cases) as (server, _, _, _):
        for n in range(2):
            uniqueid = f"{CALIBRATION_ID}.{n}"
            peer = ScriptedPeer(HAPPY_PATH, uniqueid=uniqueid)
            await peer.run(HOST, server.port, deadline=30)
            if not peer.closed_by_server or not peer.commands:
                raise RuntimeError(f"calibration call {n} failed: is the sample flow in flows/?")
            scripts.append(_script_of(peer, uniqueid))
    return scripts


def calibrate(flows: Path, db_url: str, cases: bool) -> Script:
    """Record the happy path through Guichet with SQLite (twice: what differs between two
    calls, a case reference, is checked by its fixed part only) and with the in-memory CRM:
    all must send the same commands, or the runs would not compare."""
    first, second = asyncio.run(_record_calls(flows, db_url, cases))
    script = first.varying(second)
    for other in asyncio.run(_record_calls(flows, "", False)):
        if not all(script.expects(n, c, PLACEHOLDER) for n, c in enumerate(other.commands)):
            raise RuntimeError("the SQLite and in-memory CRMs lead the flow down different paths")
    return script


SERVERS = ("sqlite", "journeys", "memory", "baseline")
NAMES = {
    "sqlite": "guichet (SQLite)",
    "journeys": "guichet (SQLite, no cases)",
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
    server_core: int | None


def _cell(values: list[float], fmt: str) -> str:
    """The median, and the min-max spread when there are several runs."""
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _row(name: str, cells: list[str], note: str = "", width: int = 28) -> None:
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
        "generator timer lag p99",
        [f"{_percentile(r.lags_ms, 0.99):.2f} ms" for r in runs],
        "how late the generator itself ran",
    )
    _row(
        "other processes' CPU",
        [f"{100 * r.others:.0f} % of a core" for r in runs],
        f"> {100 * NOISY:g} %: they shared the cores, figures are noisy",
    )
    _row(
        "journeys (+ cases) stored",
        [_journeys(r) for r in runs],
        "and the writes still queued when the window closed",
    )
    return concurrent >= TARGET_CONCURRENT, p99 <= TARGET_P99_MS and guichet.total("failed") == 0


def _journeys(run: Run) -> str:
    saved, cases = run.server["journeys"], run.server.get("cases")
    if saved is None:
        return "-"
    stored = f"{saved}" + (f" + {cases}" if cases is not None else "")
    return f"{stored}, {run.server['backlog']} queued"


def report_capacity(rounds: dict[str, list[Run]], script: Script, opts: Options) -> bool | None:
    first = next(iter(rounds.values()))[0]
    print(
        f"\nCAPACITY RUN: {first.spec.calls} concurrent calls in a closed loop, every answer "
        f"at once; {first.spec.window:g} s window after {first.spec.ramp:g} s of warm-up; "
        f"{opts.repeat} round(s): median (min-max)"
    )
    names = list(rounds)
    _row("", names, "", 30)
    _row("calls/s completed", [_cell([r.rate for r in rounds[n]], ".0f") for n in names], "", 30)
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
    _row(
        "other processes' CPU",
        [_cell([100 * r.others for r in rounds[n]], ".0f") + " %" for n in names],
        f"> {100 * NOISY:g} % of a core: noisy",
        30,
    )
    _row("calls failed", [str(sum(r.total("failed") for r in rounds[n])) for n in names], "", 30)
    _row(
        "sustained (rounds)",
        [f"{sum(r.sustained for r in rounds[n])}/{len(rounds[n])}" for n in names],
        "no failed call, writes kept up",
        30,
    )
    _row(
        "CAPACITY calls/s",
        [_cell([r.capacity for r in rounds[n]], ".0f") for n in names],
        "completed if sustained, else 1 s / CPU per call",
        30,
    )
    _row(
        "writes queued at window end",
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
            a.capacity / b.capacity
            for a, b in zip(rounds[name], rounds[base_name], strict=True)
            if b.capacity
        ]
        median_ratio = statistics.median(ratios) if ratios else float("nan")
        judged = name == NAMES["sqlite"]
        if judged:
            verdict = median_ratio >= TARGET_RATIO
        print(
            f"{name} / {base_name}: {_cell(ratios, '.2f')}x capacity"
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
    names = ",".join(SERVERS)
    add("--latency-servers", type=_servers, default=["sqlite"], help=f"among {names}")
    add("--capacity-window", type=float, default=4.0, help="seconds measured (0: no capacity run)")
    add("--capacity-warmup", type=float, default=2.0, help="seconds before each window")
    add("--capacity-calls", type=int, default=200, help="concurrent calls (capacity runs)")
    add("--capacity-media-min-ms", type=float, default=0.0, help="media delay (default: none)")
    add("--capacity-media-max-ms", type=float, default=0.0)
    add("--capacity-servers", type=_servers, default=list(SERVERS), help=f"among {names}")
    add("--repeat", type=int, default=3, help="rounds of capacity runs, interleaved")
    add("--generators", type=int, default=1, help="load generator processes")
    add("--citizens", type=int, default=10_000, help="citizen directory size (SQLite)")
    add("--seed", type=int, default=1)
    add("--server-core", type=int, default=None, help="core for the servers (default: the first)")
    args = parser.parse_args(argv)
    return Options(
        calls=args.calls,
        latency_window=args.latency_window,
        media_min=args.media_min_ms / 1000,
        media_max=args.media_max_ms / 1000,
        latency_servers=args.latency_servers,
        capacity_window=args.capacity_window,
        capacity_warmup=args.capacity_warmup,
        capacity_calls=args.capacity_calls,
        capacity_media_min=args.capacity_media_min_ms / 1000,
        capacity_media_max=args.capacity_media_max_ms / 1000,
        capacity_servers=args.capacity_servers,
        repeat=max(1, args.repeat),
        generators=max(1, args.generators),
        seed=args.seed,
        citizens=args.citizens,
        server_core=args.server_core,
    )


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    ctx = mp.get_context("spawn")
    cores = _cores()
    server_core = cores[0] if opts.server_core is None else opts.server_core
    others = [core for core in cores if core != server_core] or [server_core]
    generator_cores = [others[n % len(others)] for n in range(opts.generators)]
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
        cases = "sqlite" in opts.latency_servers + opts.capacity_servers
        script = calibrate(flows, f"sqlite+aiosqlite:///{tmp / 'calibration.db'}", cases)
        runs_made = iter(range(10**6))
        log = str(tmp / "guichet.log")

        def run(server: str, spec: LoadSpec) -> Run:
            """One server process under `spec`; each SQLite run gets a fresh copy of the
            seeded database."""
            target: Callable[..., None]
            args: tuple[Any, ...]
            if server in ("sqlite", "journeys"):
                db = tmp / f"run{next(runs_made)}.db"
                shutil.copyfile(template, db)
                url = f"sqlite+aiosqlite:///{db}"
                target, args = serve_guichet, (str(flows), url, log, server == "sqlite")
            elif server == "memory":
                target, args = serve_guichet, (str(flows), "", log, False)
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
