"""Stopping a background writer: let it store what is queued (bounded), then end it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def drain_and_cancel(
    task: asyncio.Task[None], queue: asyncio.Queue[Any], timeout: float
) -> None:
    """Wait up to `timeout` for `queue` to be worked off, then cancel `task` and wait for it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(queue.join(), timeout)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
