"""AMI events per second on one core: Guichet's AmiClient + CtiState against raw panoramisk.

Every event Asterisk 22 sent in the recordings (../shared/asterisk/*/ami.log, connection
c1) is streamed again and again by a peer in another process (another core) over loopback
TCP, after a real Login exchange:

* baseline: panoramisk's `Manager`, parsing every message and dispatching it to one `*`
  callback (what an application gets from it);
* Guichet: `cti.ami.AmiClient` routing the events `cti.state.CtiState` reads (parsed lazily,
  the rest skipped by name) into `CtiState.apply`, i.e. the domain events too.

Then the same recorded messages parsed in memory, one by one, by each parser (no socket, no
laziness): panoramisk's `Message.from_line` against `cti.ami.parse_message`.

Bounded (`--events`, default 150,000 per run) and stops by itself. Figures only, no verdict:

    .venv/bin/python bench/ami_events.py [--events N] [--recordings DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import socket
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from panoramisk.manager import Manager
from panoramisk.message import Message

from cti.ami import AmiClient, AmiConfig, AmiMessage, parse_message
from cti.events import Event
from cti.state import EVENTS, VARSET_FILTER, CtiState
from guichet.replay.agi_caller import transcripts_dir

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 2\r\nLastReload: 2\r\n"
    b"Status: Fully Booted\r\n\r\n"
)
END = b"Event: BenchEnd\r\nPrivilege: system,all\r\n\r\n"
SKIP = (b"Event: Shutdown", b"Event: FullyBooted")  # would end or reset the session
TARGET = 30_000  # events/s the CTI must sustain on one core


def recorded_events(root: Path) -> list[bytes]:
    """Every event block Asterisk sent on c1, in recording order, with its blank line."""
    blocks: list[bytes] = []
    for log in sorted(root.glob("*/ami.log")):
        lines: list[bytes] = []
        with open(log, "rb") as f:
            for line in f:
                _, conn, direction, raw = line.split(b" ", 3)
                if conn != b"c1" or direction != b">>" or raw.startswith(b"Asterisk Call"):
                    continue
                lines.append(raw)
                if raw == b"\r\n":
                    block, lines = b"".join(lines), []
                    if block.startswith(b"Event: ") and not block.startswith(SKIP):
                        blocks.append(block)
    return blocks


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


# --- the peer (another process) ----------------------------------------------------------------


def _read_message(conn: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client left")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    message = bytes(buf[:end])
    del buf[:end]
    return message


def _action_id(message: bytes) -> bytes:
    found = re.search(rb"ActionID: ([^\r\n]*)", message)
    return found.group(1) if found else b""


def serve(pipe: Connection, body: bytes, repeat: int, runs: int) -> None:
    """Per connection: banner, Login -> Success + FullyBooted, Ping -> Pong (the client's
    "go"), then `body` `repeat` times, BenchEnd, close."""
    pin(1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    pipe.send(server.getsockname()[1])
    for _ in range(runs):
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        try:
            conn.sendall(BANNER)
            login = _read_message(conn, buf)
            conn.sendall(
                b"Response: Success\r\nActionID: "
                + _action_id(login)
                + b"\r\nMessage: Authentication accepted\r\n\r\n"
                + FULLY_BOOTED
            )
            while True:  # answer until the Ping that starts the clock
                action = _read_message(conn, buf)
                aid = _action_id(action)
                if b"Action: Ping" in action:
                    conn.sendall(
                        b"Response: Success\r\nActionID: " + aid + b"\r\nPing: Pong\r\n\r\n"
                    )
                    break
                conn.sendall(b"Response: Error\r\nActionID: " + aid + b"\r\nMessage: bench\r\n\r\n")
            for _ in range(repeat):
                conn.sendall(body)
            conn.sendall(END)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):  # until the client closes
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()
    server.close()


# --- the two clients ---------------------------------------------------------------------------


async def run_panoramisk(port: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    count = 0

    def on_event(manager: Manager, message: Message) -> None:
        nonlocal count
        if message.event == "BenchEnd":
            if not done.done():
                done.set_result(time.perf_counter())
        elif message.event != "FullyBooted":
            count += 1

    manager = Manager(
        host="127.0.0.1",
        port=port,
        username="guichet",
        secret="bench",
        loop=loop,
        ping_delay=3600,
        reconnect_timeout=3600,
    )
    manager.register_event("*", on_event)
    await manager.connect()
    await manager.authenticated_future
    start = time.perf_counter()  # the peer streams right after the Pong
    await manager.send_action({"Action": "Ping"})
    end = await asyncio.wait_for(done, timeout=600)
    manager.close()
    return count, end - start


async def run_guichet(port: int, everything: bool = False) -> tuple[int, float, int, int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    state = CtiState()
    produced: list[Event] = []

    def on_message(message: AmiMessage) -> None:
        produced.extend(state.apply(message.headers, time.time()))

    def on_end(message: AmiMessage) -> None:
        if not done.done():
            done.set_result(time.perf_counter())

    client = AmiClient(
        AmiConfig(
            host="127.0.0.1", port=port, secret="bench", ping_interval=3600, backoff_initial=3600
        )
    )
    client.subscribe(on_message, EVENTS)
    client.subscribe(on_message, ["VarSet"], contains=VARSET_FILTER)
    client.subscribe(on_end, ["BenchEnd"])
    if everything:  # a `*` subscriber (a debug tap): every event parsed
        client.subscribe(lambda message: None)
    await client.connect()
    seen0, parsed0 = client.events_seen, client.events_parsed
    start = time.perf_counter()  # the peer streams right after the Pong
    await client.send_action({"Action": "Ping"})
    end = await asyncio.wait_for(done, timeout=600)
    count = client.events_seen - seen0 - 1  # BenchEnd aside
    parsed = client.events_parsed - parsed0 - 1
    await client.close()
    return count, end - start, parsed, len(produced)


def in_memory(blocks: list[bytes], rounds: int) -> tuple[float, float]:
    """Best of three passes each (the machine may be shared)."""
    texts = [b.decode().strip() for b in blocks]  # what panoramisk hands from_line
    raw = [b.decode()[:-4] for b in blocks]
    n = len(blocks) * rounds
    best = [0.0, 0.0]
    for _ in range(3):
        for i, (parse, inputs) in enumerate(((Message.from_line, texts), (parse_message, raw))):
            start = time.perf_counter()
            for _ in range(rounds):
                for text in inputs:
                    parse(text)
            best[i] = max(best[i], n / (time.perf_counter() - start))
    return best[0], best[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=150_000, help="events per run (bounded)")
    parser.add_argument("--runs", type=int, default=2, help="runs per side, the best is kept")
    parser.add_argument("--recordings", type=Path, default=transcripts_dir())
    args = parser.parse_args(argv)

    blocks = recorded_events(args.recordings)
    if not blocks:
        raise SystemExit(f"no ami.log under {args.recordings}")
    body = b"".join(blocks)
    repeat = max(1, args.events // len(blocks))
    total = repeat * len(blocks)
    pin(0)

    results: dict[str, Any] = {}
    for _ in range(args.runs):  # keep each side's best run: the machine may be shared
        for name in ("panoramisk", "guichet", "guichet-all"):
            here, there = mp.Pipe()
            peer = mp.Process(target=serve, args=(there, body, repeat, 1), daemon=True)
            peer.start()
            port = here.recv()
            if name == "panoramisk":
                result: Any = asyncio.run(run_panoramisk(port))
            else:
                result = asyncio.run(run_guichet(port, everything=name == "guichet-all"))
            if name not in results or result[1] < results[name][1]:
                results[name] = result
            peer.join(timeout=30)
            if peer.is_alive():
                peer.terminate()

    p_count, p_time = results["panoramisk"]
    g_count, g_time, g_parsed, g_events = results["guichet"]
    a_count, a_time, _, _ = results["guichet-all"]
    p_rate, g_rate, a_rate = p_count / p_time, g_count / g_time, a_count / a_time
    mem_theirs, mem_ours = in_memory(blocks, max(1, 20_000 // len(blocks)))

    print(
        f"AMI events/s on one core: {len(blocks):,} recorded events x {repeat} = {total:,} per run,"
        f" best of {args.runs}"
    )
    print(f"({len(body) * repeat / 1e6:.0f} MB over loopback TCP from a peer on another core)")
    print()
    print(f"  panoramisk Manager, parse + dispatch '*' (baseline) {p_rate:>10,.0f} ev/s")
    print(
        f"  Guichet AmiClient + CtiState                        {g_rate:>10,.0f} ev/s"
        f"   x{g_rate / p_rate:.2f}   target {TARGET:,}: {'met' if g_rate >= TARGET else 'NOT met'}"
    )
    print(
        f"      parsed {g_parsed:,} of {g_count:,} events ({100 * g_parsed / g_count:.0f} %),"
        f" {g_events:,} domain events"
    )
    print(
        f"  Guichet, plus a '*' subscriber (all parsed)         {a_rate:>10,.0f} ev/s"
        f"   x{a_rate / p_rate:.2f}"
    )
    print()
    print("  parse only, in memory, every message:")
    print(f"  panoramisk Message.from_line (baseline)             {mem_theirs:>10,.0f} msg/s")
    print(
        f"  cti.ami.parse_message                               {mem_ours:>10,.0f} msg/s"
        f"   x{mem_ours / mem_theirs:.2f}"
    )
    if p_count != total or g_count != total:
        print(f"  (events counted: panoramisk {p_count:,}, Guichet {g_count:,}, sent {total:,})")


if __name__ == "__main__":
    main()
