"""Prometheus metrics: the listener's /metrics counts hooks, events, jobs and API calls; workers serve theirs.

Counters are process-wide, so each test compares a scrape after its actions with one before them.
"""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.conftest import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, hook_body, make_settings, sign
from tests.stack import LINES, running_stack
from worker.embedded_redis import free_port
from worker.runtime import start
from worker.web.app import create_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> tuple[str, Samples]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_the_listener_counts_hooks_events_jobs_and_api_calls(redis: Redis, redis_url: str) -> None:
    async with running_stack(redis_url) as stack:
        url = stack.running[0].listener_url
        assert url is not None
        _, before = await scrape(url)

        stack.hostfact.add_debtor(CompanyName="Company X")
        stack.target.faults.inject("http_503", controller="invoice", action="add", times=1)
        await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
        (event,) = await stack.settled()
        assert event.status == "done", event.reason
        # Refusals, each counted under its reason; a source not configured under one fixed label.
        async with aiohttp.ClientSession() as session:
            body = hook_body("invoice_is_paid", {"id": 1, "Debtor": 1, "InvoiceCode": "F0001"})
            headers = sign(body, secret="whsec_" + "A" * 40)
            async with session.post(f"{url}/hooks/hostfact", data=body, headers=headers) as r:
                assert r.status == 401
            async with session.post(f"{url}/hooks/no-such-source", data=body, headers=sign(body)) as r:
                assert r.status == 404
            good = sign(body)
            for _ in range(2):  # the second is a re-delivery of the same webhook-id
                async with session.post(f"{url}/hooks/hostfact", data=body, headers=good) as r:
                    assert r.status in (200, 202)
        await stack.settled()

        text, after = await scrape(url)

    assert grew(before, after, "factsync_hooks_received_total", source="hostfact") == 4
    assert grew(before, after, "factsync_hooks_accepted_total", source="hostfact", result="queued") == 2
    assert grew(before, after, "factsync_hooks_accepted_total", source="hostfact", result="duplicate") == 1
    assert (
        grew(before, after, "factsync_hooks_rejected_total", source="hostfact", reason="bad_signature") == 1
    )
    assert (
        grew(before, after, "factsync_hooks_rejected_total", source="(unknown)", reason="unknown_source") == 1
    )
    assert grew(before, after, "factsync_events_settled_total", status="done") == 2
    assert grew(before, after, "factsync_jobs_total", function="fan_out", result="fanned_out") == 2
    assert grew(before, after, "factsync_jobs_total", function="sync_document", result="retry") == 1
    assert grew(before, after, "factsync_jobs_total", function="sync_document", result="synced") >= 2
    assert grew(before, after, "factsync_sync_retries_total", route="sales", kind="transient") == 1
    assert grew(before, after, "factsync_syncs_total", route="sales", status="done") >= 2
    assert grew(before, after, "factsync_sync_duration_seconds_count", route="sales") >= 2
    show = {"administration": "hostfact", "controller": "invoice", "action": "show"}
    assert grew(before, after, "factsync_api_calls_total", **show, outcome="success") >= 2
    assert grew(before, after, "factsync_api_call_duration_seconds_count", **show) >= 2
    add = {"administration": "target", "controller": "invoice", "action": "add"}
    assert grew(before, after, "factsync_api_calls_total", **add, outcome="transient") == 1
    assert grew(before, after, "factsync_api_calls_total", **add, outcome="success") == 1
    # Read from Redis at scrape time.
    assert value(after, "factsync_redis_up") == 1
    assert value(after, "factsync_queue_depth") == 0
    assert value(after, "factsync_events", status="done") == 2
    assert value(after, "factsync_events", status="failed") == 0
    assert value(after, "factsync_workers") == 1
    assert value(after, "factsync_administration_paused_seconds", administration="target") == 0
    # No secret, event id or invoice code in any label or value.
    for secret in (SOURCE_KEY, TARGET_KEY, HOOK_SECRET, HOOK_SECRET.removeprefix("whsec_")):
        assert secret not in text
    assert "evt_" not in text
    assert event.payload["InvoiceCode"] not in text and "F0001" not in text


