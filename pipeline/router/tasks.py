"""Stopping a background task: cancel it and wait until it has finished, so nothing it
holds (a connection, a half-sent batch) outlives the close that stopped it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait for it: its cancellation is the expected end, not an
    error; an exception it had already ended with is raised (None: nothing to stop)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
