"""A whole factsync on real sockets for a test: simulated HostFact source, a target, listener and workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from tasks.client import ApiClient
from tasks.simulator import SimAdministration, run_simulator
from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, make_settings
from worker.config import Settings
from worker.embedded_redis import free_port
from worker.runtime import Running, start
from worker.store import FINAL, Event, EventStore
from worker.web.app import create_app

TEST_BUDGET = 600_000
# HostFact's seed invoice (shared/seeds/): 150 + 15 excl, 199.65 incl.
LINES = [
    {"Description": "Setupfee", "PriceExcl": "150", "TaxPercentage": "21"},
    {"Description": "Domain example.com", "PriceExcl": "15", "TaxPercentage": "21"},
]


@dataclass
class Stack:
    settings: Settings
    store: EventStore
    hostfact: SimAdministration
    target: SimAdministration
    source: ApiClient
    running: list[Running]

    async def settled(self, within: float = 20) -> list[Event]:
        """Every event, once each is done, ignored or failed."""
        deadline = time.monotonic() + within
        while True:
            events = [e for e in [await self.store.get(i) for i in await self.store.ids(limit=10_000)] if e]
            if all(e.status in FINAL for e in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"events did not settle: {[(e.action, e.status) for e in events]}")
            await asyncio.sleep(0.02)

    async def call(self, controller: str, action: str, **params: Any) -> dict[str, Any]:
        """Act on the HostFact through its API, as a user would: its hooks fire at the listener."""
        return await self.source.call(controller, action, params)

    async def act(self, controller: str, action: str, **params: Any) -> list[Event]:
        """Act on the HostFact and wait until factsync has handled what that fired."""
        await self.call(controller, action, **params)
        return await self.settled()


def hostfact_firing_at(port: int) -> SimAdministration:
    """A simulated HostFact source "hostfact" whose hooks go, signed, to a listener on ``port``."""
    return SimAdministration(
        "hostfact",
        "hostfact",
        SOURCE_KEY,
        hooks_url=f"http://127.0.0.1:{port}/hooks/hostfact",
        hook_secret=HOOK_SECRET,
    )


def pipeline_settings(
    redis_url: str, hostfact_url: str, wefact_url: str, port: int, **overrides: Any
) -> Settings:
    settings = make_settings(redis_url)
    values = settings.model_dump()
    values["sources"]["hostfact"]["api_url"] = hostfact_url
    values["sources"]["hostfact"]["api_key"] = SOURCE_KEY
    values["sources"]["hostfact"]["hook_secrets"] = [HOOK_SECRET]
    values["targets"]["wefact"]["api_url"] = wefact_url
    values["targets"]["wefact"]["api_key"] = TARGET_KEY
    values["listen_port"] = port
    values["retry"] = {"max_tries": 4, "base_delay": 0.05, "max_delay": 0.2, "max_span": 60}
    values["sources"]["hostfact"]["rate_limit_per_minute"] = TEST_BUDGET
    values["targets"]["wefact"]["rate_limit_per_minute"] = TEST_BUDGET
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_stack(
    redis_url: str,
    *,
    target_dialect: Literal["hostfact", "wefact"] = "wefact",
    ledger: Literal["sales", "purchase"] = "sales",
    creditors: dict[str, str] | None = None,
    workers: int = 1,
    route_options: dict[str, Any] | None = None,
    budget: int = TEST_BUDGET,
    target_budget: int | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    port = free_port()
    hostfact = hostfact_firing_at(port)
    target = SimAdministration("target", target_dialect, TARGET_KEY)
    async with run_simulator([hostfact, target]) as sim:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "listen_port": port,
            "poll_delay": 0.01,
            "retry": {"max_tries": 4, "base_delay": 0.05, "max_delay": 0.2, "max_span": 60},
            # A test budget: the production one (150 calls a minute) makes every call after a burst wait
            # 0.4 s. The shared limit itself is tested in test_ratelimit and test_metrics.
            "sources": {
                "hostfact": {
                    "api_url": sim.api_url("hostfact"),
                    "api_key": SOURCE_KEY,
                    "hook_secrets": [HOOK_SECRET],
                    "rate_limit_per_minute": budget,
                }
            },
            "targets": {
                "target": {
                    "api_url": sim.api_url("target"),
                    "api_key": TARGET_KEY,
                    "dialect": target_dialect,
                    "rate_limit_per_minute": target_budget or budget,
                }
            },
            "routes": {
                ledger: {
                    "source": "hostfact",
                    "target": "target",
                    "ledger": ledger,
                    "creditors": creditors or {},
                    **(route_options or {}),
                }
            },
        }
        values.update(overrides)
        settings = Settings(**values)
        running = [await start(settings, redis_url, app=create_app, work=workers > 0)]
        for _ in range(max(workers - 1, 0)):
            running.append(await start(settings, redis_url))
        from redis.asyncio import Redis

        redis = Redis.from_url(redis_url)
        store = EventStore.for_settings(redis, settings)
        try:
            async with ApiClient(settings.source("hostfact")) as source:
                yield Stack(settings, store, hostfact, target, source, running)
        finally:
            for each in running:
                await each.stop()
            await redis.aclose()
