"""Typing glue: redis-py annotates its asyncio commands as `Awaitable[T] | T` (one stub for both clients)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def done(result: Awaitable[T] | T) -> T:
    """Await a redis.asyncio command's result, whatever its annotation says."""
    if inspect.isawaitable(result):
        return await result
    return result
