"""Shared FastAGI test fixtures: the flow registry (sample `commune` flow plus a `replay`
flow matching the recordings), a FastAGI server on a free loopback port, and a harness
running an `AgiLeg` against a peer. The `crm` fixture (SqlCrm on a temporary SQLite file)
comes from `tests/conftest.py`.

Registered as a pytest plugin from `tests/conftest.py` (`pytest_plugins = ["agi_fixtures"]`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from agi_peer import AsteriskPeer, Transcript

from crm_bridge.store import SqlCrm
from guichet.replay.agi_caller import transcripts_dir
from ivr.agi_leg import AgiLeg
from ivr.agi_protocol import AgiChannel, read_environment
from ivr.fastagi import FastAgiServer
from ivr.registry import FlowRegistry

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SOUNDS_PREFIX = "guichet"
# The Asterisk 22 recordings: `shared/asterisk` beside the clone (as in CI), or wherever
# GUICHET_TRANSCRIPTS points.
TRANSCRIPTS = transcripts_dir()
# Monday 23 November 2026, 10:00 in Brussels: the sample flow's desks are open.
OPEN_HOURS = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Brussels"))


def open_clock() -> datetime:
    return OPEN_HOURS


def transcript(name: str) -> Transcript:
    """A recorded session by scenario folder. Missing recordings fail the test: the suite's
    claims about Asterisk rest on them (CI has them in ../shared/asterisk)."""
    path = TRANSCRIPTS / name / "agi.log"
    if not path.is_file():
        pytest.fail(f"Asterisk recordings not found at {TRANSCRIPTS} (set GUICHET_TRANSCRIPTS)")
    return Transcript.load(path)


# A flow issuing the command sequence of the throwaway server the recordings were made with
# (hello, two one-key GET DATA, the national number with one retry, thanks / goodbye), so a
# recording can be replayed command for command.
REPLAY_FLOW = """\
name: replay
languages: [en]
bilingual: [en]
prompts: replay-prompts.yaml
start: hello
nodes:
  hello: {kind: message, prompt: hello, interruptible: false, next: language}
  language:
    {kind: input, prompt: vm-press, var: lang_key, max_length: 1, timeout: 5, retries: 1,
     next: request, fallback: request}
  request:
    {kind: input, prompt: vm-options, var: request_key, max_length: 1, timeout: 5, retries: 1,
     next: national_number, fallback: national_number}
  national_number:
    kind: input
    prompt: vm-enter-num-to-call
    var: national_number
    min_length: 11
    max_length: 11
    timeout: 5
    validator: national_number
    invalid_prompt: please-try-again
    retries: 2
    next: thanks
    fallback: goodbye
  thanks: {kind: message, prompt: auth-thankyou, interruptible: false, next: queue}
  queue: {kind: queue, queue: population-nl}
  goodbye: {kind: hangup, prompt: vm-goodbye}
"""
REPLAY_PROMPTS = [
    "hello",
    "vm-press",
    "vm-options",
    "vm-enter-num-to-call",
    "please-try-again",
    "auth-thankyou",
    "vm-goodbye",
]


def make_flows_dir(target: Path) -> Path:
    """A copy of `flows/` (the sample `commune` flow) plus the `replay` flow."""
    target.mkdir(parents=True, exist_ok=True)
    for source in (ROOT / "flows").glob("*.y*ml"):
        (target / source.name).write_bytes(source.read_bytes())
    lines = ["prompts:"]
    for key in REPLAY_PROMPTS:
        lines += [f"  {key}:", f"    fr: {key}", f"    nl: {key}", f"    en: {key}"]
    (target / "replay-prompts.yaml").write_text("\n".join(lines) + "\n")
    (target / "replay.yaml").write_text(REPLAY_FLOW)
    return target


@pytest.fixture
async def flow_registry(tmp_path: Path) -> AsyncIterator[FlowRegistry]:
    registry = FlowRegistry(make_flows_dir(tmp_path / "flows"), interval=0)
    await registry.start()
    assert {"commune", "replay"} <= set(registry.names()), registry.events
    yield registry
    await registry.stop()


@pytest.fixture
async def agi_server(flow_registry: FlowRegistry, crm: SqlCrm) -> AsyncIterator[FastAgiServer]:
    """A FastAGI server on a free loopback port serving `commune` and `replay`, desks open."""
    server = FastAgiServer(
        flow_registry, crm, host=HOST, port=0, clock=open_clock, sounds_prefix=SOUNDS_PREFIX
    )
    await server.start()
    yield server
    await server.stop(grace=2.0)


# --- an AgiLeg against a peer, without the engine -------------------------------------------

LegBody = Callable[[AgiLeg], Awaitable[Any]]


@dataclass
class LegRun:
    peer: AsteriskPeer
    result: Any = None
    error: BaseException | None = None


async def run_leg(peer: AsteriskPeer, body: LegBody, *, deadline: float = 10.0) -> LegRun:
    """Serve one connection: read the environment, run `body(leg)`, close; `peer` is the PBX."""
    run = LegRun(peer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = AgiChannel(reader, writer)
        try:
            env = await read_environment(reader)
            run.result = await body(AgiLeg(channel, env, sounds_prefix=SOUNDS_PREFIX))
        except Exception as exc:  # the test inspects it
            run.error = exc
        finally:
            await channel.close()

    server = await asyncio.start_server(handle, HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        await peer.run(HOST, port, deadline=deadline)
    finally:
        server.close()
        await server.wait_closed()
    return run
