"""Hot reload: a changed flow is checked and swapped in for new calls only; a broken one is
rejected with the checker's message while the last good version keeps serving."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import OPEN
from flow_helpers import write_flow

from crm_bridge.store import SqlCrm
from ivr.engine import run_call
from ivr.registry import FlowRegistry
from ivr.simulator import ScriptedLeg

GOOD = """
start: q
nodes:
  q: {kind: queue, queue: "first"}
"""
CHANGED = """
start: q
nodes:
  q: {kind: queue, queue: "second"}
"""
BROKEN = """
start: q
nodes:
  q: {kind: queue, queue: "third", next: nowhere}
"""


async def test_broken_file_never_replaces_the_running_flow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_flow(tmp_path, GOOD, name="line")
    registry = FlowRegistry(tmp_path, interval=0)
    await registry.start()
    first = registry.get("line")
    assert first is not None and first.queue_names() == ["first"]

    path.write_text(BROKEN)
    with caplog.at_level(logging.ERROR, logger="guichet.flows"):
        (event,) = await registry.reload()
    assert not event.accepted
    assert f"{path}:4: nodes.q.next: Extra inputs are not permitted" in [
        str(i) for i in event.issues
    ]
    assert registry.get("line") is first
    assert (
        "rejected" in caplog.text
        and f"still serving version {first.content_hash[:12]}" in caplog.text
    )

    path.write_text(CHANGED)
    (event,) = await registry.reload()
    current = registry.get("line")
    assert event.accepted and current is not None and current.queue_names() == ["second"]
    assert current.content_hash != first.content_hash == first.content_hash


async def test_unchanged_files_are_not_reloaded(tmp_path: Path) -> None:
    write_flow(tmp_path, GOOD, name="line")
    registry = FlowRegistry(tmp_path, interval=0)
    await registry.start()
    assert await registry.reload() == []


async def test_catalogue_change_is_rechecked(tmp_path: Path) -> None:
    write_flow(tmp_path, "start: m\nnodes:\n  m: {kind: hangup, prompt: bye}\n", name="line")
    registry = FlowRegistry(tmp_path, interval=0)
    await registry.start()
    running = registry.get("line")
    (tmp_path / "prompts.yaml").write_text("prompts:\n  bye: {fr: Au revoir}\n")
    (event,) = await registry.reload()
    assert not event.accepted and "prompt 'bye' has no text in nl, en" in str(event.issues[0])
    assert registry.get("line") is running


async def test_watcher_swaps_for_new_calls_only(tmp_path: Path, crm: SqlCrm) -> None:
    path = write_flow(
        tmp_path,
        """
start: ask
nodes:
  ask: {kind: menu, prompt: ask, choices: {"1": q}, fallback: q}
  q: {kind: queue, queue: "first"}
""",
        name="line",
    )
    registry = FlowRegistry(tmp_path, interval=0.05)
    await registry.start()
    try:
        gate = asyncio.Event()

        class SlowCaller(ScriptedLeg):
            async def collect(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                await gate.wait()
                return await super().collect(*args, **kwargs)

        loaded = registry.get("line")
        assert loaded is not None
        running = asyncio.create_task(
            run_call(
                loaded, SlowCaller(call_id="old", caller="", script=["1"]), crm, clock=lambda: OPEN
            )
        )
        await asyncio.sleep(0)
        path.write_text(path.read_text().replace('"first"', '"second"'))
        for _ in range(100):
            current = registry.get("line")
            if current is not None and current is not loaded:
                break
            await asyncio.sleep(0.05)
        new_flow = registry.get("line")
        assert new_flow is not None and new_flow is not loaded
        gate.set()
        old = await running
        new = await run_call(
            new_flow, ScriptedLeg(call_id="new", caller="", script=["1"]), crm, clock=lambda: OPEN
        )
        assert (
            old.variables["GUICHET_QUEUE"] == "first"
            and old.journey.flow_hash == loaded.content_hash
        )
        assert (
            new.variables["GUICHET_QUEUE"] == "second"
            and new.journey.flow_hash == new_flow.content_hash
        )
    finally:
        await registry.stop()
