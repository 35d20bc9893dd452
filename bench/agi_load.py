"""FastAGI load benchmark: Guichet's asyncio server against a thread-per-call baseline.

N concurrent sessions behave like Asterisk (tests/agi_peer.py `ScriptedPeer`): the sample
flow's happy path (`2`, `1`, `1`, `85073003328#`), every answer sent after a random
20-50 ms (a compressed prompt or a caller typing). Each server runs in its own process
pinned to one core, the load generator in another process on the other core. Only
127.0.0.1 is used; every run is bounded in calls and in time.

Printed per server: calls/s in the steady window (after the ramp, while calls still start),
peak concurrent calls, and the server time per AGI command (from the peer's answer written
to the server's next command read), with the targets beside them. Servers: Guichet with
SQLite behind BufferedCrm (as `guichet serve`), Guichet with a CRM that stores nothing
(isolates the database), and the baseline. CPU use of each process is printed too: a
saturated load generator would make the faster server look slower than it is. The figures
are only as quiet as the machine: other processes on the two cores show in them.

    .venv/bin/python bench/agi_load.py [--calls 1000] [--total 10000] [--duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agi_peer import HANGUP, Press, ScriptedPeer  # noqa: E402

HOST = "127.0.0.1"
HAPPY_PATH = [Press("2"), Press("1"), Press("1"), Press("85073003328#")]
OPEN_HOURS = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Brussels"))  # a Monday
CALL_DEADLINE = 60.0  # seconds one session may take before it counts as failed
TARGET_CONCURRENT, TARGET_P99_MS, TARGET_RATIO = 1000, 5.0, 3.0


# --- process plumbing -----------------------------------------------------------------------


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    return (cores[0], cores[1]) if len(cores) > 1 else (cores[0], cores[0])


# --- the servers ------------------------------------------------------------------------------


def _open_clock() -> datetime:
    return OPEN_HOURS


def serve_guichet(conn: Connection, flows_dir: str, db_url: str, core: int) -> None:
    """Guichet's FastAGI server with the sample flows; journeys go to SQLite through
    BufferedCrm as in `guichet serve` (`db_url` empty: a CRM that stores nothing)."""
    _pin(core)
    asyncio.run(_serve_guichet(conn, Path(flows_dir), db_url))


async def _serve_guichet(conn: Connection, flows_dir: Path, db_url: str) -> None:
    from crm_bridge.buffered import BufferedCrm
    from crm_bridge.store import SqlCrm
    from ivr.fastagi import FastAgiServer
    from ivr.registry import FlowRegistry

    registry = FlowRegistry(flows_dir, interval=0)
    await registry.start()
    store = await SqlCrm.connect(db_url) if db_url else None
    crm: Any = BufferedCrm(store) if store else NullCrm()  # as `guichet serve` wires it
    if store:
        await crm.start()
    server = FastAgiServer(
        registry, crm, host=HOST, port=0, clock=_open_clock, sounds_prefix="guichet"
    )
    await server.start()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, server.active_calls)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    cpu = await _control(conn, server.port)
    watcher.cancel()
    await server.stop(grace=5.0)
    await registry.stop()
    if store:
        await crm.stop(timeout=60)
    saved = await _count_journeys(store or crm)
    if store:
        await store.close()
    conn.send({"cpu": cpu, "peak": peak, "journeys": saved})


class NullCrm:
    """A CrmPort that stores nothing: isolates the FastAGI and engine cost from the database."""

    def __init__(self) -> None:
        self.saved = 0

    async def find_citizen_by_national_number(self, number: str) -> None:
        return None

    async def find_citizen_by_phone(self, phone: str) -> None:
        return None

    async def record_callback(self, request: object) -> None:
        return None

    async def save_journey(self, journey: object) -> None:
        self.saved += 1


async def _count_journeys(crm: Any) -> int:
    if isinstance(crm, NullCrm):
        return crm.saved
    from sqlalchemy import func, select

    from crm_bridge.models import CallJourneyRecord

    async with crm.engine.connect() as db:
        return int((await db.execute(select(func.count()).select_from(CallJourneyRecord))).scalar())


async def _control(conn: Connection, port: int) -> float:
    """Report the port, then return the CPU seconds used between `start` and `stop`."""
    loop = asyncio.get_running_loop()
    conn.send(port)
    ready = asyncio.Event()
    loop.add_reader(conn.fileno(), ready.set)
    cpu0 = 0.0
    while True:
        await ready.wait()
        ready.clear()
        while conn.poll():
            message = conn.recv()
            if message == "start":
                cpu0 = time.process_time()
            elif message == "stop":
                loop.remove_reader(conn.fileno())
                return time.process_time() - cpu0


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
        cpu0 = 0.0
        while (message := conn.recv()) != "stop":
            if message == "start":
                cpu0 = time.process_time()
        cpu = time.process_time() - cpu0
        server.shutdown()
    conn.send({"cpu": cpu, "peak": peak, "journeys": None})


# --- the load -----------------------------------------------------------------------------------


@dataclass
class LoadSpec:
    calls: int  # concurrent sessions
    total: int  # sessions in all
    duration: float  # no new session after this many seconds
    ramp: float  # worker starts spread over this many seconds (calls arrive, not stampede)
    delay_min: float
    delay_max: float
    seed: int
    expected_commands: int  # a complete happy path has this many commands (0: unknown)


def run_load(conn: Connection, port: int, spec: LoadSpec, core: int) -> None:
    _pin(core)
    conn.send(asyncio.run(_load(port, spec)))


async def _load(port: int, spec: LoadSpec) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    loop = asyncio.get_running_loop()
    # one call first, uncounted: first-call costs (holiday calendar, lazy imports) are not load
    await ScriptedPeer(HAPPY_PATH, uniqueid="bench.warmup").run(HOST, port, deadline=CALL_DEADLINE)
    latencies: list[float] = []
    done = failed = started = active = peak = 0
    cpu0, t0 = time.process_time(), loop.time()
    commands: list[str] = []
    ended: list[float] = []  # completion times of complete calls
    last_start = t0

    def delay(index: int, verb: str) -> float:
        return rng.uniform(spec.delay_min, spec.delay_max)

    async def worker(number: int) -> None:
        nonlocal done, failed, started, active, peak, commands, last_start
        await asyncio.sleep(spec.ramp * number / spec.calls)
        while started < spec.total and loop.time() - t0 < spec.duration:
            started += 1
            last_start = loop.time()
            peer = ScriptedPeer(HAPPY_PATH, uniqueid=f"bench.{started}", delay=delay,
                                watch_close=False)
            active += 1
            peak = max(peak, active)
            try:
                await peer.run(HOST, port, deadline=CALL_DEADLINE)
            except OSError:
                peer.closed_by_server = False
            finally:
                active -= 1
            complete = peer.closed_by_server and (
                not spec.expected_commands or len(peer.commands) == spec.expected_commands
            )
            if complete:
                done += 1
                ended.append(loop.time())
                latencies.extend(peer.latencies)
                commands = commands or peer.commands
            else:
                failed += 1

    await asyncio.gather(*(worker(n) for n in range(spec.calls)))
    elapsed = loop.time() - t0
    # calls/s in the steady window: after the ramp, while new calls still start
    window = last_start - (t0 + spec.ramp)
    steady = sum(1 for t in ended if t0 + spec.ramp <= t <= last_start)
    rate = steady / window if window >= 1.0 and steady else done / elapsed
    ms = sorted(x * 1000 for x in latencies)
    return {
        "done": done, "failed": failed, "elapsed": elapsed, "peak": peak, "rate": rate,
        "p50": statistics.median(ms) if ms else float("nan"),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan"),
        "cpu": time.process_time() - cpu0, "commands": commands,
    }


# --- orchestration ------------------------------------------------------------------------------


def measure(
    ctx: mp.context.SpawnContext, target: Any, target_args: tuple[Any, ...], spec: LoadSpec,
    cores: tuple[int, int],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a server process, run the load against it, stop it; (load, server) figures."""
    ours, theirs = ctx.Pipe()
    server = ctx.Process(target=target, args=(theirs, *target_args, cores[0]), daemon=True)
    server.start()
    try:
        if not ours.poll(60):
            raise RuntimeError("server did not start")
        port = ours.recv()
        ours.send("start")
        load_ours, load_theirs = ctx.Pipe()
        load = ctx.Process(target=run_load, args=(load_theirs, port, spec, cores[1]), daemon=True)
        load.start()
        budget = spec.duration + CALL_DEADLINE + 30
        if not load_ours.poll(budget):
            load.kill()
            raise RuntimeError(f"load generator did not finish within {budget:.0f} s")
        figures = load_ours.recv()
        load.join(10)
        ours.send("stop")
        if not ours.poll(60):
            raise RuntimeError("server did not report")
        return figures, ours.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.kill()


