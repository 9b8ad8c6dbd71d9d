"""Shared fixtures: a real Redis server for the session (embedded, or $REDIS_URL) and factsync settings."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis
from standardwebhooks import Webhook

from worker.config import Settings
from worker.embedded_redis import EmbeddedRedis
from worker.logs import configure_logging
from worker.store import EventStore
from worker.web.app import create_app

# The route fixtures (`sales`, `purchase`) need tests.stack, which needs this module's constants.
pytest_plugins = ["tests.routes"]

HOOK_SECRET = "whsec_" + base64.b64encode(b"factsync-test-hook-secret-0001").decode()
OLD_HOOK_SECRET = "whsec_" + base64.b64encode(b"factsync-test-hook-secret-old").decode()
SOURCE_KEY = "source-api-key-5f1e2d3c"
TARGET_KEY = "target-api-key-9a8b7c6d"


@pytest.fixture(scope="session", autouse=True)
def structured_logs() -> None:
    """Logs as the daemons configure them, from the first line on: structlog caches a logger's
    configuration on first use, so a test that reads log records (caplog) must not depend on which test
    happened to log first."""
    configure_logging(json=True, level="INFO")


@pytest.fixture(autouse=True)
async def _tasks_shown_when_a_test_hangs(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Shortly before pytest-timeout ends a test, print where every asyncio task waits: the thread dump
    pytest-timeout prints shows only the event loop's select()."""
    timeout = float(request.config.getini("timeout") or 0)
    if not timeout:
        yield
        return

    def show_tasks() -> None:
        out = sys.__stderr__
        if out is None:
            return
        out.write(f"\n{request.node.nodeid} still runs after {timeout - 10:.0f} s; its asyncio tasks:\n")
        for task in asyncio.all_tasks():
            task.print_stack(file=out)

    handle = asyncio.get_running_loop().call_later(max(1.0, timeout - 10), show_tasks)
    yield
    handle.cancel()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server only this test session uses. $REDIS_URL must point at a disposable database:
    the tests flush it."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    """Settings for a HostFact source 'hostfact' and a WeFact target 'wefact' joined by a 'sales' route."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "listen_port": 0,
        "sources": {
            "hostfact": {
                "api_url": "http://127.0.0.1:9/hostfact/api/v2/",
                "api_key": SOURCE_KEY,
                "hook_secrets": [HOOK_SECRET, OLD_HOOK_SECRET],
            }
        },
        "targets": {
            "wefact": {
                "api_url": "http://127.0.0.1:9/wefact/api/v2/",
                "api_key": TARGET_KEY,
                "dialect": "wefact",
            }
        },
        "routes": {"sales": {"source": "hostfact", "target": "wefact", "ledger": "sales"}},
        "poll_delay": 0.01,
    }
    values.update(overrides)
    return Settings(**values)


def sign(
    body: bytes, *, secret: str = HOOK_SECRET, webhook_id: str | None = None, at: float | None = None
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{secrets.token_hex(16)}"
    timestamp = int(time.time() if at is None else at)
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def hook_body(action: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"action": action, "data": data}).encode()


@dataclass
class Listener:
    url: str
    settings: Settings
    store: EventStore
    session: aiohttp.ClientSession

    async def post(
        self, action: str, data: dict[str, Any], *, source: str = "hostfact", **sign_args: Any
    ) -> tuple[int, dict[str, Any]]:
        body = hook_body(action, data)
        async with self.session.post(
            f"{self.url}/hooks/{source}", data=body, headers=sign(body, **sign_args)
        ) as r:
            return r.status, await r.json()


@pytest.fixture
async def listener(redis: Redis, redis_url: str) -> AsyncIterator[Listener]:
    settings = make_settings(redis_url)
    runner = web.AppRunner(create_app(settings, redis_url))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    store = EventStore.for_settings(redis, settings)
    async with aiohttp.ClientSession() as session:
        yield Listener(f"http://{host}:{port}", settings, store, session)
    await runner.cleanup()


SEED_HOOKS: dict[str, dict[str, Any]] = {
    "invoice_is_created": {"id": 2, "Debtor": 1, "InvoiceCode": "F0001"},
    "invoice_is_edited": {"id": "2", "Debtor": "1", "InvoiceCode": "F0001"},
    "invoice_is_sent": {
        "id": 2,
        "Debtor": 1,
        "InvoiceCode": "F0001",
        "viaMail": True,
        "viaPost": False,
        "Sent": 1,
        "Reminders": 0,
        "Summations": 0,
    },
    "invoice_reminder_is_sent": {
        "id": 2,
        "Debtor": 1,
        "InvoiceCode": "F0001",
        "viaMail": True,
        "viaPost": False,
        "Sent": 1,
        "Reminders": 1,
        "Summations": 0,
    },
    "invoice_summation_is_sent": {
        "id": "2",
        "Debtor": 1,
        "InvoiceCode": "F0001",
        "viaMail": "1",
        "viaPost": "0",
        "Sent": "1",
        "Reminders": "1",
        "Summations": "1",
    },
    "invoice_is_partly_paid": {
        "id": 2,
        "Debtor": 1,
        "InvoiceCode": "F0001",
        "AmountPaidNow": 5.25,
        "AmountPaidTotal": "5.25",
        "AmountOpen": 194.4,
    },
    "invoice_is_paid": {"id": 2, "Debtor": 1, "InvoiceCode": "F0001"},
    "invoice_is_unpaid": {"id": 2, "Debtor": 1, "InvoiceCode": "F0001"},
    "invoice_is_credited": {
        "id": 2,
        "Debtor": 1,
        "InvoiceCode": "F0001",
        "CreditInvoiceID": 3,
        "CreditInvoiceCode": "F0002",
    },
}
