"""Ending asyncio tasks for certain on Python 3.11, where a cancellation can be lost on its way."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# How long a cancelled task is given to end before it is cancelled once more.
RECANCEL_AFTER = 1.0


async def cancelled(task: asyncio.Task[Any], *, every: float = RECANCEL_AFTER) -> None:
    """Cancel ``task`` and return once it has ended, cancelling it again while it runs on.

    Python 3.11 with redis-py 5 loses cancellations: a task cancelled while it talks to Redis through a
    client with socket timeouts (as worker.redisio makes them) runs on in about one try in five, at
    some moments of a command (measured: 88 of 400 cancellations in the first steps of arq's start-up
    pipeline; none without socket timeouts). redis-py reads under ``asyncio.timeout``, and on 3.11 that
    can hand the task a TimeoutError in place of the cancellation, which redis-py then handles. Cancelled
    once, a loop (a heartbeat, arq's poll loop, a lease renewal) never ended, and a stopping worker
    waited for it forever. What the task raised is not raised here; a cancellation of the caller is.
    """
    tries = 0
    while not task.done():
        if tries:
            log.warning("task.cancelled_again", task=task.get_name(), tries=tries)
        task.cancel()
        tries += 1
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved: asyncio logs an exception nobody looked at


async def ended(task: asyncio.Task[Any], *, within: float) -> None:
    """Give ``task`` ``within`` seconds to end by itself (after it was asked to stop), then cancel it."""
    await asyncio.wait({task}, timeout=within)
    await cancelled(task)
