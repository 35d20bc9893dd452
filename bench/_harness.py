"""What the whole-Guichet benchmarks (`screenpop.py`, `wallboard.py`) share.

Plumbing (core pinning, the control pipes, loop-lag / CPU / GC probes), Guichet served in
its own process as `guichet serve` wires it (logs captured and summed up at the end), the
two-process round (load process = Asterisk's AMI + the console clients; server process =
Guichet), console sign-in, and the report's cells. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
AMI_SECRET = "bench-ami-secret"
PASSWORD = "bench agent password"  # every console user's
MARKER = "BenchMark"  # our own event name: brackets a phase in the server's AMI stream
LAG_TICK = 0.01  # seconds between event-loop lag probes

R = TypeVar("R")


# --- plumbing -------------------------------------------------------------------------------


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def _percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def _recv(conn: Connection, timeout: float) -> Any:
    """A message from the pipe without blocking the event loop."""
    if not await asyncio.to_thread(conn.poll, timeout):
        raise TimeoutError(f"nothing on the control pipe within {timeout:.0f} s")
    return conn.recv()


def _marker(phase: str) -> bytes:
    return f"Event: {MARKER}\r\nPrivilege: system,all\r\nPhase: {phase}\r\n\r\n".encode()


async def _lag_probe(lags: array.array[float], cpu: array.array[float] | None = None) -> None:
    """Record how late the loop wakes up after each `LAG_TICK` sleep, in ms, with when (and
    the process's CPU time then, into `cpu`)."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_TICK)
        now = loop.time()
        at = time.monotonic()
        lags.append(at)
        lags.append((now - before - LAG_TICK) * 1000)
        if cpu is not None:
            cpu.append(at)
            cpu.append(time.process_time())


def _value_at(trace: Sequence[float], t: float) -> float:
    """The last value recorded at or before `t` in a (time, value) trace."""
    found = float("nan")
    for i in range(0, len(trace) - 1, 2):
        if trace[i] > t:
            break
        found = trace[i + 1]
    return found


def _core_times(core: int) -> tuple[float, float]:
    """(busy, stolen) CPU seconds of one core since boot, from /proc/stat; (nan, nan) if
    unknown. Busy includes every process on the core, and time the hypervisor stole."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                if line.startswith(f"cpu{core} "):
                    ticks = [int(v) for v in line.split()[1:9]]
                    hz = os.sysconf("SC_CLK_TCK")
                    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
                    return (user + nice + system + irq + softirq + steal) / hz, steal / hz
    except (OSError, ValueError):
        pass
    return float("nan"), float("nan")


def _run_delay() -> float:
    """Seconds this process's live threads spent runnable but waiting for a CPU."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"/proc/self/task/{task}/schedstat", encoding="ascii") as stat,
            ):
                total += int(stat.read().split()[1])
    return total / 1e9


def _lags_between(lags: Sequence[float], start: float, end: float) -> list[float]:
    return [lags[i + 1] for i in range(0, len(lags) - 1, 2) if start <= lags[i] <= end]


def _watch_gc() -> array.array[float]:
    """Record each full (generation 2) collection: when it ended, and how long it took."""
    pauses: array.array[float] = array.array("d")
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        now = time.monotonic()
        if phase == "start":
            started[0] = now
        else:
            pauses.append(now)
            pauses.append((now - started[0]) * 1000)

    gc.callbacks.append(callback)
    return pauses


def _wait(conn: Connection, timeout: float, what: str, proc: BaseProcess) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.5):
        if not proc.is_alive():
            raise RuntimeError(f"{what}: the process died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: nothing within {timeout:.0f} s")
    return conn.recv()


async def wait_until(
    done: Callable[[], bool], changed: asyncio.Event, deadline: float, idle: float = 5.0
) -> None:
    """Until `done()`, nothing `changed` for `idle` s (some were lost), or `deadline`."""
    while not done() and time.monotonic() < deadline:
        changed.clear()
        try:
            await asyncio.wait_for(
                changed.wait(), max(0.01, min(idle, deadline - time.monotonic()))
            )
        except TimeoutError:
            return


