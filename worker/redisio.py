"""Glue for redis-py: its asyncio commands annotated `Awaitable[T] | T`, and replies as bytes or str."""

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


def text(value: object) -> str:
    """A Redis reply as text, whether the client decodes replies or not; None is ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
