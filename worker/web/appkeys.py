"""The keys of the listener's application state, shared by its handlers (hooks, metrics, dashboard)."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from worker.config import Settings
from worker.signing import HookVerifier
from worker.store import EventStore

STORE = web.AppKey("store", EventStore)
REDIS = web.AppKey("redis", Redis)
VERIFIERS = web.AppKey("verifiers", dict[str, HookVerifier])
SETTINGS = web.AppKey("settings", Settings)
