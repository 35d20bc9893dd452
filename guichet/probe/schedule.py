"""Probe calls on a schedule from the server: every ``interval`` seconds, each script once.

Started and stopped by the server's runtime (`ProbeSchedule.start` / `stop`). A script that
fails to load, or a call that fails, is logged and stored as an ``error`` run; the schedule
keeps going. Scripts are re-read each round, so an edited script is taken up without restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from guichet.probe.caller import ERROR, ProbeReport, run_probe
from guichet.probe.config import ProbeConfigError, ProbeSettings, account_for
from guichet.probe.script import ScriptError, load_script
from guichet.probe.store import ProbeStore

log = logging.getLogger(__name__)


class ProbeSchedule:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ProbeSettings | None = None,
        *,
        scripts: Sequence[Path] | None = None,
        interval: float | None = None,
        first_delay: float = 0.0,
    ) -> None:
        self.settings = settings or ProbeSettings()
        self.scripts = list(scripts if scripts is not None else self.settings.scripts)
        self.interval = interval if interval is not None else self.settings.interval
        self.first_delay = first_delay
        self._store = ProbeStore(engine)
        self._engine = engine
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin the loop (no-op without scripts or when already running)."""
        if not self.scripts or self.running:
            return
        self._task = asyncio.create_task(self._loop(), name="guichet probe schedule")

    async def stop(self) -> None:
        """Cancel the loop; a call in progress is hung up by its own clean-up."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> list[ProbeReport]:
        """One round: each script in turn, each result stored."""
        reports = []
        for path in self.scripts:
            report = await self._run(path)
            try:
                await self._store.save(report)
            except Exception:
                log.exception("probe %s: result not stored", report.script)
            reports.append(report)
        self.rounds += 1
        return reports

    async def _run(self, path: Path) -> ProbeReport:
        try:
            script = load_script(path)
            account = account_for(script, self.settings)
        except (ScriptError, ProbeConfigError) as exc:
            log.error("probe script %s: %s", path, exc)
            report = ProbeReport(path.stem, "", "", datetime.now(UTC), outcome=ERROR)
            report.detail.append(str(exc))
            return report
        return await run_probe(
            script, account, engine=self._engine, recordings=self.settings.recordings_dir
        )

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                await self.run_once()
            except Exception:  # the schedule outlives any one bad round
                log.exception("probe round failed")
            await asyncio.sleep(self.interval)


__all__ = ["ProbeSchedule"]