async def test_a_ban_and_the_rate_limit_are_counted(redis: Redis, redis_url: str) -> None:
    async with running_stack(redis_url, ban_pause=60) as stack:
        url = stack.running[0].listener_url
        assert url is not None
        _, before = await scrape(url)
        stack.hostfact.add_debtor(CompanyName="Company X")
        stack.target.faults.inject("ban_403", controller="invoice", action="add", times=1)
        await stack.call("invoice", "add", DebtorCode="DB0001", InvoiceLines=LINES, Status=2)
        (event,) = await stack.settled()
        _, after = await scrape(url)
    assert event.status == "failed"
    assert grew(before, after, "factsync_api_bans_total", administration="target") == 1
    add = {"administration": "target", "controller": "invoice", "action": "add"}
    assert grew(before, after, "factsync_api_calls_total", **add, outcome="banned") == 1
    assert grew(before, after, "factsync_events_settled_total", status="failed") == 1
    assert 50 < value(after, "factsync_administration_paused_seconds", administration="target") <= 60


async def test_rate_limit_waits_and_refusals_are_counted(redis: Redis) -> None:
    from tasks.errors import RateLimited
    from worker import metrics
    from worker.ratelimit import SharedRateLimit

    def count(counter: Counter, *labels: str) -> float:
        value: float = counter.labels(*labels)._value.get()
        return value

    # 600 a minute is a call every 0.1 s and a burst of 1 allows no more: a second call at once waits,
    # and one that may not wait that long is refused.
    patient = SharedRateLimit(redis, {"slow": 600}, burst=1, max_wait=1, on_event=metrics.observe_limit)
    hasty = SharedRateLimit(redis, {"slow": 600}, burst=1, max_wait=0.01, on_event=metrics.observe_limit)
    waits = count(metrics.RATE_LIMIT_WAITS, "slow")
    budget = count(metrics.RATE_LIMIT_REFUSALS, "slow", "budget")
    paused = count(metrics.RATE_LIMIT_REFUSALS, "slow", "paused")
    bans = count(metrics.BANS, "slow")
    await patient.acquire("slow")
    await patient.acquire("slow")
    assert count(metrics.RATE_LIMIT_WAITS, "slow") >= waits + 1
    assert count(metrics.RATE_LIMIT_WAIT_SECONDS, "slow") > 0
    with pytest.raises(RateLimited):
        await hasty.acquire("slow")
    assert count(metrics.RATE_LIMIT_REFUSALS, "slow", "budget") == budget + 1
    await patient.pause("slow", 5)
    with pytest.raises(RateLimited):
        await patient.acquire("slow")
    assert count(metrics.RATE_LIMIT_REFUSALS, "slow", "paused") == paused + 1
    assert count(metrics.BANS, "slow") == bans + 1


async def test_metrics_off_means_no_route(redis: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, metrics=False, worker_metrics_port=free_port())
    running = await start(settings, redis_url, app=create_app, work=False)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{running.listener_url}/metrics") as r:
            assert r.status == 404
    finally:
        await running.stop()
    worker = await start(settings, redis_url)
    try:
        assert worker.metrics is None, "metrics = false: no worker metrics port either"
    finally:
        await worker.stop()


async def test_a_worker_serves_its_own_metrics_on_its_port(redis: Redis, redis_url: str) -> None:
    port = free_port()
    settings = make_settings(redis_url, worker_metrics_port=port)
    worker = await start(settings, redis_url)
    try:
        text, _ = await scrape(f"http://127.0.0.1:{port}")
    finally:
        await worker.stop()
    assert "factsync_jobs_total" in text or "# HELP factsync_jobs" in text
    assert "factsync_api_call_duration_seconds" in text
    # Fleet-wide numbers come from the listener only, so that they are not summed once per worker.
    assert "factsync_queue_depth" not in text