# --- the load process: console sign-in ------------------------------------------------------


async def tokens(base_url: str, usernames: Sequence[str]) -> list[str]:
    """A bearer token for each console user (`POST /api/auth/token`), in order."""
    import httpx

    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=60) as http:

        async def one(name: str) -> str:
            async with limit:
                response = await http.post(
                    "/api/auth/token", json={"username": name, "password": PASSWORD}
                )
            response.raise_for_status()
            return str(response.json()["token"])

        return list(await asyncio.gather(*(one(name) for name in usernames)))


# --- the server process: Guichet as `guichet serve` wires it ---------------------------------


@dataclass
class Served:
    """A running Guichet with its console on a loopback port, and what is probed of it:
    loop lag and CPU time (``(time, value)`` pairs), full GC pauses."""

    guichet: Any
    console: Any  # uvicorn.Server
    serving: asyncio.Task[None]
    lags: array.array[float] = field(default_factory=lambda: array.array("d"))
    cpu_trace: array.array[float] = field(default_factory=lambda: array.array("d"))
    gc: array.array[float] = field(default_factory=lambda: array.array("d"))

    async def url(self) -> str:
        """The console's base URL, once uvicorn listens."""
        while not self.console.started:
            if self.serving.done():
                self.serving.result()
            await asyncio.sleep(0.01)
        port = self.console.servers[0].sockets[0].getsockname()[1]
        return f"http://{HOST}:{port}"

    async def commands(self, conn: Connection, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Answer "snapshot" on the control pipe until "stop"."""
        while (command := await _recv(conn, 3600)) != "stop":
            if command == "snapshot":
                conn.send(snapshot())


@contextlib.asynccontextmanager
async def serve_guichet(
    conn: Connection, tmp: Path, ami_port: int, secret_key: str
) -> AsyncIterator[Served]:
    """Guichet on a temporary SQLite and case spool in `tmp`, logging in to the AMI server on
    `ami_port`, its console served by uvicorn; probed from the start. On the way out it
    closes the websockets (1001) and stops, then sends the log's warning and error count on
    `conn`."""
    import uvicorn

    from guichet.logging_setup import setup_logging
    from guichet.runtime import Guichet
    from guichet.settings import Settings

    log_path = tmp / "guichet.log"
    log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230  (before any load)
    setup_logging("WARNING", stream=log_file)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'guichet.db'}",
        case_spool=tmp / "cases.spool",
        agi_port=0,
        ami_host=HOST,
        ami_port=ami_port,
        ami_secret=AMI_SECRET,
        secret_key=secret_key,
        reload_interval=0,
    )
    guichet = Guichet(settings)
    await guichet.start()
    assert guichet.ami is not None
    gc_pauses = _watch_gc()
    console = uvicorn.Server(
        uvicorn.Config(guichet.app, host=HOST, port=0, log_level="warning", log_config=None)
    )
    served = Served(guichet, console, asyncio.create_task(console.serve()), gc=gc_pauses)
    probe = asyncio.create_task(_lag_probe(served.lags, served.cpu_trace))
    try:
        yield served
    finally:
        probe.cancel()
        guichet.hub.close_all()  # the websockets end (1001), so uvicorn can stop at once
        console.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(served.serving, 30)
        await guichet.stop()
        logging.getLogger().handlers.clear()
        log_file.close()
        lines = log_path.read_text(encoding="utf-8").splitlines()
        warnings = [line for line in lines if " WARNING " in line]
        errors = [line for line in lines if " ERROR " in line]
        conn.send(
            {"warnings": len(warnings), "errors": len(errors), "sample": (errors + warnings)[:5]}
        )


# --- one round: the two processes -----------------------------------------------------------


def run_processes(
    ctx: SpawnContext,
    load: tuple[Callable[..., None], Any, int],
    server: tuple[Callable[..., None], Callable[[int], Any], int],
    setup_timeout: float,
    run_timeout: float,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Start the load process (`target(conn, spec, core)`: it answers the AMI port, then takes
    the console's URL and answers its figures), then the server (its spec made from the AMI
    port: it answers the URL, then a snapshot, then its log summary at "stop"). Returns
    (figures, snapshot, log summary); both processes are gone on return."""
    load_target, load_spec, load_core = load
    server_target, server_spec, server_core = server
    load_pipe, its_load = ctx.Pipe()
    server_pipe, its_server = ctx.Pipe()
    loader = ctx.Process(target=load_target, args=(its_load, load_spec, load_core), daemon=True)
    guichet: BaseProcess | None = None
    try:
        loader.start()
        ami_port = _wait(load_pipe, 120, "load start", loader)
        guichet = ctx.Process(
            target=server_target, args=(its_server, server_spec(ami_port), server_core), daemon=True
        )
        guichet.start()
        base_url = _wait(server_pipe, setup_timeout, "server set-up", guichet)
        load_pipe.send(base_url)
        figures = _wait(load_pipe, run_timeout, "load run", loader)
        server_pipe.send("snapshot")
        stats = _wait(server_pipe, 120, "server snapshot", guichet)
        server_pipe.send("stop")  # Guichet logs off the AMI and closes the websockets
        end = _wait(server_pipe, 120, "server stop", guichet)
        guichet.join(30)
        load_pipe.send("finish")
        loader.join(60)
        return figures, stats, end
    finally:
        for proc in (loader, guichet):
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join(10)


def run_rounds(
    repeat: int,
    prefix: str,
    tmp_dir: str | None,
    one: Callable[[Path], R],
    after: Callable[[int, R], None] | None = None,
) -> list[R]:
    """`repeat` rounds, each in a fresh temporary folder (removed after), with progress on
    stderr; `after(n, round)` runs before its folder goes."""
    started = time.monotonic()
    rounds: list[R] = []
    for n in range(repeat):
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_dir))
        try:
            rounds.append(one(tmp))
            if after is not None:
                after(n, rounds[-1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"round {n + 1}/{repeat} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return rounds


# --- the report -----------------------------------------------------------------------------


def _cell(values: Sequence[float], fmt: str) -> str:
    """The median, and the min-max spread when there are several rounds."""
    clean = [v for v in values if v == v]
    if not clean:
        return "-"
    med = statistics.median(clean)
    if min(clean) == max(clean):
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(clean), fmt)}-{format(max(clean), fmt)})"


def _row(label: str, cell: str, note: str = "") -> None:
    print(f"  {label:44}{cell:>30}  {note}".rstrip())


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def health(loads: Sequence[dict[str, Any]], ends: Sequence[dict[str, Any]]) -> None:
    """AMI reconnects and lost events (load side), the server log's warnings and errors."""
    _row(
        "AMI sessions (1 = no reconnect) / events lost",
        _cell([x["ami_sessions"] for x in loads], ".0f")
        + " / "
        + _cell([x["ami_lost"] for x in loads], ".0f"),
    )
    _row(
        "server log warnings / errors",
        f"{_cell([x['warnings'] for x in ends], '.0f')} / "
        f"{_cell([x['errors'] for x in ends], '.0f')}",
    )
    for line in dict.fromkeys(line for x in ends for line in x["sample"]):
        print(f"    e.g. {line[:160]}")


async def close_load(
    probe: asyncio.Task[None] | None,
    readers: Sequence[asyncio.Task[Any]],
    sockets: Sequence[Any],
    replay: Any,
) -> None:
    """End a load process's run: its lag probe, its socket readers, the sockets, the AMI."""
    if probe is not None:
        probe.cancel()
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await replay.close()
