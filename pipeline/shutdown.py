"""Graceful stop for long-running commands: SIGINT / SIGTERM set an event the command's
loop watches, so it finishes the batch in hand, commits or checkpoints, and exits."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """The event (a new one unless given) that SIGINT and SIGTERM set. Call inside the
    running loop; outside the main thread (tests) signals are left alone."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    return stop


def forget_signals() -> None:
    """Give SIGINT / SIGTERM back to their default handling (e.g. before a prompt)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