def calibrate(ctx: mp.context.SpawnContext, flows: Path, db_url: str,
              cores: tuple[int, int]) -> list[str]:
    """One call through Guichet: the command sequence the baseline will replay."""
    spec = LoadSpec(1, 1, 30.0, 0.0, 0.0, 0.0, 0, 0)
    load, _ = measure(ctx, serve_guichet, (str(flows), db_url), spec, cores)
    if not load["commands"]:
        raise RuntimeError("calibration call failed: is the sample flow in flows/?")
    return [c.replace("bench.1", "{uniqueid}") for c in load["commands"]]


@dataclass
class Run:
    """One server under load: the generator's figures and the server's own."""

    name: str
    load: dict[str, Any]
    server: dict[str, Any]

    @property
    def rate(self) -> float:
        return float(self.load["rate"])

    def cpu(self, side: str) -> str:
        figures = self.load if side == "load" else self.server
        return f"{100 * figures['cpu'] / self.load['elapsed']:.0f} %"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(spec: LoadSpec, runs: list[Run], n_commands: int) -> None:
    """A table, one column per server; targets judge the first run (Guichet with SQLite)
    against the last (the baseline)."""
    ours, base = runs[0], runs[-1] if len(runs) > 1 and runs[-1].name.startswith("baseline") else None
    print(f"\nFastAGI load: {spec.calls} concurrent sessions started over {spec.ramp:g} s "
          f"({spec.total} at most, new ones for {spec.duration:g} s at most), "
          f"answers after {spec.delay_min * 1000:g}-"
          f"{spec.delay_max * 1000:g} ms, sample flow happy path: {n_commands} commands/call")
    print("".join([f"{'':26}", *(f"{r.name:>22}" for r in runs), "   target (first column)"]))
    ratio = ours.rate / base.rate if base and base.rate else None
    peak = ours.load["peak"]
    table: list[tuple[str, list[str], str]] = [
        ("calls completed (failed)", [f"{r.load['done']} ({r.load['failed']})" for r in runs], ""),
        ("calls/s (steady state)", [f"{r.rate:.1f}" for r in runs],
         f">= {TARGET_RATIO:g}x baseline: "
         + (f"{ratio:.2f}x {_verdict(ratio >= TARGET_RATIO)}" if ratio else "n/a")),
        ("peak concurrent calls", [str(r.load["peak"]) for r in runs],
         f">= {TARGET_CONCURRENT:,}: {_verdict(peak >= TARGET_CONCURRENT)}"),
        ("server time/command p50", [f"{r.load['p50']:.2f} ms" for r in runs], ""),
        ("server time/command p99", [f"{r.load['p99']:.2f} ms" for r in runs],
         f"<= {TARGET_P99_MS:g} ms: {_verdict(ours.load['p99'] <= TARGET_P99_MS)}"),
        ("server CPU (1 core)", [r.cpu("server") for r in runs], ""),
        ("load generator CPU (1 core)", [r.cpu("load") for r in runs],
         "near 100 %: bound by the generator"),
        ("journeys stored", [str(r.server["journeys"] if r.server["journeys"] is not None
                                 else "-") for r in runs], ""),
    ]
    for name, cells, target in table:
        print("".join([f"{name:26}", *(f"{c:>22}" for c in cells), f"   {target}"]))
    if base:
        for r in runs[1:-1]:
            print(f"{r.name}: {r.rate / base.rate:.2f}x baseline calls/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="concurrent sessions")
    parser.add_argument("--total", type=int, default=None, help="sessions in all (10x --calls)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of new sessions")
    parser.add_argument("--ramp", type=float, default=2.0,
                        help="seconds over which the concurrent sessions start")
    parser.add_argument("--delay-min-ms", type=float, default=20.0)
    parser.add_argument("--delay-max-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-null-crm", action="store_true",
                        help="skip the diagnostic run with a CRM that stores nothing")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    cores = _cores()
    if cores[0] == cores[1]:
        print("warning: one CPU core only; server and load share it", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="guichet-agi-bench-"))
    try:
        flows = tmp / "flows"
        shutil.copytree(ROOT / "flows", flows)
        calibration = calibrate(ctx, flows, f"sqlite+aiosqlite:///{tmp / 'calibrate.db'}", cores)
        spec = LoadSpec(
            calls=args.calls, total=args.total or 10 * args.calls, duration=args.duration,
            ramp=args.ramp,
            delay_min=args.delay_min_ms / 1000, delay_max=args.delay_max_ms / 1000,
            seed=args.seed, expected_commands=len(calibration),
        )
        runs = [Run("guichet (SQLite)", *measure(
            ctx, serve_guichet, (str(flows), f"sqlite+aiosqlite:///{tmp / 'journeys.db'}"),
            spec, cores,
        ))]
        if not args.no_null_crm:
            runs.append(Run("guichet, no-op CRM", *measure(
                ctx, serve_guichet, (str(flows), ""), spec, cores
            )))
        if not args.no_baseline:
            runs.append(Run("baseline (threads)", *measure(
                ctx, serve_baseline, (calibration,), spec, cores
            )))
        report(spec, runs, len(calibration))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
