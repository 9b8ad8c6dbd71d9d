"""hooks.php under php-cli against the real listener: every seed hook, and the spool while it is down."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.conftest import HOOK_SECRET, SEED_HOOKS, Listener, hook_body, make_settings, sign
from tests.test_forwarder import Forwarder, closed_port_url
from worker import keys
from worker.embedded_redis import EmbeddedRedis
from worker.store import EventStore
from worker.web.app import create_app


async def test_every_seed_hook_fired_by_hooks_php_is_accepted_and_queued(
    listener: Listener, redis: Redis, tmp_path: Path
) -> None:
    forwarder = Forwarder(url=f"{listener.url}/hooks/hostfact", secret=HOOK_SECRET, spool=tmp_path / "spool")

    await forwarder.fire(*SEED_HOOKS.items())

    assert forwarder.spooled() == [], "the listener took every hook: nothing may wait in the spool"
    events = [await listener.store.get(event_id) for event_id in await listener.store.ids(newest_first=False)]
    assert [e.action for e in events if e] == list(SEED_HOOKS)
    for event in events:
        assert event is not None and event.status == "queued"
        assert event.payload["id"] == 2 and event.payload["InvoiceCode"] == "F0001"
    partly = next(e for e in events if e and e.action == "invoice_is_partly_paid")
    assert partly.payload["AmountPaidNow"] == "5.25" and partly.payload["AmountOpen"] == "194.40"
    assert await redis.zcard(keys.QUEUE) == len(SEED_HOOKS)


async def test_hooks_spooled_while_the_listener_is_down_are_resent_once_in_order(
    listener: Listener, redis: Redis, tmp_path: Path
) -> None:
    down = Forwarder(url=closed_port_url(), secret=HOOK_SECRET, spool=tmp_path / "spool")
    order = ["invoice_is_created", "invoice_is_sent", "invoice_is_partly_paid", "invoice_is_paid"]
    for action in order:
        await down.fire((action, SEED_HOOKS[action]))
    spooled = down.spooled()
    assert [record["action"] for record in spooled] == order
    assert await listener.store.count() == 0

    # A copy of the spool, to deliver everything a second time afterwards.
    shutil.copytree(down.spool, tmp_path / "again")
    up = Forwarder(url=f"{listener.url}/hooks/hostfact", secret=HOOK_SECRET, spool=tmp_path / "spool")
    run = await up.resend()
    assert run.returncode == 0, run
    assert up.spooled() == []

    events = [await listener.store.get(event_id) for event_id in await listener.store.ids(newest_first=False)]
    assert [e.action for e in events if e] == order
    assert [e.webhook_id for e in events if e] == [record["id"] for record in spooled]

    # Delivered again (a resend that ran twice, say): the listener knows every webhook-id; nothing doubles.
    twice = Forwarder(url=f"{listener.url}/hooks/hostfact", secret=HOOK_SECRET, spool=tmp_path / "again")
    assert (await twice.resend()).returncode == 0
    assert twice.spooled() == []
    assert await listener.store.count() == len(order)
    assert await redis.zcard(keys.QUEUE) == len(order)


async def test_a_full_redis_makes_the_listener_answer_503_and_the_spool_carries_the_hooks(
    redis_url: str, tmp_path: Path
) -> None:
    """deploy/redis.conf's maxmemory with noeviction: a full Redis refuses writes, the listener answers 503
    (not 500, and records nothing), hooks.php spools, and once there is room resend.php delivers each hook
    once. Nothing is lost."""
    with EmbeddedRedis(tmp_path / "redis", maxmemory="4mb") as server:
        settings = make_settings(server.url)
        runner = web.AppRunner(create_app(settings, server.url))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        redis = Redis.from_url(server.url)
        store = EventStore.for_settings(redis, settings)
        try:
            # Full: more in Redis than its maxmemory (set lower now, as a flood would fill it up to it).
            await redis.set("filler", b"x" * 1024 * 1024)
            await redis.config_set("maxmemory", "512kb")
            with pytest.raises(ResponseError, match="maxmemory"):
                await redis.set("one more", "x")
            url = f"http://{host}:{port}/hooks/hostfact"
            body = hook_body("invoice_is_paid", SEED_HOOKS["invoice_is_paid"])
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=body, headers=sign(body)) as r,
            ):
                assert r.status == 503 and r.headers["Retry-After"] == "30"
                assert (await r.json())["error"] == "unavailable"

            forwarder = Forwarder(url=url, secret=HOOK_SECRET, spool=tmp_path / "spool")
            order = ["invoice_is_created", "invoice_is_sent", "invoice_is_paid"]
            for action in order:
                await forwarder.fire((action, SEED_HOOKS[action]))
            spooled = forwarder.spooled()
            assert [record["action"] for record in spooled] == order, "every hook waits in the spool"
            assert await store.count() == 0

            await redis.config_set("maxmemory", "4mb")  # room again
            run = await forwarder.resend()
            assert run.returncode == 0, run
            assert forwarder.spooled() == []
            events = [await store.get(event_id) for event_id in await store.ids(newest_first=False)]
            assert [e.action for e in events if e] == order
            assert [e.webhook_id for e in events if e] == [record["id"] for record in spooled]
        finally:
            await redis.aclose()
            await runner.cleanup()
