"""The flows being served, with hot reload: a changed file is checked and swapped in for new
calls only; a broken file is rejected with the checker's message and the last good version runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ivr.checker import check_file
from ivr.loader import Issue, LoadedFlow

log = logging.getLogger("guichet.flows")

CATALOGUE_SUFFIX = "prompts.yaml"


@dataclass(frozen=True)
class ReloadEvent:
    """What one reload pass did to one flow file, for logs, the console and tests."""

    name: str
    path: Path
    accepted: bool
    content_hash: str | None
    issues: tuple[Issue, ...] = ()


def flow_files(flows_dir: Path) -> list[Path]:
    """Flow files of a folder: every YAML file but prompt catalogues."""
    return sorted(
        p
        for p in flows_dir.glob("*.y*ml")
        if p.suffix in {".yaml", ".yml"} and not p.name.endswith(CATALOGUE_SUFFIX)
    )


class FlowRegistry:
    """Maps a script name (`agi://host/commune`) to the flow currently in service."""

    def __init__(
        self, flows_dir: Path, *, interval: float = 1.0, sounds_dir: Path | None = None
    ) -> None:
        self.flows_dir = flows_dir
        self.interval = interval
        self.sounds_dir = sounds_dir
        self._flows: dict[str, LoadedFlow] = {}
        self._fingerprints: dict[Path, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.events: list[ReloadEvent] = []

    def get(self, name: str) -> LoadedFlow | None:
        return self._flows.get(name)

    def names(self) -> list[str]:
        return sorted(self._flows)

    def flows(self) -> list[LoadedFlow]:
        return [self._flows[n] for n in self.names()]

    async def start(self) -> None:
        await self.reload()
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="flow-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reload()
            except Exception:
                log.exception("flow reload pass failed; serving the flows already loaded")

    async def reload(self) -> list[ReloadEvent]:
        """Check every changed flow file (or catalogue) off the event loop and swap good ones in."""
        return await asyncio.to_thread(self._reload_sync)

    def _reload_sync(self) -> list[ReloadEvent]:
        events: list[ReloadEvent] = []
        for path in flow_files(self.flows_dir):
            fingerprint = self._fingerprint(path)
            if fingerprint is None or self._fingerprints.get(path) == fingerprint:
                continue
            self._fingerprints[path] = fingerprint
            loaded, issues = check_file(path, self.sounds_dir)
            errors = tuple(i for i in issues if i.severity == "error")
            name = loaded.name if loaded else path.stem
            if loaded is None or errors:
                event = ReloadEvent(name, path, False, None, errors)
                running = self._flows.get(name)
                log.error(
                    "flow %s rejected, %s:\n%s",
                    path.name,
                    f"still serving version {running.content_hash[:12]}"
                    if running
                    else "not served",
                    "\n".join(str(i) for i in errors),
                )
            else:
                previous = self._flows.get(name)
                self._flows[name] = loaded  # a new call picks this; running calls keep theirs
                event = ReloadEvent(name, path, True, loaded.content_hash)
                log.info(
                    "flow %s %s (version %s)",
                    name,
                    "reloaded" if previous else "loaded",
                    loaded.content_hash[:12],
                )
            events.append(event)
        self.events.extend(events)
        return events

    def _fingerprint(self, path: Path) -> str | None:
        """Content hash of the flow file and every catalogue next to it."""
        digest = hashlib.sha256()
        try:
            digest.update(path.read_bytes())
            for catalogue in sorted(path.parent.glob(f"*{CATALOGUE_SUFFIX}")):
                digest.update(catalogue.read_bytes())
        except OSError:
            return None
        return digest.hexdigest()
